//! A user's own digit picture turned into an MNIST image, the way MNIST's
//! digits were made: grey scale, light digit on a dark background, cropped
//! to the digit, scaled to fit 20×20 keeping its aspect ratio, and placed
//! in a 28×28 field with its centre of mass at the centre.
//!
//! Photos and scans are usually dark ink on light paper. The paper is the
//! picture's most common shade (its median level: ink covers a minority of
//! any digit picture), never the border alone, which may be a photo's dark
//! edge or a box drawn round the digit. Light paper is inverted, then the
//! levels are stretched so the paper is black and the darkest ink white,
//! and ink that frames the picture (a component touching its edge and
//! spanning most of it) is cleared before the digit is cropped.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{GrayImage, Luma};

/// Side of an MNIST image.
pub const SIDE: usize = 28;
/// Side of the box the digit is scaled into.
const DIGIT_BOX: u32 = 20;
/// Grey level (after inversion and stretching) counted as ink when cropping.
const INK: u8 = 64;

/// Why a picture could not be turned into a digit.
#[derive(Debug, thiserror::Error)]
pub enum DigitError {
    /// The file could not be read or decoded.
    #[error("{}: cannot read the picture: {cause}", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's complaint.
        cause: image::ImageError,
    },
    /// Nothing stands out from the background.
    #[error(
        "{}: no digit found (the picture is one flat shade); use a picture of one digit, dark on light or light on dark",
        path.display()
    )]
    Blank {
        /// The file.
        path: PathBuf,
    },
}

/// The largest picture side accepted, in pixels: a phone photo fits, and a
/// header that claims more is refused before any pixel is decoded.
pub const MAX_SIDE: u32 = 8192;

/// Read a PNG or JPEG file and prepare it as an MNIST image (row-major grey
/// levels, 28×28, light digit on black).
pub fn load_digit(path: &Path) -> Result<Vec<u8>, DigitError> {
    let bytes = std::fs::read(path).map_err(|e| DigitError::Decode {
        path: path.to_path_buf(),
        cause: image::ImageError::IoError(e),
    })?;
    decode_digit(&bytes).map_err(|problem| problem.for_file(path))
}

/// Why bytes in memory could not be turned into a digit (the file-less
/// form of [`DigitError`], for pictures that arrive over the network).
#[derive(Debug, thiserror::Error)]
pub enum PictureProblem {
    /// Not a PNG or JPEG this decoder can read, or larger than [`MAX_SIDE`].
    #[error("cannot read the picture: {0}")]
    Decode(image::ImageError),
    /// Nothing stands out from the background.
    #[error(
        "no digit found (the picture is one flat shade); use a picture of one digit, dark on light or light on dark"
    )]
    Blank,
}

impl PictureProblem {
    fn for_file(self, path: &Path) -> DigitError {
        let path = path.to_path_buf();
        match self {
            PictureProblem::Decode(cause) => DigitError::Decode { path, cause },
            PictureProblem::Blank => DigitError::Blank { path },
        }
    }
}

/// Decode a PNG or JPEG held in memory and prepare it as [`load_digit`]
/// does. Pictures wider or taller than [`MAX_SIDE`] are refused from their
/// header, so no input can make the decoder allocate without bound.
pub fn decode_digit(bytes: &[u8]) -> Result<Vec<u8>, PictureProblem> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PictureProblem::Decode(image::ImageError::IoError(e)))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let picture = reader.decode().map_err(PictureProblem::Decode)?;
    // Transparent pixels count as white paper.
    let with_alpha = picture.to_luma_alpha8();
    let grey = GrayImage::from_fn(with_alpha.width(), with_alpha.height(), |x, y| {
        let [level, alpha] = with_alpha.get_pixel(x, y).0;
        let a = f32::from(alpha) / 255.0;
        Luma([(f32::from(level) * a + 255.0 * (1.0 - a)).round() as u8])
    });
    prepare_digit(&grey).ok_or(PictureProblem::Blank)
}

/// Prepare a grey picture as an MNIST image; `None` if it shows no digit.
pub fn prepare_digit(grey: &GrayImage) -> Option<Vec<u8>> {
    let ink = without_frames(light_on_dark(grey)?);
    let (x0, y0, x1, y1) = bounding_box(&ink)?;
    let crop = image::imageops::crop_imm(&ink, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    let (w, h) = crop.dimensions();
    let scale = DIGIT_BOX as f32 / w.max(h) as f32;
    let (sw, sh) = (
        ((w as f32 * scale).round() as u32).clamp(1, DIGIT_BOX),
        ((h as f32 * scale).round() as u32).clamp(1, DIGIT_BOX),
    );
    let digit = image::imageops::resize(&crop, sw, sh, FilterType::Triangle);
    Some(centre_by_mass(&digit))
}

/// The picture with the background black and the ink bright, stretched to
/// the full range; `None` if it has no contrast.
fn light_on_dark(grey: &GrayImage) -> Option<GrayImage> {
    let (w, h) = grey.dimensions();
    let mut levels: Vec<u8> = grey.pixels().map(|p| p.0[0]).collect();
    if levels.is_empty() {
        return None;
    }
    let middle = levels.len() / 2;
    let background = f32::from(*levels.select_nth_unstable(middle).1);
    let invert = background > 127.0;
    let level = |p: u8| if invert { 255 - p } else { p };
    let background = if invert {
        255.0 - background
    } else {
        background
    };
    let brightest = f32::from(grey.pixels().map(|p| level(p.0[0])).max()?);
    if brightest - background < 32.0 {
        return None;
    }
    Some(GrayImage::from_fn(w, h, |x, y| {
        let v = f32::from(level(grey.get_pixel(x, y).0[0]));
        let stretched = (v - background) / (brightest - background) * 255.0;
        Luma([stretched.clamp(0.0, 255.0).round() as u8])
    }))
}

/// Share of the picture's width or height an edge-touching ink component
/// must span to count as a frame rather than a stroke.
const FRAME_SPAN: f32 = 0.9;

/// `ink` with every frame cleared: a 4-connected ink component that touches
/// the picture's edge and spans most of its width or height (a box drawn
/// round the digit, a photo's dark edge). A digit that is itself such a
/// component (cropped tight to the edges) is left as it is.
fn without_frames(ink: GrayImage) -> GrayImage {
    let (w, h) = ink.dimensions();
    let is_ink = |x: u32, y: u32| ink.get_pixel(x, y).0[0] >= INK;
    let mut component = vec![u32::MAX; (w * h) as usize];
    let mut cleared = ink.clone();
    let edge = (0..w)
        .flat_map(|x| [(x, 0), (x, h - 1)])
        .chain((0..h).flat_map(|y| [(0, y), (w - 1, y)]));
    for (sx, sy) in edge {
        if !is_ink(sx, sy) || component[(sy * w + sx) as usize] != u32::MAX {
            continue;
        }
        // Flood the component from this edge pixel.
        let id = sy * w + sx;
        let mut stack = vec![(sx, sy)];
        let mut pixels = Vec::new();
        component[id as usize] = id;
        while let Some((x, y)) = stack.pop() {
            pixels.push((x, y));
            let neighbours = [
                (x.wrapping_sub(1), y),
                (x + 1, y),
                (x, y.wrapping_sub(1)),
                (x, y + 1),
            ];
            for (nx, ny) in neighbours {
                if nx < w
                    && ny < h
                    && is_ink(nx, ny)
                    && component[(ny * w + nx) as usize] == u32::MAX
                {
                    component[(ny * w + nx) as usize] = id;
                    stack.push((nx, ny));
                }
            }
        }
        let span = |coords: &mut dyn Iterator<Item = u32>| {
            let (lo, hi) = coords.fold((u32::MAX, 0), |(lo, hi), c| (lo.min(c), hi.max(c)));
            (hi - lo + 1) as f32
        };
        let width = span(&mut pixels.iter().map(|p| p.0));
        let height = span(&mut pixels.iter().map(|p| p.1));
        if width >= FRAME_SPAN * w as f32 || height >= FRAME_SPAN * h as f32 {
            for (x, y) in pixels {
                cleared.put_pixel(x, y, Luma([0]));
            }
        }
    }
    if bounding_box(&cleared).is_some() {
        cleared
    } else {
        ink
    }
}

/// The smallest box holding every ink pixel, as (x0, y0, x1, y1) inclusive.
fn bounding_box(ink: &GrayImage) -> Option<(u32, u32, u32, u32)> {
    ink.enumerate_pixels()
        .filter(|(_, _, p)| p.0[0] >= INK)
        .fold(None, |bbox, (x, y, _)| {
            Some(match bbox {
                None => (x, y, x, y),
                Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
            })
        })
}

/// Paste `digit` into a 28×28 field so its centre of mass lands on the centre.
fn centre_by_mass(digit: &GrayImage) -> Vec<u8> {
    let (mut mass, mut mx, mut my) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y, p) in digit.enumerate_pixels() {
        let m = f64::from(p.0[0]);
        mass += m;
        mx += m * f64::from(x);
        my += m * f64::from(y);
    }
    let (cx, cy) = if mass > 0.0 {
        (mx / mass, my / mass)
    } else {
        (
            f64::from(digit.width() - 1) / 2.0,
            f64::from(digit.height() - 1) / 2.0,
        )
    };
    let centre = (SIDE as f64 - 1.0) / 2.0;
    let dx = (centre - cx).round() as i64;
    let dy = (centre - cy).round() as i64;
    let mut out = vec![0u8; SIDE * SIDE];
    for (x, y, p) in digit.enumerate_pixels() {
        let (tx, ty) = (i64::from(x) + dx, i64::from(y) + dy);
        if (0..SIDE as i64).contains(&tx) && (0..SIDE as i64).contains(&ty) {
            out[ty as usize * SIDE + tx as usize] = p.0[0];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageEncoder;

    /// A dark vertical bar (a "1") on white paper, off-centre in a large picture.
    fn photo_of_a_one() -> GrayImage {
        GrayImage::from_fn(300, 200, |x, y| {
            let ink = (40..60).contains(&x) && (30..170).contains(&y);
            Luma([if ink { 20 } else { 235 }])
        })
    }

    fn mass_centre(image: &[u8]) -> (f64, f64) {
        let (mut m, mut sx, mut sy) = (0.0, 0.0, 0.0);
        for (i, &v) in image.iter().enumerate() {
            let v = f64::from(v);
            m += v;
            sx += v * (i % SIDE) as f64;
            sy += v * (i / SIDE) as f64;
        }
        (sx / m, sy / m)
    }

    #[test]
    fn dark_on_light_becomes_a_centred_light_digit_in_a_20_pixel_box() {
        let digit = prepare_digit(&photo_of_a_one()).unwrap();
        assert_eq!(digit.len(), 28 * 28);
        // Background black, ink bright.
        assert_eq!(digit[0], 0);
        assert!(digit.iter().copied().max().unwrap() > 200);
        // The bar is 140 tall: scaled to 20 rows, and centred by mass.
        let rows: Vec<usize> = (0..SIDE)
            .filter(|r| digit[r * SIDE..(r + 1) * SIDE].iter().any(|&v| v > 0))
            .collect();
        assert_eq!(rows.len(), 20, "{rows:?}");
        let (cx, cy) = mass_centre(&digit);
        assert!(
            (cx - 13.5).abs() <= 1.0 && (cy - 13.5).abs() <= 1.0,
            "{cx} {cy}"
        );
    }

    #[test]
    fn light_on_dark_is_kept_and_gives_the_same_digit() {
        let mut inverted = photo_of_a_one();
        image::imageops::invert(&mut inverted);
        assert_eq!(
            prepare_digit(&inverted).unwrap(),
            prepare_digit(&photo_of_a_one()).unwrap()
        );
    }

    /// A dark "7" on light paper: a bar and a diagonal.
    fn photo_of_a_seven(paper: u8, ink: u8) -> GrayImage {
        GrayImage::from_fn(120, 120, |x, y| {
            let bar = (30..90).contains(&x) && (25..35).contains(&y);
            let diagonal_x = 90.0 - (y as f32 - 25.0) * 0.45;
            let diagonal = (25..100).contains(&y) && (x as f32 - diagonal_x).abs() < 5.0;
            Luma([if bar || diagonal { ink } else { paper }])
        })
    }

    #[test]
    fn a_dark_frame_or_photo_edge_does_not_turn_the_paper_into_ink() {
        let plain = prepare_digit(&photo_of_a_seven(235, 20)).unwrap();
        // A box drawn round the digit, 4 pixels thick.
        let mut framed = photo_of_a_seven(235, 20);
        for (x, y, p) in framed.enumerate_pixels_mut() {
            if x < 4 || y < 4 || x >= 116 || y >= 116 {
                *p = Luma([20]);
            }
        }
        // A photo's dark edge: a 12-pixel strip down one side.
        let mut edged = photo_of_a_seven(235, 20);
        for (x, _, p) in edged.enumerate_pixels_mut() {
            if x < 12 {
                *p = Luma([35]);
            }
        }
        for (what, picture) in [("framed", framed), ("edged", edged)] {
            let digit = prepare_digit(&picture).unwrap();
            assert_eq!(digit[0], 0, "{what}: the paper is black");
            let differing = digit
                .iter()
                .zip(&plain)
                .filter(|(a, b)| a.abs_diff(**b) > 8)
                .count();
            assert!(
                differing <= 6,
                "{what}: {differing} pixels differ from the plain picture"
            );
        }
    }

    #[test]
    fn a_digit_cropped_to_the_edges_is_not_taken_for_a_frame() {
        // A "1" filling the picture's height: it touches the edge and spans it.
        let tight = GrayImage::from_fn(20, 60, |x, _| {
            Luma([if (5..15).contains(&x) { 20 } else { 235 }])
        });
        let digit = prepare_digit(&tight).unwrap();
        assert!(digit.iter().filter(|&&v| v > 128).count() > 20);
    }

    #[test]
    fn a_blank_picture_has_no_digit() {
        assert!(prepare_digit(&GrayImage::from_pixel(50, 50, Luma([200]))).is_none());
    }

    #[test]
    fn unreadable_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("digit.png");
        std::fs::write(&path, b"not a picture").unwrap();
        let err = load_digit(&path).unwrap_err().to_string();
        assert!(
            err.contains("digit.png") && err.contains("cannot read"),
            "{err}"
        );
        let blank = dir.path().join("blank.png");
        GrayImage::from_pixel(30, 30, Luma([255]))
            .save(&blank)
            .unwrap();
        let err = load_digit(&blank).unwrap_err().to_string();
        assert!(
            err.contains("blank.png") && err.contains("no digit"),
            "{err}"
        );
    }

    #[test]
    fn pictures_in_memory_are_prepared_as_files_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.png");
        photo_of_a_one().save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(decode_digit(&bytes).unwrap(), load_digit(&path).unwrap());
    }

    /// A PNG header claiming a picture of `width` × `height`, without the
    /// pixels.
    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(&[0u8; 4], 2, 2, image::ExtendedColorType::L8)
            .unwrap();
        // IHDR's width and height sit at bytes 16..24; its CRC follows.
        png[16..20].copy_from_slice(&width.to_be_bytes());
        png[20..24].copy_from_slice(&height.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        png
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn absurd_dimensions_are_refused_from_the_header() {
        let err = decode_digit(&png_header(100_000, 100_000)).unwrap_err();
        assert!(matches!(err, PictureProblem::Decode(_)), "{err}");
        assert!(err.to_string().contains("limit"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_give_a_digit_or_an_error_never_a_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)
        ) {
            let _ = decode_digit(&bytes);
        }

        #[test]
        fn corrupted_pngs_never_panic(flips in proptest::collection::vec((0usize..200, proptest::num::u8::ANY), 1..8)) {
            let mut png = Vec::new();
            photo_of_a_one()
                .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .unwrap();
            for (at, byte) in flips {
                let at = at % png.len();
                png[at] = byte;
            }
            let _ = decode_digit(&png);
        }
    }
}
