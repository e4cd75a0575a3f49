//! The MNIST-style datasets this project knows: their files, checksums,
//! class names and normalisation constants, and loading them from a directory.

use std::path::{Path, PathBuf};

use crate::DataError;
use crate::idx::{read_images, read_labels};

/// Number of classes in every MNIST-style dataset.
pub const NUM_CLASSES: usize = 10;

/// One of the four files of a dataset, with its canonical SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFile {
    /// File name, e.g. `train-images-idx3-ubyte.gz`.
    pub name: &'static str,
    /// Lower-case hex SHA-256 of the canonical file.
    pub sha256: &'static str,
}

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte.gz";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte.gz";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte.gz";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte.gz";

/// A known dataset in the IDX format. Its name ([`Dataset::name`]) is the
/// same on the command line, in files and for directories.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Dataset {
    /// Handwritten digits (LeCun, Cortes, Burges).
    #[default]
    #[serde(rename = "mnist")]
    #[cfg_attr(feature = "clap", value(name = "mnist"))]
    Mnist,
    /// Zalando's clothing images (Xiao, Rasul, Vollgraf 2017).
    #[serde(rename = "fashion-mnist")]
    #[cfg_attr(feature = "clap", value(name = "fashion-mnist"))]
    FashionMnist,
}

impl Dataset {
    /// Every known dataset.
    pub const ALL: [Dataset; 2] = [Dataset::Mnist, Dataset::FashionMnist];

    /// The name used on the command line and for directories.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Mnist => "mnist",
            Dataset::FashionMnist => "fashion-mnist",
        }
    }

    /// Whether a left-right mirror image keeps its class: true for clothing
    /// (a mirrored shirt is a shirt), false for digits (a mirrored 2 is no
    /// digit at all).
    pub fn flip_keeps_class(self) -> bool {
        match self {
            Dataset::Mnist => false,
            Dataset::FashionMnist => true,
        }
    }

    /// Class names, index = label.
    pub fn class_names(self) -> [&'static str; NUM_CLASSES] {
        match self {
            Dataset::Mnist => ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            Dataset::FashionMnist => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
        }
    }

    /// Mean of the training pixels after `/255` (the `Normalize` constant).
    pub fn mean(self) -> f32 {
        match self {
            Dataset::Mnist => 0.1307,
            Dataset::FashionMnist => 0.2860,
        }
    }

    /// Standard deviation of the training pixels after `/255`.
    pub fn std(self) -> f32 {
        match self {
            Dataset::Mnist => 0.3081,
            Dataset::FashionMnist => 0.3530,
        }
    }

    /// The four files, with the SHA-256 of the canonical copies.
    pub fn files(self) -> [DataFile; 4] {
        let (a, b, c, d) = match self {
            Dataset::Mnist => (
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
            Dataset::FashionMnist => (
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
        };
        [
            DataFile {
                name: TRAIN_IMAGES,
                sha256: a,
            },
            DataFile {
                name: TRAIN_LABELS,
                sha256: b,
            },
            DataFile {
                name: TEST_IMAGES,
                sha256: c,
            },
            DataFile {
                name: TEST_LABELS,
                sha256: d,
            },
        ]
    }

    /// Canonical mirrors, tried in order.
    pub fn mirrors(self) -> &'static [&'static str] {
        match self {
            Dataset::Mnist => &[
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "http://yann.lecun.com/exdb/mnist/",
            ],
            Dataset::FashionMnist => {
                &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
            }
        }
    }
}

/// A name that is no dataset's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dataset `{0}`; use mnist or fashion-mnist")]
pub struct UnknownDataset(pub String);

impl std::str::FromStr for Dataset {
    type Err = UnknownDataset;

    fn from_str(name: &str) -> Result<Self, UnknownDataset> {
        Self::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(|| UnknownDataset(name.to_string()))
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the data of `dataset` lives.
///
/// `--data-dir` wins, then `MNIST_DATA_DIR`, then `data/<dataset>/` under
/// `workspace_root`. A given directory may hold the four files itself or a
/// `<dataset>/` sub-directory with them, so one variable can serve both
/// datasets (`MNIST_DATA_DIR=../shared/data`).
pub fn resolve_data_dir(
    flag: Option<&Path>,
    env: Option<&Path>,
    workspace_root: &Path,
    dataset: Dataset,
) -> PathBuf {
    match flag.or(env) {
        Some(dir) => {
            let nested = dir.join(dataset.name());
            if nested.is_dir() {
                nested
            } else {
                dir.to_path_buf()
            }
        }
        None => workspace_root.join("data").join(dataset.name()),
    }
}

/// The directory of `dataset` when no `--data-dir` is given
/// (`MNIST_DATA_DIR`, else `data/<dataset>/` under `workspace_root`, where
/// `cargo xtask download` puts it), checked to hold the four files; else an
/// error saying how to get them. Tests find the real files through this.
pub fn find_data_dir(dataset: Dataset, workspace_root: &Path) -> Result<PathBuf, DataError> {
    let env = std::env::var_os("MNIST_DATA_DIR").map(PathBuf::from);
    let dir = resolve_data_dir(None, env.as_deref(), workspace_root, dataset);
    check_present(dataset, &dir, &dataset.files())?;
    Ok(dir)
}

/// `dir` holds `files` of `dataset` (and is not another dataset's).
fn check_present(dataset: Dataset, dir: &Path, files: &[DataFile]) -> Result<(), DataError> {
    check_not_other_dataset(dataset, dir)?;
    let missing: Vec<&str> = files
        .iter()
        .map(|f| f.name)
        .filter(|name| !dir.join(name).is_file())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(DataError::Missing {
        dataset,
        dir: dir.to_path_buf(),
        missing: missing.join(", "),
    })
}

/// One split: `len` images of `rows × cols` bytes and their labels.
#[derive(Debug, Clone)]
pub struct Split {
    /// Pixels, image after image, 0 = background.
    pub pixels: Vec<u8>,
    /// Labels, one per image, each below [`NUM_CLASSES`].
    pub labels: Vec<u8>,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
}

impl Split {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let size = self.rows * self.cols;
        &self.pixels[i * size..(i + 1) * size]
    }

    /// Hold out `n` images chosen by `seed` (say, for validation): returns
    /// `(rest, held_out)`, each in the split's own order, disjoint, together
    /// the whole split. The choice depends only on `seed` and the split's
    /// size, so every run with the same `n` and `seed` holds out the same
    /// images, whatever it trains with. `n` larger than the split holds out
    /// every image.
    pub fn hold_out(&self, n: usize, seed: u64) -> (Split, Split) {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        /// Keeps this stream apart from the epoch shuffles of the same seed.
        const STREAM: u64 = 0x5641_4C49_4441_5445;
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ STREAM));
        let mut held = vec![false; self.len()];
        for &i in &order[..n.min(self.len())] {
            held[i] = true;
        }
        (self.pick(|i| !held[i]), self.pick(|i| held[i]))
    }

    /// The images `keep` says yes to, in order.
    fn pick(&self, keep: impl Fn(usize) -> bool) -> Split {
        let chosen: Vec<usize> = (0..self.len()).filter(|&i| keep(i)).collect();
        Split {
            pixels: chosen
                .iter()
                .flat_map(|&i| self.image(i))
                .copied()
                .collect(),
            labels: chosen.iter().map(|&i| self.labels[i]).collect(),
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// The first `n` images (all of them if `n` is larger), e.g. for quick runs.
    pub fn head(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split {
            pixels: self.pixels[..n * self.rows * self.cols].to_vec(),
            labels: self.labels[..n].to_vec(),
            rows: self.rows,
            cols: self.cols,
        }
    }
}

/// A dataset's training and test splits, in memory.
#[derive(Debug, Clone)]
pub struct DataSplits {
    /// Which dataset.
    pub dataset: Dataset,
    /// The 60,000 training images.
    pub train: Split,
    /// The 10,000 test images.
    pub test: Split,
}

/// Load both splits of `dataset` from `dir`, validating every file.
pub fn load(dataset: Dataset, dir: &Path) -> Result<DataSplits, DataError> {
    check_present(dataset, dir, &dataset.files())?;
    let [train_images, train_labels, test_images, test_labels] =
        dataset.files().map(|f| dir.join(f.name));
    // The two splits are independent: decode them on two threads.
    let started = std::time::Instant::now();
    let (train, test) = std::thread::scope(|s| {
        let train = s.spawn(|| load_split(&train_images, &train_labels));
        let test = load_split(&test_images, &test_labels);
        (join(train), test)
    });
    let (train, test) = (train?, test?);
    tracing::info!(
        %dataset,
        dir = %dir.display(),
        train = train.len(),
        test = test.len(),
        seconds = started.elapsed().as_secs_f64(),
        "loaded"
    );
    Ok(DataSplits {
        dataset,
        train,
        test,
    })
}

fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    match handle.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Load the test split alone (evaluation needs nothing else): only its two
/// files must be in `dir`.
pub fn load_test(dataset: Dataset, dir: &Path) -> Result<Split, DataError> {
    let [_, _, images, labels] = dataset.files();
    check_present(dataset, dir, &[images, labels])?;
    let test = load_split(&dir.join(images.name), &dir.join(labels.name))?;
    tracing::info!(%dataset, dir = %dir.display(), test = test.len(), "loaded the test split");
    Ok(test)
}

/// Load one split from its image and label files.
pub fn load_split(images_path: &Path, labels_path: &Path) -> Result<Split, DataError> {
    let images = read_images(images_path)?;
    let labels = read_labels(labels_path, NUM_CLASSES)?;
    if images.count != labels.len() {
        return Err(DataError::CountMismatch {
            images: images_path.to_path_buf(),
            image_count: images.count,
            labels: labels_path.to_path_buf(),
            label_count: labels.len(),
        });
    }
    Ok(Split {
        pixels: images.pixels,
        labels,
        rows: images.rows,
        cols: images.cols,
    })
}

/// A directory named after another dataset almost certainly holds that
/// dataset: refuse it rather than train on the wrong images.
fn check_not_other_dataset(dataset: Dataset, dir: &Path) -> Result<(), DataError> {
    let base = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    match Dataset::ALL
        .into_iter()
        .find(|other| *other != dataset && other.name() == base)
    {
        Some(other) => Err(DataError::WrongDataset {
            dir: dir.to_path_buf(),
            asked: dataset,
            found: other,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::{encode_images, encode_labels};

    fn write_split(dir: &Path, images: &str, labels: &str, n_images: u32, n_labels: usize) {
        let px = vec![0u8; n_images as usize * 4];
        std::fs::write(dir.join(images), encode_images(n_images, 2, 2, &px)).unwrap();
        std::fs::write(dir.join(labels), encode_labels(&vec![3; n_labels])).unwrap();
    }

    #[test]
    fn names_round_trip() {
        for d in Dataset::ALL {
            assert_eq!(d.name().parse::<Dataset>(), Ok(d));
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(json, format!("\"{}\"", d.name()), "files use the same name");
            assert_eq!(serde_json::from_str::<Dataset>(&json).unwrap(), d);
        }
        let err = "cifar".parse::<Dataset>().unwrap_err().to_string();
        assert!(err.contains("mnist or fashion-mnist"), "{err}");
    }

    #[test]
    fn flag_beats_env_beats_workspace() {
        let root = Path::new("/ws");
        let (flag, env) = (Path::new("/f"), Path::new("/e"));
        let d = Dataset::Mnist;
        assert_eq!(
            resolve_data_dir(Some(flag), Some(env), root, d),
            PathBuf::from("/f")
        );
        assert_eq!(
            resolve_data_dir(None, Some(env), root, d),
            PathBuf::from("/e")
        );
        assert_eq!(
            resolve_data_dir(None, None, root, Dataset::FashionMnist),
            PathBuf::from("/ws/data/fashion-mnist")
        );
    }

    #[test]
    fn a_parent_directory_serves_every_dataset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("fashion-mnist")).unwrap();
        let found = resolve_data_dir(
            Some(dir.path()),
            None,
            Path::new("/"),
            Dataset::FashionMnist,
        );
        assert_eq!(found, dir.path().join("fashion-mnist"));
    }

    #[test]
    fn missing_files_are_listed_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(Dataset::Mnist, dir.path()).unwrap_err().to_string();
        assert!(err.contains("t10k-labels-idx1-ubyte.gz"), "{err}");
        assert!(err.contains("cargo xtask download"), "{err}");
    }

    #[test]
    fn image_label_count_mismatch_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "i", "l", 5, 4);
        let err = load_split(&dir.path().join("i"), &dir.path().join("l"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("5 images") && err.contains("4 labels"),
            "{err}"
        );
    }

    #[test]
    fn another_datasets_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mnist = dir.path().join("mnist");
        std::fs::create_dir(&mnist).unwrap();
        let err = load(Dataset::FashionMnist, &mnist).unwrap_err().to_string();
        assert!(err.contains("mnist"), "{err}");
    }

    #[test]
    fn head_takes_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "i", "l", 5, 5);
        let split = load_split(&dir.path().join("i"), &dir.path().join("l")).unwrap();
        let head = split.head(2);
        assert_eq!((head.len(), head.pixels.len()), (2, 8));
        assert_eq!(split.head(99).len(), 5);
    }

    fn numbered(len: usize) -> Split {
        Split {
            pixels: (0..len * 4).map(|i| (i / 4) as u8).collect(),
            labels: (0..len).map(|i| (i % 10) as u8).collect(),
            rows: 2,
            cols: 2,
        }
    }

    #[test]
    fn holding_out_splits_into_two_disjoint_parts_that_make_the_whole() {
        let split = numbered(200);
        let (rest, held) = split.hold_out(30, 7);
        assert_eq!((rest.len(), held.len()), (170, 30));
        let ids = |s: &Split| (0..s.len()).map(|i| s.image(i)[0]).collect::<Vec<u8>>();
        let (rest_ids, held_ids) = (ids(&rest), ids(&held));
        assert!(rest_ids.windows(2).all(|w| w[0] < w[1]), "kept in order");
        assert!(held_ids.windows(2).all(|w| w[0] < w[1]), "kept in order");
        let mut all = [rest_ids, held_ids.clone()].concat();
        all.sort_unstable();
        assert_eq!(all, (0..200).map(|i| i as u8).collect::<Vec<_>>());
        for i in 0..held.len() {
            assert_eq!(
                held.labels[i],
                held.image(i)[0] % 10,
                "labels travel with their images"
            );
        }
        assert_eq!(
            split.hold_out(30, 7).1.pixels,
            held.pixels,
            "the same seed, the same images"
        );
        assert_ne!(
            split.hold_out(30, 8).1.pixels,
            held.pixels,
            "another seed, others"
        );
        assert_ne!(
            held_ids,
            (0..30).collect::<Vec<u8>>(),
            "not simply the first ones"
        );
        assert_eq!(split.hold_out(500, 7).1.len(), 200);
    }
}
