//! What machine a benchmark ran on: the CPU's name, the threads the
//! process may use and the vector instructions the GEMM kernels can pick.
//!
//! Step times move with the machine more than with most code changes (the
//! same binary's matrix products run AVX-512 kernels on one CPU and AVX2
//! kernels on another), so `mnist bench` prints this beside its numbers and
//! records it in its JSON.

use serde::{Deserialize, Serialize};

/// The machine a measurement was taken on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// The CPU's marketing name, as the operating system reports it.
    pub cpu: String,
    /// `std::env::consts::ARCH`.
    pub arch: String,
    /// Threads this process may run at once.
    pub threads: usize,
    /// The widest vector instruction sets the CPU offers that the GEMM
    /// kernels use, widest first (empty off x86-64).
    pub simd: Vec<String>,
}

impl Machine {
    /// This machine.
    pub fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| cpu_model(&text))
            .unwrap_or_else(|| "unknown CPU".to_string());
        Machine {
            cpu,
            arch: std::env::consts::ARCH.to_string(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            simd: simd_features(),
        }
    }

    /// One line for people: `AMD EPYC, x86_64, 2 threads, AVX2 + FMA (no AVX-512)`.
    pub fn describe(&self) -> String {
        let simd = if self.simd.is_empty() {
            String::from("no x86 vector extensions detected")
        } else {
            let mut listed = self.simd.join(" + ");
            if self.arch == "x86_64" && !self.simd.iter().any(|s| s == "AVX-512F") {
                listed.push_str(" (no AVX-512)");
            }
            listed
        };
        format!(
            "{}, {}, {} threads, {simd}",
            self.cpu, self.arch, self.threads
        )
    }
}

/// The first `model name` in Linux's `/proc/cpuinfo` text.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name" && !value.trim().is_empty()).then(|| value.trim().to_string())
    })
}

#[cfg(target_arch = "x86_64")]
fn simd_features() -> Vec<String> {
    [
        ("AVX-512F", std::arch::is_x86_feature_detected!("avx512f")),
        ("AVX2", std::arch::is_x86_feature_detected!("avx2")),
        ("FMA", std::arch::is_x86_feature_detected!("fma")),
    ]
    .into_iter()
    .filter(|(_, present)| *present)
    .map(|(name, _)| name.to_string())
    .collect()
}

#[cfg(not(target_arch = "x86_64"))]
fn simd_features() -> Vec<String> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_name_is_the_first_model_name_line() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 1\n\
                       model name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2\n\n\
                       processor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        // `model\t\t: 1` is not the name, and an empty name is no name.
        assert_eq!(cpu_model("model\t\t: 1\nmodel name\t:  \n"), None);
        assert_eq!(cpu_model(""), None);
    }

    #[test]
    fn an_x86_machine_without_avx512_says_so() {
        let machine = Machine {
            cpu: "AMD EPYC".into(),
            arch: "x86_64".into(),
            threads: 2,
            simd: vec!["AVX2".into(), "FMA".into()],
        };
        assert_eq!(
            machine.describe(),
            "AMD EPYC, x86_64, 2 threads, AVX2 + FMA (no AVX-512)"
        );
        let wider = Machine {
            simd: vec!["AVX-512F".into(), "AVX2".into(), "FMA".into()],
            ..machine.clone()
        };
        assert_eq!(
            wider.describe(),
            "AMD EPYC, x86_64, 2 threads, AVX-512F + AVX2 + FMA"
        );
        let arm = Machine {
            arch: "aarch64".into(),
            simd: Vec::new(),
            ..machine
        };
        assert!(
            arm.describe()
                .ends_with("no x86 vector extensions detected")
        );
    }

    #[test]
    fn this_machine_is_detected() {
        let machine = Machine::detect();
        assert!(machine.threads >= 1);
        assert_eq!(machine.arch, std::env::consts::ARCH);
        // AVX-512F machines all have AVX2 as well: the list is real detection.
        if machine.simd.iter().any(|s| s == "AVX-512F") {
            assert!(machine.simd.iter().any(|s| s == "AVX2"));
        }
    }
}
