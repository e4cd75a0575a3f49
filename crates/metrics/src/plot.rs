//! Pictures as PNG bytes: the confusion matrix (after scikit-learn's
//! `ConfusionMatrixDisplay`), per-epoch training curves, and sheets of
//! images (e.g. training images beside their augmented versions).
//!
//! Rendering returns bytes rather than writing files, so the caller decides
//! how to store them (atomically, in a run directory).

use std::sync::Once;

use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::{FontStyle, register_font};
use serde::Serialize;

use crate::ConfusionMatrix;

/// Why a picture could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw {what}: {message}")]
pub struct PlotError {
    what: &'static str,
    message: String,
}

fn plot_err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> PlotError {
    move |e| PlotError {
        what,
        message: e.to_string(),
    }
}

/// One epoch of a training run, for the curves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct EpochPoint {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Test accuracy after the epoch, in [0, 1].
    pub test_accuracy: f64,
    /// Accuracy on the validation split held out of the training images,
    /// when the run keeps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
}

const FONT: &str = "sans-serif";

/// The embedded DejaVu Sans, so pictures need no system fonts.
fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TTF shipped by the dejavu crate.
        let _ = register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

fn encode_png(
    buffer: Vec<u8>,
    (w, h): (u32, u32),
    what: &'static str,
) -> Result<Vec<u8>, PlotError> {
    let image = image::RgbImage::from_raw(w, h, buffer).ok_or_else(|| PlotError {
        what,
        message: "buffer size does not match the picture".into(),
    })?;
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(plot_err(what))?;
    Ok(png)
}

/// The confusion matrix as a PNG: counts in the cells, class names on both
/// axes, viridis colour scale with a colour bar, as scikit-learn draws it.
pub fn confusion_matrix_png(
    matrix: &ConfusionMatrix,
    class_names: &[&str],
    title: &str,
) -> Result<Vec<u8>, PlotError> {
    const WHAT: &str = "the confusion matrix";
    register_fonts();
    let n = matrix.classes().max(1);
    let cell: i32 = if n <= 10 {
        56
    } else {
        (560 / n as i32).max(12)
    };
    let side = cell * n as i32;
    let names: Vec<String> = (0..n)
        .map(|i| {
            class_names
                .get(i)
                .map_or(i.to_string(), |s| (*s).to_string())
        })
        .collect();
    // Room for the longest row name (about 8 px a character at 14 px).
    let longest = names.iter().map(|s| s.chars().count()).max().unwrap_or(1) as i32;
    let (left, top) = ((80 + 8 * longest).max(150), 70);
    // Column names lie flat when they are short, else all stand upright.
    let upright = longest > 3;
    let size = ((left + side + 130) as u32, (top + side + 110) as u32);
    let mut buffer = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err(WHAT))?;
        let max = matrix
            .counts()
            .iter()
            .flatten()
            .max()
            .copied()
            .unwrap_or(0)
            .max(1) as f64;
        let text = |size: u32| TextStyle::from((FONT, size).into_font()).color(&BLACK);
        let centred = |style: TextStyle<'static>| {
            style.pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Center,
            ))
        };
        root.draw(&Text::new(
            title.to_string(),
            (left + side / 2, 30),
            centred(text(22)),
        ))
        .map_err(plot_err(WHAT))?;
        for (t, row) in matrix.counts().iter().enumerate() {
            for (p, &count) in row.iter().enumerate() {
                let (x, y) = (left + p as i32 * cell, top + t as i32 * cell);
                let level = count as f64 / max;
                let colour = ViridisRGB.get_color(level as f32);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    colour.filled(),
                ))
                .map_err(plot_err(WHAT))?;
                // Light text on dark cells, dark on light, as scikit-learn does.
                let ink: &'static RGBColor = if level < 0.5 { &WHITE } else { &BLACK };
                let font = (cell as u32 / 4).clamp(8, 15);
                root.draw(&Text::new(
                    count.to_string(),
                    (x + cell / 2, y + cell / 2),
                    centred(text(font).color(ink)),
                ))
                .map_err(plot_err(WHAT))?;
            }
        }
        for (i, name) in names.iter().enumerate() {
            let name = name.clone();
            let mid = i as i32 * cell + cell / 2;
            let right_aligned = text(14).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Right,
                plotters::style::text_anchor::VPos::Center,
            ));
            root.draw(&Text::new(
                name.clone(),
                (left - 8, top + mid),
                right_aligned,
            ))
            .map_err(plot_err(WHAT))?;
            let below = text(14).transform(FontTransform::Rotate270).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Right,
                    plotters::style::text_anchor::VPos::Center,
                ),
            );
            let label = if !upright {
                root.draw(&Text::new(
                    name,
                    (left + mid, top + side + 16),
                    centred(text(14)),
                ))
            } else {
                root.draw(&Text::new(name, (left + mid, top + side + 8), below))
            };
            label.map_err(plot_err(WHAT))?;
        }
        root.draw(&Text::new(
            "Predicted label",
            (left + side / 2, top + side + 85),
            centred(text(17)),
        ))
        .map_err(plot_err(WHAT))?;
        root.draw(&Text::new(
            "True label",
            ((left - 40 - 8 * longest).max(20), top + side / 2),
            centred(text(17).transform(FontTransform::Rotate270)),
        ))
        .map_err(plot_err(WHAT))?;
        // Colour bar.
        let bar_x = left + side + 25;
        for y in 0..side {
            let level = 1.0 - y as f32 / side as f32;
            root.draw(&Rectangle::new(
                [(bar_x, top + y), (bar_x + 22, top + y + 1)],
                ViridisRGB.get_color(level).filled(),
            ))
            .map_err(plot_err(WHAT))?;
        }
        let left_aligned = text(13).pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Left,
            plotters::style::text_anchor::VPos::Center,
        ));
        for k in 0..=4 {
            let value = (max * k as f64 / 4.0).round() as u64;
            let y = top + side - (side * k / 4);
            root.draw(&Text::new(
                value.to_string(),
                (bar_x + 28, y),
                left_aligned.clone(),
            ))
            .map_err(plot_err(WHAT))?;
        }
        root.present().map_err(plot_err(WHAT))?;
    }
    encode_png(buffer, size, WHAT)
}

/// Training loss and test accuracy per epoch, side by side, as a PNG.
pub fn curves_png(points: &[EpochPoint], title: &str) -> Result<Vec<u8>, PlotError> {
    const WHAT: &str = "the training curves";
    register_fonts();
    let size = (1000u32, 420u32);
    let mut buffer = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err(WHAT))?;
        let root = root
            .titled(title, (FONT, 20).into_font())
            .map_err(plot_err(WHAT))?;
        let (left, right) = root.split_horizontally(size.0 / 2);
        let last_epoch = points.iter().map(|p| p.epoch).max().unwrap_or(1).max(1);
        let x_range = 0.5..last_epoch as f64 + 0.5;

        let losses: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.epoch as f64, p.train_loss))
            .collect();
        let max_loss = losses.iter().map(|p| p.1).fold(0.0, f64::max);
        let loss_top = if max_loss.is_finite() && max_loss > 0.0 {
            max_loss * 1.1
        } else {
            1.0
        };
        draw_series(
            &left,
            "train loss (mean per epoch)",
            x_range.clone(),
            0.0..loss_top,
            &losses,
            &RED,
            2,
        )?;

        let accuracy: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.epoch as f64, 100.0 * p.test_accuracy))
            .collect();
        let lowest = accuracy.iter().map(|p| p.1).fold(100.0, f64::min);
        let floor = (lowest - 1.0).clamp(0.0, 99.0).floor();
        draw_series(
            &right,
            "test accuracy (%)",
            x_range,
            floor..100.0,
            &accuracy,
            &BLUE,
            1,
        )?;
        root.present().map_err(plot_err(WHAT))?;
    }
    encode_png(buffer, size, WHAT)
}

fn draw_series(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    points: &[(f64, f64)],
    colour: &RGBColor,
    y_decimals: usize,
) -> Result<(), PlotError> {
    const WHAT: &str = "the training curves";
    let x_end = x.end;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 16).into_font())
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(x, y)
        .map_err(plot_err(WHAT))?;
    // One tick per epoch (at most 20), on whole numbers.
    let epochs = (x_end - 0.5).round() as usize;
    let x_labels = if epochs <= 20 { epochs + 1 } else { 11 };
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(x_labels)
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 1e-9 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        })
        .light_line_style(WHITE)
        .y_label_formatter(&|v| format!("{v:.y_decimals$}"))
        .label_style((FONT, 12).into_font())
        .draw()
        .map_err(plot_err(WHAT))?;
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            colour.stroke_width(2),
        ))
        .map_err(plot_err(WHAT))?;
    chart
        .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
        .map_err(plot_err(WHAT))?;
    Ok(())
}

/// A sheet of grey images as a PNG: `images` (each `rows × cols` grey levels
/// in 0–255, clamped) laid out `per_row` to a row, each drawn `scale` times
/// larger, white on black as MNIST stores them, with a 2-pixel grey gap
/// between cells (and an 8-pixel one after every `group` images, so pairs
/// such as original | augmented read as units).
pub fn image_sheet_png(
    images: &[Vec<f32>],
    (rows, cols): (usize, usize),
    per_row: usize,
    group: usize,
    scale: usize,
) -> Result<Vec<u8>, PlotError> {
    const WHAT: &str = "the image sheet";
    const GAP: usize = 2;
    const GROUP_GAP: usize = 8;
    if images.is_empty() || per_row == 0 || group == 0 || scale == 0 {
        return Err(PlotError {
            what: WHAT,
            message: "nothing to draw".into(),
        });
    }
    if let Some(bad) = images.iter().position(|i| i.len() != rows * cols) {
        return Err(PlotError {
            what: WHAT,
            message: format!("image {bad} is not {rows}×{cols}"),
        });
    }
    let per_row = per_row.min(images.len());
    let grid_rows = images.len().div_ceil(per_row);
    // Left edge of each column of cells.
    let mut lefts = Vec::with_capacity(per_row);
    let mut x = GAP;
    for column in 0..per_row {
        lefts.push(x);
        x += cols * scale
            + if (column + 1) % group == 0 {
                GROUP_GAP
            } else {
                GAP
            };
    }
    let width = x;
    let height = GAP + grid_rows * (rows * scale + GAP);
    let mut buffer = vec![96u8; width * height * 3];
    for (n, image) in images.iter().enumerate() {
        let (top, left) = (
            GAP + (n / per_row) * (rows * scale + GAP),
            lefts[n % per_row],
        );
        for y in 0..rows * scale {
            for x in 0..cols * scale {
                let level = image[(y / scale) * cols + x / scale].clamp(0.0, 255.0) as u8;
                let at = ((top + y) * width + left + x) * 3;
                buffer[at..at + 3].fill(level);
            }
        }
    }
    encode_png(buffer, (width as u32, height as u32), WHAT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png: &[u8]) -> image::RgbImage {
        image::load_from_memory(png).expect("valid PNG").to_rgb8()
    }

    #[test]
    fn confusion_png_decodes_and_shades_by_count() {
        let mut m = ConfusionMatrix::new(10);
        for c in 0..10 {
            for _ in 0..(100 + c) {
                m.add(c, c);
            }
            m.add(c, (c + 1) % 10);
        }
        let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let img = decode(&confusion_matrix_png(&m, &names, "Confusion matrix").unwrap());
        // A diagonal cell (large count) is bright (viridis yellow-green), an
        // empty off-diagonal cell dark (viridis purple): sample cell corners.
        let diag = img.get_pixel(150 + 3, 70 + 3);
        let empty = img.get_pixel(150 + 56 * 5 + 3, 70 + 3);
        assert!(diag[1] > 150, "diagonal cell should be bright: {diag:?}");
        assert!(
            empty[1] < 60 && empty[2] > 60,
            "empty cell should be dark purple: {empty:?}"
        );
    }

    #[test]
    fn curves_png_decodes() {
        let points: Vec<EpochPoint> = (1..=5)
            .map(|e| EpochPoint {
                epoch: e,
                train_loss: 1.0 / e as f64,
                test_accuracy: 0.9 + 0.01 * e as f64,
                val_accuracy: None,
            })
            .collect();
        let img = decode(&curves_png(&points, "run").unwrap());
        assert_eq!(img.dimensions(), (1000, 420));
        let coloured = img
            .pixels()
            .filter(|p| p[0] > 200 && p[1] < 60 && p[2] < 60)
            .count();
        assert!(coloured > 50, "the red loss line is drawn");
    }

    #[test]
    fn a_single_epoch_still_draws() {
        let points = [EpochPoint {
            epoch: 1,
            train_loss: 0.3,
            test_accuracy: 0.95,
            val_accuracy: None,
        }];
        assert!(curves_png(&points, "one").is_ok());
    }

    #[test]
    fn image_sheet_places_each_image_at_scale() {
        // Three 2×3 images: black, a white top-left pixel, mid grey.
        let mut marked = vec![0.0; 6];
        marked[0] = 300.0; // clamped to white
        let images = vec![vec![0.0; 6], marked, vec![128.0; 6]];
        let img = decode(&image_sheet_png(&images, (2, 3), 2, 2, 4).unwrap());
        // Two to a row, grouped in twos: 2 + 12 + 2 + 12 + 8 wide, 2 rows of 8 + 2 tall.
        assert_eq!(img.dimensions(), (36, 22));
        let grey = |x, y| img.get_pixel(x, y).0[0];
        assert_eq!(grey(0, 0), 96, "the gap");
        assert_eq!(grey(2, 2), 0, "image 0");
        assert_eq!(
            (grey(16, 2), grey(19, 5)),
            (255, 255),
            "image 1's white pixel, ×4"
        );
        assert_eq!(grey(20, 2), 0, "image 1's next pixel");
        assert_eq!(grey(2, 12), 128, "image 2 starts the second row");
        assert!(image_sheet_png(&[vec![0.0; 5]], (2, 3), 1, 1, 1).is_err());
        assert!(image_sheet_png(&[], (2, 3), 1, 1, 1).is_err());
    }
}
