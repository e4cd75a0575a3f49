//! The IDX file format (LeCun's MNIST format), gzipped or raw.
//!
//! Big-endian header: two zero bytes, a type byte (0x08 = unsigned byte), a
//! rank byte, then one `u32` per dimension; then the payload. Images are
//! rank 3 (magic 2051 = `0x00000803`), labels rank 1 (magic 2049).
//!
//! Parsing never trusts the header for allocation: the payload is read with a
//! hard cap, and the claimed item count is checked against the bytes that are
//! really there.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use crate::DataError;

/// Magic number of an IDX file of unsigned-byte images (rank 3).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte labels (rank 1).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// The largest payload we accept: far above any MNIST-style file (the
/// biggest, EMNIST "by class", is about 550 MB) and far below what a bogus
/// header could ask for.
pub const MAX_PAYLOAD_BYTES: u64 = 2 << 30;

/// What is wrong with an IDX byte stream. Paired with the file name in
/// [`DataError::Format`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatProblem {
    /// Fewer bytes than the header needs.
    #[error("the file is {len} bytes long, too short for an IDX header of {needed} bytes")]
    TooShort {
        /// Bytes present.
        len: usize,
        /// Bytes the header needs.
        needed: usize,
    },
    /// The first four bytes are not an IDX unsigned-byte magic number.
    #[error(
        "magic number {found:#010x} is not an IDX unsigned-byte file \
         (expected {expected:#010x}); is this really an IDX file?"
    )]
    BadMagic {
        /// Magic number found.
        found: u32,
        /// Magic number expected.
        expected: u32,
    },
    /// The magic number is valid IDX, but of another rank.
    #[error("header says rank {found}, but {what} files have rank {expected}")]
    WrongRank {
        /// Rank found.
        found: u8,
        /// Rank expected.
        expected: u8,
        /// "image" or "label".
        what: &'static str,
    },
    /// A dimension is zero (other than the item count).
    #[error("header says an item is {rows}x{cols} pixels; both must be at least 1")]
    EmptyItem {
        /// Rows claimed.
        rows: u32,
        /// Columns claimed.
        cols: u32,
    },
    /// The header asks for more data than any sane IDX file holds.
    #[error(
        "header says {items} items of {item_bytes} bytes, {claimed} bytes in all, \
         more than the {limit}-byte limit"
    )]
    TooLarge {
        /// Items claimed.
        items: u64,
        /// Bytes per item.
        item_bytes: u64,
        /// Claimed payload bytes.
        claimed: u128,
        /// The limit.
        limit: u64,
    },
    /// The claimed item count disagrees with the payload length.
    #[error("header says {claimed} items but the file holds {actual}{}", stray_note(*stray))]
    CountMismatch {
        /// Items claimed by the header.
        claimed: u64,
        /// Whole items actually present.
        actual: u64,
        /// Bytes left over after the last whole item.
        stray: u64,
    },
    /// A label is not a valid class index.
    #[error("label {value} at index {index} is out of range 0..{classes}")]
    LabelOutOfRange {
        /// The bad label.
        value: u8,
        /// Its position.
        index: usize,
        /// Number of classes.
        classes: usize,
    },
}

fn stray_note(stray: u64) -> String {
    if stray == 0 {
        String::new()
    } else {
        format!(" (and {stray} stray bytes)")
    }
}

/// A parsed IDX image file: `count` images of `rows × cols` bytes, contiguous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `count × rows × cols` pixels, row-major, 0 = background.
    pub pixels: Vec<u8>,
}

/// Parse the bytes of an IDX image file.
pub fn parse_images(mut bytes: Vec<u8>) -> Result<IdxImages, FormatProblem> {
    let dims = parse_header(&bytes, IMAGES_MAGIC, 3, "image")?;
    let (rows, cols) = (dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        return Err(FormatProblem::EmptyItem { rows, cols });
    }
    let item_bytes = u64::from(rows) * u64::from(cols);
    let header_len = header_len(3);
    check_count(dims[0], item_bytes, (bytes.len() - header_len) as u64)?;
    bytes.drain(..header_len);
    Ok(IdxImages {
        count: dims[0] as usize,
        rows: rows as usize,
        cols: cols as usize,
        pixels: bytes,
    })
}

/// Parse the bytes of an IDX label file, checking every label is below `classes`.
pub fn parse_labels(mut bytes: Vec<u8>, classes: usize) -> Result<Vec<u8>, FormatProblem> {
    let dims = parse_header(&bytes, LABELS_MAGIC, 1, "label")?;
    let header_len = header_len(1);
    check_count(dims[0], 1, (bytes.len() - header_len) as u64)?;
    bytes.drain(..header_len);
    if let Some((index, &value)) = bytes
        .iter()
        .enumerate()
        .find(|(_, v)| usize::from(**v) >= classes)
    {
        return Err(FormatProblem::LabelOutOfRange {
            value,
            index,
            classes,
        });
    }
    Ok(bytes)
}

fn header_len(rank: u8) -> usize {
    4 + 4 * usize::from(rank)
}

/// Check magic and rank; return the dimensions.
fn parse_header(
    bytes: &[u8],
    expected_magic: u32,
    rank: u8,
    what: &'static str,
) -> Result<Vec<u32>, FormatProblem> {
    if bytes.len() < 4 {
        return Err(FormatProblem::TooShort {
            len: bytes.len(),
            needed: header_len(rank),
        });
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    // Bytes 0-2 say "IDX of unsigned bytes"; byte 3 is the rank.
    if magic & 0xffff_ff00 != expected_magic & 0xffff_ff00 {
        return Err(FormatProblem::BadMagic {
            found: magic,
            expected: expected_magic,
        });
    }
    let found_rank = bytes[3];
    if found_rank != rank {
        return Err(FormatProblem::WrongRank {
            found: found_rank,
            expected: rank,
            what,
        });
    }
    let needed = header_len(rank);
    if bytes.len() < needed {
        return Err(FormatProblem::TooShort {
            len: bytes.len(),
            needed,
        });
    }
    Ok(bytes[4..needed]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn check_count(claimed: u32, item_bytes: u64, payload: u64) -> Result<(), FormatProblem> {
    let claimed = u64::from(claimed);
    // count × rows × cols is three u32s: up to 2^96, so multiply in u128.
    let wide = u128::from(claimed) * u128::from(item_bytes);
    let claimed_bytes = match u64::try_from(wide) {
        Ok(bytes) if bytes <= MAX_PAYLOAD_BYTES => bytes,
        _ => {
            return Err(FormatProblem::TooLarge {
                items: claimed,
                item_bytes,
                claimed: wide,
                limit: MAX_PAYLOAD_BYTES,
            });
        }
    };
    if payload != claimed_bytes {
        return Err(FormatProblem::CountMismatch {
            claimed,
            actual: payload / item_bytes,
            stray: payload % item_bytes,
        });
    }
    Ok(())
}

/// Read a whole IDX file, gunzipping it when it starts with the gzip magic.
///
/// At most [`MAX_PAYLOAD_BYTES`] plus a header are read, so a gzip bomb or a
/// lying header cannot exhaust memory.
pub fn read_idx_bytes(path: &Path) -> Result<Vec<u8>, DataError> {
    let io_err = |cause: io::Error| DataError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut file, &mut magic).map_err(io_err)?;
    let file = File::open(path).map_err(io_err)?;
    let limit = MAX_PAYLOAD_BYTES + 64;
    let mut out = Vec::new();
    if n == 2 && magic == [0x1f, 0x8b] {
        GzDecoder::new(file)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|cause| DataError::Gzip {
                path: path.to_path_buf(),
                cause,
            })?;
    } else {
        file.take(limit).read_to_end(&mut out).map_err(io_err)?;
    }
    Ok(out)
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Read and parse an IDX image file (gzipped or raw).
pub fn read_images(path: &Path) -> Result<IdxImages, DataError> {
    parse_images(read_idx_bytes(path)?).map_err(|problem| format_error(path, problem))
}

/// Read and parse an IDX label file (gzipped or raw).
pub fn read_labels(path: &Path, classes: usize) -> Result<Vec<u8>, DataError> {
    parse_labels(read_idx_bytes(path)?, classes).map_err(|problem| format_error(path, problem))
}

fn format_error(path: &Path, problem: FormatProblem) -> DataError {
    DataError::Format {
        path: PathBuf::from(path),
        problem,
    }
}

/// Encode an IDX image file (used by tests and by tools that write subsets).
pub fn encode_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + pixels.len());
    out.extend_from_slice(&IMAGES_MAGIC.to_be_bytes());
    for d in [count, rows, cols] {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// Encode an IDX label file.
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_images() -> Vec<u8> {
        encode_images(3, 2, 2, &(0..12).collect::<Vec<u8>>())
    }

    #[test]
    fn parses_valid_images() {
        let images = parse_images(sample_images()).unwrap();
        assert_eq!((images.count, images.rows, images.cols), (3, 2, 2));
        assert_eq!(images.pixels, (0..12).collect::<Vec<u8>>());
    }

    #[test]
    fn parses_valid_labels() {
        assert_eq!(
            parse_labels(encode_labels(&[5, 0, 9]), 10).unwrap(),
            vec![5, 0, 9]
        );
    }

    #[test]
    fn truncated_payload_is_a_count_mismatch() {
        let mut bytes = encode_labels(&[1; 10000]);
        bytes.truncate(bytes.len() - 2);
        let err = parse_labels(bytes, 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "header says 10000 items but the file holds 9998"
        );
    }

    #[test]
    fn stray_bytes_are_reported() {
        let mut bytes = sample_images();
        bytes.push(7);
        let err = parse_images(bytes).unwrap_err();
        assert_eq!(
            err,
            FormatProblem::CountMismatch {
                claimed: 3,
                actual: 3,
                stray: 1
            }
        );
    }

    #[test]
    fn wrong_magic_and_rank_are_distinguished() {
        let err = parse_images(encode_labels(&[1, 2])).unwrap_err();
        assert!(matches!(
            err,
            FormatProblem::WrongRank {
                found: 1,
                expected: 3,
                ..
            }
        ));
        let mut bytes = sample_images();
        bytes[0] = 0x50; // e.g. a PNG or text file
        assert!(matches!(
            parse_images(bytes).unwrap_err(),
            FormatProblem::BadMagic { .. }
        ));
    }

    #[test]
    fn label_out_of_range_is_named() {
        let err = parse_labels(encode_labels(&[1, 2, 12]), 10).unwrap_err();
        assert_eq!(err.to_string(), "label 12 at index 2 is out of range 0..10");
    }

    #[test]
    fn billions_of_items_is_an_error_not_an_allocation() {
        let mut bytes = encode_images(4_000_000_000, 28, 28, &[]);
        bytes.extend_from_slice(&[0; 784]);
        assert!(matches!(
            parse_images(bytes).unwrap_err(),
            FormatProblem::TooLarge { .. }
        ));
    }

    /// Found by `cargo fuzz`: count × rows × cols overflowed u64.
    #[test]
    fn dimensions_whose_product_overflows_are_too_large() {
        let bytes = encode_images(u32::MAX, u32::MAX, u32::MAX, &[0; 8]);
        assert!(matches!(
            parse_images(bytes).unwrap_err(),
            FormatProblem::TooLarge { claimed, .. } if claimed > u128::from(u64::MAX)
        ));
    }

    #[test]
    fn gzip_garbage_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train-labels-idx1-ubyte.gz");
        std::fs::write(&path, [0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
        let err = read_labels(&path, 10).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("train-labels-idx1-ubyte.gz"), "{msg}");
        assert!(msg.contains("gzip"), "{msg}");
    }

    #[test]
    fn reads_gzipped_and_raw_alike() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("images");
        std::fs::write(&raw, sample_images()).unwrap();
        let gz = dir.path().join("images.gz");
        let mut enc = GzEncoder::new(File::create(&gz).unwrap(), Compression::fast());
        enc.write_all(&sample_images()).unwrap();
        enc.finish().unwrap();
        assert_eq!(read_images(&raw).unwrap(), read_images(&gz).unwrap());
    }

    fn valid_file() -> impl Strategy<Value = (bool, Vec<u8>)> {
        prop_oneof![
            (1u32..6, 1u32..5, 1u32..5).prop_flat_map(|(n, r, c)| {
                proptest::collection::vec(any::<u8>(), (n * r * c) as usize)
                    .prop_map(move |px| (true, encode_images(n, r, c, &px)))
            }),
            proptest::collection::vec(0u8..10, 1..20).prop_map(|l| (false, encode_labels(&l))),
        ]
    }

    fn parse_either(is_images: bool, bytes: Vec<u8>) -> Result<usize, FormatProblem> {
        if is_images {
            parse_images(bytes).map(|i| i.pixels.len())
        } else {
            parse_labels(bytes, 10).map(|l| l.len())
        }
    }

    proptest! {
        /// Arbitrary bytes never panic, and anything accepted is self-consistent.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(images) = parse_images(bytes.clone()) {
                prop_assert_eq!(images.pixels.len(), images.count * images.rows * images.cols);
            }
            if let Ok(labels) = parse_labels(bytes, 10) {
                prop_assert!(labels.iter().all(|&l| l < 10));
            }
        }

        /// Any truncation of a valid file is rejected.
        #[test]
        fn truncation_is_always_rejected((is_images, bytes) in valid_file(), cut in 1usize..64) {
            let keep = bytes.len().saturating_sub(cut);
            prop_assert!(parse_either(is_images, bytes[..keep].to_vec()).is_err());
        }

        /// Flipping a bit never panics; when the result still parses, the
        /// header it was built from must still be consistent with the payload.
        #[test]
        fn bit_flips_never_panic((is_images, bytes) in valid_file(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = bytes;
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let header = if is_images { 16 } else { 8 };
            let result = parse_either(is_images, bytes.clone());
            if i < 4 {
                prop_assert!(result.is_err(), "a flipped magic or rank byte must be rejected");
            }
            if let Ok(len) = result {
                prop_assert_eq!(len, bytes.len() - header);
            }
        }
    }
}
