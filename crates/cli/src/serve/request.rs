//! The body of `POST /api/predict` turned into the 28×28 image the model
//! sees: a PNG or JPEG goes through `mnist predict`'s preparation (cropped,
//! scaled into 20×20, centred by mass); JSON gives the 28×28 grey levels
//! directly. Whatever the bytes, the answer is an image or a problem that
//! names what is wrong, never a panic.

use mnist_data::digit::{PictureProblem, SIDE, decode_digit};
use serde::Deserialize;

/// Why a request body is not a digit.
#[derive(Debug, thiserror::Error)]
pub enum BodyProblem {
    /// Nothing was sent.
    #[error(
        "the request body is empty; send a PNG or JPEG picture, or JSON {{\"pixels\": 28 rows of 28 grey levels}}"
    )]
    Empty,
    /// The picture could not be used.
    #[error("{0}")]
    Picture(#[from] PictureProblem),
    /// Not JSON of the documented shape.
    #[error("malformed JSON: {0}; expected {{\"pixels\": 28 rows of 28 grey levels 0-255}}")]
    Json(#[from] serde_json::Error),
    /// The grid is not 28×28.
    #[error("\"pixels\" must be 28 rows of 28 values; {0}")]
    Shape(String),
    /// A grey level outside 0–255.
    #[error("pixels[{row}][{column}] is {value}; grey levels run from 0 (background) to 255 (ink)")]
    Level {
        /// Row of the bad value.
        row: usize,
        /// Column of the bad value.
        column: usize,
        /// The value.
        value: f64,
    },
}

/// `{"pixels": [[...], ...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PixelGrid {
    pixels: Vec<Vec<f64>>,
}

/// The prepared image for a body sent with `content_type`.
pub fn digit_from_body(content_type: Option<&str>, body: &[u8]) -> Result<Vec<u8>, BodyProblem> {
    if body.is_empty() {
        return Err(BodyProblem::Empty);
    }
    let is_json = content_type
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        digit_from_json(body)
    } else {
        Ok(decode_digit(body)?)
    }
}

fn digit_from_json(body: &[u8]) -> Result<Vec<u8>, BodyProblem> {
    let grid: PixelGrid = serde_json::from_slice(body)?;
    if grid.pixels.len() != SIDE {
        return Err(BodyProblem::Shape(format!(
            "got {} rows",
            grid.pixels.len()
        )));
    }
    let mut digit = Vec::with_capacity(SIDE * SIDE);
    for (row, values) in grid.pixels.iter().enumerate() {
        if values.len() != SIDE {
            return Err(BodyProblem::Shape(format!(
                "row {row} has {} values",
                values.len()
            )));
        }
        for (column, &value) in values.iter().enumerate() {
            if !(0.0..=255.0).contains(&value) {
                return Err(BodyProblem::Level { row, column, value });
            }
            digit.push(value.round() as u8);
        }
    }
    Ok(digit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn grid(value: f64) -> String {
        let row = vec![value; SIDE];
        serde_json::json!({ "pixels": vec![row; SIDE] }).to_string()
    }

    #[test]
    fn json_grids_are_taken_as_they_are() {
        let digit = digit_from_body(
            Some("application/json; charset=utf-8"),
            grid(254.6).as_bytes(),
        )
        .unwrap();
        assert_eq!(digit, vec![255u8; SIDE * SIDE]);
    }

    #[test]
    fn each_problem_is_named() {
        let json = Some("application/json");
        let cases: Vec<(Option<&str>, Vec<u8>, &str)> = vec![
            (None, Vec::new(), "empty"),
            (json, b"{\"pixels\": [".to_vec(), "malformed JSON"),
            (json, b"{\"image\": []}".to_vec(), "unknown field"),
            (json, b"{\"pixels\": [[1, 2]]}".to_vec(), "got 1 rows"),
            (json, grid(300.0).into_bytes(), "pixels[0][0] is 300"),
            (json, grid(-1.0).into_bytes(), "is -1"),
            (
                Some("image/png"),
                b"\x89PNG\r\n\x1a\n garbage".to_vec(),
                "cannot read the picture",
            ),
            (None, b"hello".to_vec(), "cannot read the picture"),
        ];
        for (content_type, body, expected) in cases {
            let err = digit_from_body(content_type, &body)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
        }
        let mut ragged: Vec<Vec<f64>> = vec![vec![0.0; SIDE]; SIDE];
        ragged[5].pop();
        let body = serde_json::json!({ "pixels": ragged }).to_string();
        let err = digit_from_body(json, body.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 5 has 27 values"), "{err}");
    }

    proptest! {
        #[test]
        fn any_body_is_a_digit_or_a_named_problem(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
            json in any::<bool>(),
        ) {
            let content_type = json.then_some("application/json");
            match digit_from_body(content_type, &bytes) {
                Ok(digit) => prop_assert_eq!(digit.len(), SIDE * SIDE),
                Err(problem) => prop_assert!(!problem.to_string().is_empty()),
            }
        }

        #[test]
        fn any_json_value_is_a_digit_or_a_named_problem(text in "\\{\"pixels\": \\[[-0-9., \\[\\]e]{0,200}\\]\\}") {
            let _ = digit_from_body(Some("application/json"), text.as_bytes());
        }
    }
}
