use std::io;
use std::path::PathBuf;

use crate::dataset::Dataset;
use crate::idx::FormatProblem;

/// Everything that can go wrong reading a dataset. Each message names the
/// file (or directory) and the problem.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{}: cannot read: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: io::Error,
    },
    /// The file starts like gzip but does not decompress.
    #[error("{}: not a valid gzip stream ({cause}); delete it and download again", path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: io::Error,
    },
    /// The IDX content is malformed.
    #[error("{}: {problem}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: FormatProblem,
    },
    /// The image and label files of a split disagree on the item count.
    #[error(
        "{} holds {image_count} images but {} holds {label_count} labels",
        images.display(),
        labels.display()
    )]
    CountMismatch {
        /// The image file.
        images: PathBuf,
        /// Its item count.
        image_count: usize,
        /// The label file.
        labels: PathBuf,
        /// Its item count.
        label_count: usize,
    },
    /// Some of the dataset's files are not in the directory.
    #[error(
        "no {dataset} data in {}: missing {missing}. Run `cargo xtask download --dataset {dataset}` \
         (or `--from DIR` offline), or point --data-dir / MNIST_DATA_DIR at a directory holding the files",
        dir.display()
    )]
    Missing {
        /// The dataset.
        dataset: Dataset,
        /// The directory searched.
        dir: PathBuf,
        /// The missing file names.
        missing: String,
    },
    /// The directory is named after another dataset.
    #[error(
        "{} looks like the {found} directory, but {asked} was asked for; \
         pass --dataset {found} or point --data-dir at the {asked} files",
        dir.display()
    )]
    WrongDataset {
        /// The directory.
        dir: PathBuf,
        /// The dataset requested.
        asked: Dataset,
        /// The dataset the directory is named after.
        found: Dataset,
    },
}
