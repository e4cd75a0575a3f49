//! Weights as safetensors with PyTorch's key names and layouts.
//!
//! Keys are the module paths (`conv1.weight`, `fc1.bias`, ...), which are
//! PyTorch's `state_dict` keys for a model whose fields have the same names.
//! Layouts are PyTorch's: conv weights `[out, in, kh, kw]` (as Burn's) and
//! linear weights `[out, in]` (Burn's are `[in, out]`, so they are
//! transposed on the way in and out). Works for any [`Module`].

use mnist_data::atomic::write_atomically;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

/// A tensor in PyTorch layout, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct TorchTensor {
    /// PyTorch shape.
    pub shape: Vec<usize>,
    /// Row-major f32 values.
    pub data: Vec<f32>,
}

/// Why weights could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// Reading or writing the file failed.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// The file is not a readable safetensors file.
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },
    /// The file holds another architecture's (or another dtype's) weights.
    #[error(
        "{}: these weights do not fit the model ({} problem{}):\n  {}",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        problems.join("\n  ")
    )]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// One line per missing, unexpected, mis-shaped or mis-typed tensor.
        problems: Vec<String>,
    },
    /// A tensor holds NaN or infinite values: the weights of a run that
    /// diverged, or a damaged file. They would answer `NaN%` for everything.
    #[error(
        "{}: tensor `{tensor}` holds {count} NaN or infinite value(s); these weights cannot \
         classify anything (a diverged run or a damaged file)",
        path.display()
    )]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The first tensor with such values.
        tensor: String,
        /// How many it holds.
        count: usize,
    },
}

/// Tracks the module path during a visit or map. Burn calls
/// `enter_module(field, "Struct:<type holding the field>")` for every field,
/// so the last entry is the parameter's own name, tagged with its layer type.
#[derive(Default)]
struct PathStack(Vec<(String, String)>);

impl PathStack {
    fn enter(&mut self, name: &str, container: &str) {
        self.0.push((name.to_string(), container.to_string()));
    }

    fn exit(&mut self) {
        self.0.pop();
    }

    /// The PyTorch key: field names joined by dots. Enum variants (a model
    /// chosen at run time) are not part of the key, and batch norm's
    /// `gamma`/`beta` are PyTorch's `weight`/`bias`.
    fn key(&self) -> String {
        self.0
            .iter()
            .filter(|(_, holder)| !holder.starts_with("Enum:"))
            .map(|(name, holder)| match (name.as_str(), holder.as_str()) {
                ("gamma", "Struct:BatchNorm") => "weight",
                ("beta", "Struct:BatchNorm") => "bias",
                (name, _) => name,
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// Burn keeps linear weights as `[in, out]`; PyTorch as `[out, in]`.
    fn is_linear_weight(&self) -> bool {
        self.0
            .last()
            .is_some_and(|(name, holder)| name == "weight" && holder == "Struct:Linear")
    }
}

fn to_torch<const D: usize>(tensor: Tensor<D>, transpose: bool) -> TorchTensor {
    let tensor = if transpose && D == 2 {
        tensor.transpose()
    } else {
        tensor
    };
    let shape = tensor.dims().to_vec();
    let data = tensor
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("float parameters convert to f32");
    TorchTensor { shape, data }
}

struct Collector {
    path: PathStack,
    tensors: Vec<(String, TorchTensor)>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = to_torch(param.val(), self.path.is_linear_weight());
        self.tensors.push((self.path.key(), tensor));
    }
}

/// The module's parameters by PyTorch key, in PyTorch layout, in module order.
pub fn state_dict<M: Module>(module: &M) -> Vec<(String, TorchTensor)> {
    let mut collector = Collector {
        path: PathStack::default(),
        tensors: Vec::new(),
    };
    module.visit(&mut collector);
    collector.tensors
}

struct Loader {
    path: PathStack,
    tensors: BTreeMap<String, TorchTensor>,
    problems: Vec<String>,
}

impl ModuleMapper for Loader {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let key = self.path.key();
        let transpose = self.path.is_linear_weight();
        let Some(found) = self.tensors.remove(&key) else {
            self.problems.push(format!("missing key {key}"));
            return param;
        };
        let mut expected = param.lazy_shape().dims::<D>().to_vec();
        if transpose {
            expected.reverse();
        }
        if found.shape != expected {
            self.problems.push(format!(
                "{key}: shape {:?} in the file, {expected:?} expected",
                found.shape
            ));
            return param;
        }
        param.map(|old| {
            let mut shape = found.shape.clone();
            if transpose {
                shape.reverse();
            }
            let mut tensor: Tensor<D> =
                Tensor::from_data(TensorData::new(found.data, found.shape), &old.device());
            if transpose {
                tensor = tensor.transpose();
            }
            debug_assert_eq!(tensor.dims().to_vec(), shape);
            // A fresh tensor does not inherit the old one's autodiff tracking.
            tensor.set_require_grad(old.is_require_grad())
        })
    }
}

struct StableIds {
    path: PathStack,
}

impl ModuleMapper for StableIds {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (_, value, mapper) = param.consume();
        Param::from_mapped_value(ParamId::from(fnv1a(&self.path.key())), value, mapper)
    }
}

/// FNV-1a: a fixed, dependency-free string hash.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Give every parameter an id derived from its key (`fc1.weight` ...).
///
/// Burn draws parameter ids at random and keys optimizer state by them, so
/// a model rebuilt in another process would not find its saved optimizer
/// state. Ids derived from the key make checkpoints resumable.
pub fn with_stable_ids<M: Module>(module: M) -> M {
    module.map(&mut StableIds {
        path: PathStack::default(),
    })
}

/// Load PyTorch-layout tensors into `module`, listing every mismatch.
pub fn load_state_dict<M: Module>(
    module: M,
    tensors: BTreeMap<String, TorchTensor>,
) -> Result<M, Vec<String>> {
    let mut loader = Loader {
        path: PathStack::default(),
        tensors,
        problems: Vec::new(),
    };
    let module = module.map(&mut loader);
    let mut problems = loader.problems;
    problems.extend(
        loader
            .tensors
            .keys()
            // PyTorch's batch-norm step counter; Burn's batch norm has none.
            .filter(|k| !k.ends_with(".num_batches_tracked"))
            .map(|k| format!("unexpected key {k}")),
    );
    if problems.is_empty() {
        Ok(module)
    } else {
        Err(problems)
    }
}

/// A safetensors file's header metadata and its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsFile {
    /// The header's `__metadata__` (empty when absent).
    pub metadata: std::collections::HashMap<String, String>,
    /// The tensors by key, as f32 in PyTorch layout.
    pub tensors: BTreeMap<String, TorchTensor>,
}

/// Read every tensor of a safetensors file as f32 (only f32 files are accepted).
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, TorchTensor>, WeightsError> {
    read_weights_file(path).map(|file| file.tensors)
}

/// Read a safetensors file once: its metadata and every tensor as f32.
pub fn read_weights_file(path: &Path) -> Result<WeightsFile, WeightsError> {
    let bytes = std::fs::read(path).map_err(|cause| WeightsError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    let corrupt = |e: safetensors::SafeTensorError| WeightsError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = SafeTensors::deserialize(&bytes).map_err(corrupt)?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(corrupt)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let mut tensors = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, view) in file.tensors() {
        if view.dtype() != Dtype::F32 {
            problems.push(format!("{name}: dtype {:?}, expected F32", view.dtype()));
            continue;
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let count = data.iter().filter(|v| !v.is_finite()).count();
        if count > 0 {
            return Err(WeightsError::NonFinite {
                path: path.to_path_buf(),
                tensor: name,
                count,
            });
        }
        tensors.insert(
            name,
            TorchTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    if problems.is_empty() {
        Ok(WeightsFile { metadata, tensors })
    } else {
        Err(WeightsError::Mismatch {
            path: path.to_path_buf(),
            problems,
        })
    }
}

/// Load weights saved by [`save_weights`] or exported from PyTorch
/// (`safetensors.torch.save_file(model.state_dict(), path)`).
pub fn load_weights<M: Module>(module: M, path: &Path) -> Result<M, WeightsError> {
    let tensors = read_safetensors(path)?;
    load_state_dict(module, tensors).map_err(|problems| WeightsError::Mismatch {
        path: path.to_path_buf(),
        problems,
    })
}

/// Serialise a module's weights as safetensors bytes in PyTorch layout.
pub fn weights_bytes<M: Module>(module: &M) -> Vec<u8> {
    weights_bytes_with(module, &[])
}

/// [`weights_bytes`] with extra `(key, value)` metadata.
pub fn weights_bytes_with<M: Module>(module: &M, extra: &[(&str, &str)]) -> Vec<u8> {
    let tensors = state_dict(module);
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(k, t)| {
            let bytes = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (k, t.shape, bytes)
        })
        .collect();
    let views = raw.iter().map(|(k, shape, bytes)| {
        let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes)
            .expect("shape and byte length agree by construction");
        (k.clone(), view)
    });
    let mut metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    metadata.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let metadata = Some(metadata);
    let bytes = safetensors::serialize(views, metadata).expect("f32 tensors always serialise");
    with_sorted_header(bytes)
}

/// The same file with its JSON header's keys in sorted order.
///
/// safetensors writes the metadata from a `HashMap`, whose order changes
/// from run to run; sorting makes equal weights give byte-identical files
/// (comparable by hash or `cmp`). The header keeps its length, so the
/// tensor data and offsets are untouched.
fn with_sorted_header(mut bytes: Vec<u8>) -> Vec<u8> {
    let Some(len_bytes) = bytes.get(..8) else {
        return bytes;
    };
    let mut len = [0u8; 8];
    len.copy_from_slice(len_bytes);
    let header_len = u64::from_le_bytes(len) as usize;
    let Some(header) = bytes.get(8..8 + header_len) else {
        return bytes;
    };
    let Ok(parsed) =
        serde_json::from_slice::<BTreeMap<String, serde_json::Value>>(header.trim_ascii_end())
    else {
        return bytes;
    };
    let sorted: BTreeMap<String, serde_json::Value> = parsed
        .into_iter()
        .map(|(key, value)| match value {
            serde_json::Value::Object(map) => {
                let inner: BTreeMap<String, serde_json::Value> = map.into_iter().collect();
                (key, serde_json::json!(inner))
            }
            other => (key, other),
        })
        .collect();
    let Ok(mut text) = serde_json::to_vec(&sorted) else {
        return bytes;
    };
    if text.len() > header_len {
        return bytes;
    }
    // safetensors pads the header with spaces to keep the data aligned.
    text.resize(header_len, b' ');
    bytes[8..8 + header_len].copy_from_slice(&text);
    bytes
}

/// Save a module's weights, atomically: a crash mid-write leaves any
/// previous file at `path` intact.
pub fn save_weights<M: Module>(module: &M, path: &Path) -> Result<(), WeightsError> {
    write_atomically(path, &weights_bytes(module)).map_err(|cause| WeightsError::Io {
        path: path.to_path_buf(),
        cause,
    })
}

/// [`save_weights`] with extra `(key, value)` metadata in the file's header.
pub fn save_weights_with<M: Module>(
    module: &M,
    extra: &[(&str, &str)],
    path: &Path,
) -> Result<(), WeightsError> {
    write_atomically(path, &weights_bytes_with(module, extra)).map_err(|cause| WeightsError::Io {
        path: path.to_path_buf(),
        cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeedCnnConfig;
    use crate::backend::test_devices;

    #[test]
    fn keys_and_shapes_are_pytorchs() {
        let (_, device) = test_devices().remove(0);
        let model = SeedCnnConfig::new().init(0, &device);
        let keys: Vec<(String, Vec<usize>)> = state_dict(&model)
            .into_iter()
            .map(|(k, t)| (k, t.shape))
            .collect();
        let expected = [
            ("conv1.weight", vec![16, 1, 5, 5]),
            ("conv1.bias", vec![16]),
            ("conv2.weight", vec![32, 16, 5, 5]),
            ("conv2.bias", vec![32]),
            ("fc1.weight", vec![100, 1568]),
            ("fc1.bias", vec![100]),
            ("fc2.weight", vec![10, 100]),
            ("fc2.bias", vec![10]),
        ]
        .map(|(k, s)| (k.to_string(), s));
        assert_eq!(keys, expected);
    }

    #[test]
    fn save_then_load_round_trips_exactly() {
        let (_, device) = test_devices().remove(0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let a = SeedCnnConfig::new().init(1, &device);
        save_weights(&a, &path).unwrap();
        let b = load_weights(SeedCnnConfig::new().init(2, &device), &path).unwrap();
        assert_eq!(state_dict(&a), state_dict(&b));
    }

    #[test]
    fn another_architecture_is_refused_with_every_mismatch() {
        let (_, device) = test_devices().remove(0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.safetensors");
        let wide = SeedCnnConfig::new().with_hidden(64).init(0, &device);
        save_weights(&wide, &path).unwrap();
        let err = load_weights(SeedCnnConfig::new().init(0, &device), &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("wide.safetensors"), "{err}");
        assert!(
            err.contains("fc1.weight: shape [64, 1568] in the file, [100, 1568] expected"),
            "{err}"
        );
        assert!(err.contains("fc2.weight"), "{err}");
    }

    #[test]
    fn corrupt_and_wrong_dtype_files_are_clear_errors() {
        let (_, device) = test_devices().remove(0);
        let dir = tempfile::tempdir().unwrap();
        let corrupt = dir.path().join("corrupt.safetensors");
        std::fs::write(&corrupt, b"\xff\xff\xff\xff garbage").unwrap();
        let err = load_weights(SeedCnnConfig::new().init(0, &device), &corrupt).unwrap_err();
        assert!(matches!(err, WeightsError::Corrupt { .. }), "{err}");

        let f64_file = dir.path().join("f64.safetensors");
        let bytes = vec![0u8; 8 * 10];
        let view = safetensors::tensor::TensorView::new(Dtype::F64, vec![10], &bytes).unwrap();
        std::fs::write(
            &f64_file,
            safetensors::serialize([("fc2.bias", view)], None).unwrap(),
        )
        .unwrap();
        let err = load_weights(SeedCnnConfig::new().init(0, &device), &f64_file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("fc2.bias: dtype F64, expected F32"), "{err}");
    }

    #[test]
    fn non_finite_weights_are_refused_naming_the_tensor() {
        let (_, device) = test_devices().remove(0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.safetensors");
        let mut values = [0.5f32; 10];
        values[3] = f32::NAN;
        values[7] = f32::INFINITY;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![10], &bytes).unwrap();
        std::fs::write(
            &path,
            safetensors::serialize([("fc2.bias", view)], None).unwrap(),
        )
        .unwrap();
        let err = load_weights(SeedCnnConfig::new().init(0, &device), &path).unwrap_err();
        assert!(
            matches!(&err, WeightsError::NonFinite { tensor, count: 2, .. } if tensor == "fc2.bias"),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("nan.safetensors") && message.contains("`fc2.bias`"),
            "{message}"
        );
    }

    #[test]
    fn stable_ids_depend_on_the_key_only() {
        let (_, device) = test_devices().remove(0);
        let ids = |seed| {
            let m = SeedCnnConfig::new().init(seed, &device);
            (m.conv1.weight.id, m.fc2.bias.as_ref().map(|b| b.id))
        };
        assert_eq!(ids(1), ids(2));
        assert_ne!(ids(1).0, ids(1).1.unwrap());
    }

    #[test]
    fn equal_weights_give_identical_files() {
        let (_, device) = test_devices().remove(0);
        let model = SeedCnnConfig::new().init(4, &device);
        let extra = [("b_key", "1"), ("a_key", "2"), ("c_key", "3")];
        let first = weights_bytes_with(&model, &extra);
        // Every call builds a new HashMap with its own random order.
        for _ in 0..8 {
            assert!(weights_bytes_with(&model, &extra) == first);
        }
        let reread = SafeTensors::deserialize(&first).unwrap();
        assert_eq!(reread.names().len(), 8);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        std::fs::write(&path, &first).unwrap();
        let metadata = read_weights_file(&path).unwrap().metadata;
        assert_eq!(metadata.get("a_key").map(String::as_str), Some("2"));
        assert_eq!(metadata.get("format").map(String::as_str), Some("pt"));
    }
}
