//! `mnist predict`: classify a user's own digit pictures with trained
//! weights (one file, or several as an ensemble), top-3 classes each.

use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::tensor::{Tensor, TensorData};
use clap::Args;
use mnist_data::Normalizer;
use mnist_data::digit::{SIDE, load_digit};
use serde::Serialize;

use mnist_data::Dataset;

use crate::config::{RuntimeArgs, load_models};
use crate::evaluate::{mean_probabilities, tta_probabilities};
use crate::output::outln;

/// `mnist predict` arguments.
#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// The dataset whose class names and normalisation to use [default:
    /// the one the weights record, else mnist].
    #[arg(long, value_enum)]
    dataset: Option<Dataset>,
    /// Weights to classify with; repeat the flag for an ensemble
    /// (`--weights a.safetensors --weights b.safetensors`).
    #[arg(long, short = 'w', required = true)]
    weights: Vec<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    /// Also draw each prepared 28×28 image as text, to check the preprocessing.
    #[arg(long)]
    show: bool,
    /// Test-time augmentation: average over the picture shifted one pixel
    /// each way and turned ±6° (7 views); for clothing each view mirrored
    /// too (14 views).
    #[arg(long)]
    tta: bool,
    /// Pictures of single digits (PNG or JPEG).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
}

/// One class and its probability.
#[derive(Debug, Serialize)]
struct Guess {
    class: usize,
    label: String,
    probability: f32,
}

/// The top-3 classes for one picture.
#[derive(Debug, Serialize)]
struct Prediction {
    image: PathBuf,
    top: Vec<Guess>,
}

pub fn run(args: PredictArgs) -> Result<()> {
    let runtime = args.runtime.resolve()?;
    let (models, dataset) = load_models(&args.weights, args.dataset, &runtime.device)?;
    // An unreadable picture is reported and the others still get answers;
    // the exit status says that something failed.
    let mut unreadable = 0;
    let mut readable = Vec::new();
    let mut digits = Vec::new();
    for path in &args.images {
        match load_digit(path) {
            Ok(digit) => {
                readable.push(path.clone());
                digits.push(digit);
            }
            Err(e) => {
                eprintln!("error: {e}");
                unreadable += 1;
            }
        }
    }
    if digits.is_empty() {
        bail!("none of the {} pictures could be read", args.images.len());
    }

    let normalizer = Normalizer::new(dataset.mean(), dataset.std());
    let pixels: Vec<f32> = digits
        .iter()
        .flat_map(|d| d.iter().map(|&p| normalizer.apply(p)))
        .collect();
    let images = Tensor::<4>::from_data(
        TensorData::new(pixels, [digits.len(), 1, SIDE, SIDE]),
        &runtime.device,
    );
    let probabilities = if args.tta {
        let views = mnist_data::tta::views(dataset);
        tta_probabilities(&models, &digits, &views, &normalizer, &runtime.device)
    } else {
        mean_probabilities(&models, images)
    };
    let probabilities: Vec<f32> = probabilities.into_data().try_into_vec_as::<f32>()?;
    let names = dataset.class_names();
    let predictions: Vec<Prediction> = readable
        .iter()
        .zip(probabilities.chunks_exact(names.len()))
        .map(|(image, p)| Prediction {
            image: image.clone(),
            top: top_k(p, 3)
                .into_iter()
                .map(|class| Guess {
                    class,
                    label: names[class].to_string(),
                    probability: p[class],
                })
                .collect(),
        })
        .collect();

    if args.json {
        outln!("{}", serde_json::to_string_pretty(&predictions)?);
    } else {
        for (prediction, digit) in predictions.iter().zip(&digits) {
            let guesses: Vec<String> = prediction
                .top
                .iter()
                .map(|g| format!("{} {:.1}%", g.label, 100.0 * g.probability))
                .collect();
            outln!("{}: {}", prediction.image.display(), guesses.join(", "));
            if args.show {
                outln!("{}", ascii_art(digit));
            }
        }
    }
    if unreadable > 0 {
        bail!(
            "{unreadable} of {} pictures could not be read (named above); the others were classified",
            args.images.len()
        );
    }
    Ok(())
}

/// Indices of the `k` largest values, largest first.
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    order.truncate(k);
    order
}

/// A 28×28 image as 28 lines of text, brighter pixels as denser characters.
fn ascii_art(digit: &[u8]) -> String {
    const SHADES: &[u8] = b" .:-=+*#%@";
    digit
        .chunks_exact(SIDE)
        .map(|row| {
            row.iter()
                .map(|&p| SHADES[usize::from(p) * (SHADES.len() - 1) / 255] as char)
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_probability() {
        assert_eq!(top_k(&[0.1, 0.6, 0.05, 0.25], 3), vec![1, 3, 0]);
    }

    #[test]
    fn ascii_art_has_one_line_per_row() {
        let mut digit = vec![0u8; SIDE * SIDE];
        digit[SIDE + 2] = 255;
        let art = ascii_art(&digit);
        assert_eq!(art.lines().count(), SIDE);
        assert_eq!(art.lines().nth(1).unwrap().chars().nth(2), Some('@'));
    }
}
