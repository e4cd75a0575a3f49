//! `mnist augment`: a picture of what training will see — training images
//! beside their augmented versions, drawn exactly as a run with the same
//! flags draws them.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use mnist_data::atomic::write_atomically;
use mnist_data::epoch_order;
use mnist_metrics::plot::image_sheet_png;

use crate::config::{DataArgs, TrainFlags};
use crate::output::outln;

/// Pairs (original | augmented) per row of the sheet.
const PAIRS_PER_ROW: usize = 8;
/// Each 28×28 image drawn this many times larger.
const SCALE: usize = 3;

/// `mnist augment` arguments: the training flags to preview, plus which images.
#[derive(Args, Debug)]
pub struct AugmentArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    train: TrainFlags,
    /// Images to show: the first ones the epoch visits.
    #[arg(long, default_value_t = 16)]
    count: usize,
    /// Which epoch's draws (1-based, as training logs count).
    #[arg(long, default_value_t = 1)]
    epoch: usize,
    /// Where to write the PNG.
    #[arg(long, default_value = "augment.png")]
    out: PathBuf,
}

pub fn run(args: AugmentArgs) -> Result<()> {
    if !(1..=1024).contains(&args.count) {
        bail!("--count must be between 1 and 1024, got {}", args.count);
    }
    if args.epoch == 0 {
        bail!("--epoch counts from 1");
    }
    let hyper = args.train.resolve();
    hyper.validate()?;
    let augment = hyper.augment.augmentation();
    let dataset = args.data.dataset.unwrap_or_default();
    let mut data = mnist_data::load(dataset, &args.data.dir(dataset))?;
    if let Some(n) = args.data.train_limit {
        data.train = data.train.head(n);
    }
    let train = &data.train;
    // The epoch's shuffled order, as `mnist train` visits it.
    let epoch = args.epoch - 1;
    let order = epoch_order(train.len(), hyper.seed, epoch);
    let mut images = Vec::with_capacity(2 * args.count);
    for &index in order.iter().take(args.count) {
        images.push(train.image(index).iter().map(|&p| f32::from(p)).collect());
        images.push(augment.image_levels(train, index, hyper.seed, epoch));
    }
    let per_row = 2 * PAIRS_PER_ROW.min(images.len() / 2);
    let png = image_sheet_png(&images, (train.rows, train.cols), per_row, 2, SCALE)?;
    write_atomically(&args.out, &png)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let what = hyper
        .augment
        .describe()
        .unwrap_or_else(|| "none (pass --recipe or augmentation flags)".into());
    outln!(
        "Wrote {}: {} {} training images of epoch {} (seed {}), each beside its augmented version; augmentation={}",
        args.out.display(),
        images.len() / 2,
        dataset,
        args.epoch,
        hyper.seed,
        what
    );
    Ok(())
}
