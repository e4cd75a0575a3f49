//! Choosing a backend and device at run time.
//!
//! Backends are compiled in by Cargo features (`ndarray`, `flex`, `tch`);
//! this module turns a user's `--backend` / `--device` into a Burn
//! [`Device`], or an error that says which feature is missing.

#![allow(deprecated)] // ndarray and tch are deprecated upstream but still served here.

use burn::tensor::Device;

/// A Burn backend this project can be built with. Its name
/// ([`BackendKind::name`]) is the `--backend` value, the Cargo feature and
/// what run files record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum BackendKind {
    /// burn-ndarray: portable CPU reference backend.
    #[serde(rename = "ndarray")]
    #[cfg_attr(feature = "clap", value(name = "ndarray"))]
    NdArray,
    /// burn-flex: Burn's fast pure-Rust CPU backend (SIMD, rayon).
    #[serde(rename = "flex")]
    #[cfg_attr(feature = "clap", value(name = "flex"))]
    Flex,
    /// burn-tch: libtorch, for CPU, CUDA and Apple MPS.
    #[serde(rename = "tch")]
    #[cfg_attr(feature = "clap", value(name = "tch"))]
    Tch,
}

/// Where to run on a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The host CPU.
    Cpu,
    /// CUDA GPU with this index.
    Cuda(usize),
    /// Apple-silicon GPU through Metal Performance Shaders.
    Mps,
}

/// A backend or device that cannot be used in this build or on this machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// `--backend` names no known backend.
    #[error("unknown backend `{0}`; choose one of: ndarray, flex, tch")]
    UnknownBackend(String),
    /// `--device` is not `cpu`, `cuda:N` or `mps`.
    #[error("unknown device `{0}`; use cpu, cuda:N (e.g. cuda:0) or mps")]
    UnknownDevice(String),
    /// The backend exists but this binary was built without it.
    #[error(
        "backend `{backend}` is not compiled into this binary; rebuild with `--features {backend}` \
         (`cargo xtask train --backend {backend}` does this){hint}"
    )]
    NotCompiled {
        /// The backend asked for.
        backend: &'static str,
        /// Extra set-up advice.
        hint: &'static str,
    },
    /// The backend cannot drive that device.
    #[error("backend `{backend}` runs on the CPU only; use `--backend tch --device {device}`")]
    CpuOnly {
        /// The backend asked for.
        backend: &'static str,
        /// The device asked for.
        device: String,
    },
    /// MPS off Apple silicon.
    #[error("--device mps needs macOS on Apple silicon; this machine is {os}/{arch}")]
    MpsUnavailable {
        /// This OS.
        os: &'static str,
        /// This CPU architecture.
        arch: &'static str,
    },
}

impl BackendKind {
    /// Every backend, compiled in or not, fastest CPU backend first.
    pub const ALL: [BackendKind; 3] = [BackendKind::Flex, BackendKind::Tch, BackendKind::NdArray];

    /// The name used by `--backend` and by the Cargo feature.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::NdArray => "ndarray",
            BackendKind::Flex => "flex",
            BackendKind::Tch => "tch",
        }
    }

    /// Whether this binary was built with the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::NdArray => cfg!(feature = "ndarray"),
            BackendKind::Flex => cfg!(feature = "flex"),
            BackendKind::Tch => cfg!(feature = "tch"),
        }
    }

    /// The compiled-in backends, fastest on CPU first.
    pub fn compiled() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|b| b.is_compiled()).collect()
    }

    /// The default: the fastest CPU backend compiled in. Flex is preferred
    /// over libtorch for having no external library to find at run time.
    pub fn default_cpu() -> Option<BackendKind> {
        Self::compiled().into_iter().next()
    }

    /// The Burn device for this backend and `spec`.
    pub fn device(self, spec: DeviceSpec) -> Result<Device, BackendError> {
        if !self.is_compiled() {
            return Err(BackendError::NotCompiled {
                backend: self.name(),
                hint: match self {
                    BackendKind::Tch => {
                        "; libtorch 2.9 must be available: set LIBTORCH, or \
                         LIBTORCH_USE_PYTORCH=1 with torch==2.9.0 installed in Python"
                    }
                    _ => "",
                },
            });
        }
        if spec == DeviceSpec::Mps && !cfg!(all(target_os = "macos", target_arch = "aarch64")) {
            return Err(BackendError::MpsUnavailable {
                os: std::env::consts::OS,
                arch: std::env::consts::ARCH,
            });
        }
        match (self, spec) {
            (_, DeviceSpec::Cpu) => Ok(self.cpu_device()),
            (BackendKind::Tch, spec) => Ok(tch_device(spec)),
            (_, spec) => Err(BackendError::CpuOnly {
                backend: self.name(),
                device: spec.to_string(),
            }),
        }
    }

    fn cpu_device(self) -> Device {
        match self {
            #[cfg(feature = "ndarray")]
            BackendKind::NdArray => Device::ndarray(),
            #[cfg(feature = "flex")]
            BackendKind::Flex => Device::flex(),
            #[cfg(feature = "tch")]
            BackendKind::Tch => Device::libtorch(),
            #[allow(unreachable_patterns)]
            other => unreachable!("{} is checked to be compiled in", other.name()),
        }
    }
}

#[cfg(feature = "tch")]
fn tch_device(spec: DeviceSpec) -> Device {
    match spec {
        DeviceSpec::Cpu => Device::libtorch(),
        DeviceSpec::Cuda(index) => Device::libtorch_cuda(index),
        DeviceSpec::Mps => Device::libtorch_mps(),
    }
}

#[cfg(not(feature = "tch"))]
fn tch_device(_: DeviceSpec) -> Device {
    unreachable!("tch is checked to be compiled in")
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = BackendError;

    fn from_str(name: &str) -> Result<Self, BackendError> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| BackendError::UnknownBackend(name.to_string()))
    }
}

/// Stored as its `--device` spelling (`cpu`, `cuda:0`, `mps`).
impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for DeviceSpec {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, BackendError> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "mps" => Ok(DeviceSpec::Mps),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| BackendError::UnknownDevice(s.to_string())),
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Mps => f.write_str("mps"),
        }
    }
}

/// Every compiled-in CPU backend with its device, for tests that must hold
/// on each of them.
pub fn test_devices() -> Vec<(BackendKind, Device)> {
    BackendKind::compiled()
        .into_iter()
        .filter_map(|b| b.device(DeviceSpec::Cpu).ok().map(|d| (b, d)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print_back() {
        for s in ["cpu", "cuda:0", "cuda:3", "mps"] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap().to_string(), s);
        }
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert!("gpu".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        let stored = serde_json::to_string(&DeviceSpec::Cuda(2)).unwrap();
        assert_eq!(stored, "\"cuda:2\"");
        assert_eq!(
            serde_json::from_str::<DeviceSpec>(&stored).unwrap(),
            DeviceSpec::Cuda(2)
        );
        assert!(serde_json::from_str::<DeviceSpec>("\"gpu\"").is_err());
    }

    #[test]
    fn backend_names_are_the_same_everywhere() {
        for backend in BackendKind::ALL {
            assert_eq!(backend.name().parse::<BackendKind>().unwrap(), backend);
            let json = serde_json::to_string(&backend).unwrap();
            assert_eq!(json, format!("\"{}\"", backend.name()));
        }
    }

    #[test]
    fn unknown_backend_lists_the_choices() {
        let err = "wgpu".parse::<BackendKind>().unwrap_err().to_string();
        assert!(err.contains("ndarray, flex, tch"), "{err}");
    }

    #[test]
    fn a_cpu_backend_refuses_cuda() {
        let backend = BackendKind::compiled()[0];
        if backend != BackendKind::Tch {
            let err = backend.device(DeviceSpec::Cuda(0)).unwrap_err();
            assert!(matches!(err, BackendError::CpuOnly { .. }));
        }
    }

    #[test]
    fn a_missing_backend_names_its_feature() {
        if let Some(missing) = BackendKind::ALL.into_iter().find(|b| !b.is_compiled()) {
            let err = missing.device(DeviceSpec::Cpu).unwrap_err().to_string();
            assert!(
                err.contains(&format!("--features {}", missing.name())),
                "{err}"
            );
        }
    }

    #[test]
    #[cfg(not(all(target_os = "macos", target_arch = "aarch64")))]
    fn mps_is_refused_off_a_mac() {
        let backend = BackendKind::compiled()[0];
        assert!(matches!(
            backend.device(DeviceSpec::Mps),
            Err(BackendError::MpsUnavailable { .. })
        ));
    }

    #[test]
    fn at_least_one_backend_is_compiled_for_tests() {
        assert!(!test_devices().is_empty());
    }
}
