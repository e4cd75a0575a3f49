//! The `mnist` binary end to end on small subsets of real MNIST.

#![allow(clippy::unwrap_used)]

mod common;

use common::{fails, mnist, ok};
use serde_json::Value;

#[test]
fn train_writes_every_output_and_the_notebooks_lines() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = ok(mnist()
        .args([
            "train",
            "--epochs",
            "2",
            "--batch-size",
            "100",
            "--train-limit",
            "800",
        ])
        .args(["--test-limit", "300", "--out"])
        .arg(&run));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // 8 steps an epoch: the notebook's line every 2 steps.
    assert!(
        stdout.contains("Epoch [1/2], Step [2/8], Loss: "),
        "{stdout}"
    );
    assert!(
        stdout.contains("Epoch [2/2], Step [8/8], Loss: "),
        "{stdout}"
    );
    assert_eq!(stdout.matches("], Loss: ").count(), 8, "{stdout}");
    assert!(
        stdout.contains("(conv1): Conv2d(1, 16, kernel_size=(5, 5)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Accuracy of the network on the 300 test images"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Hyper-parameters: num_epochs=2, batch_size=100"),
        "{stdout}"
    );

    for file in [
        "model.safetensors",
        "metrics.json",
        "confusion_matrix.png",
        "curves.png",
    ] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    for png in ["confusion_matrix.png", "curves.png"] {
        image::open(run.join(png)).unwrap_or_else(|e| panic!("{png} does not decode: {e}"));
    }
    for epoch in ["epoch-0001", "epoch-0002"] {
        for file in ["model.safetensors", "optimizer.bpk", "state.json"] {
            assert!(
                run.join("checkpoints").join(epoch).join(file).is_file(),
                "{epoch}/{file}"
            );
        }
    }
    let metrics: Value =
        serde_json::from_slice(&std::fs::read(run.join("metrics.json")).unwrap()).unwrap();
    for key in [
        "test_accuracy",
        "epochs",
        "train_seconds",
        "backend",
        "hyper_parameters",
        "confusion_matrix",
        "history",
    ] {
        assert!(metrics.get(key).is_some(), "metrics.json lacks {key}");
    }
    assert_eq!(metrics["epochs"], 2);
    assert_eq!(metrics["history"].as_array().unwrap().len(), 2);
    let total: u64 = metrics["confusion_matrix"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
        .sum();
    assert_eq!(total, 300);

    // The saved weights evaluate to the same accuracy, and --json is machine-readable.
    let eval = ok(mnist()
        .args(["eval", "--test-limit", "300", "--json", "--weights"])
        .arg(run.join("model.safetensors"))
        .arg("--out")
        .arg(dir.path().join("eval")));
    let report: Value = serde_json::from_slice(&eval.stdout).expect("eval --json prints JSON");
    assert_eq!(report["test_accuracy"], metrics["test_accuracy"]);
    assert!(dir.path().join("eval/confusion_matrix.png").is_file());
}

#[test]
fn pytorch_exported_weights_evaluate() {
    // The model crate's fixture; $MNIST_GOLDEN_DIR overrides it, as for
    // the model crate's parity tests.
    let golden = std::env::var_os("MNIST_GOLDEN_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/golden")
        })
        .join("seed_cnn.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let out = ok(mnist()
        .args(["eval", "--test-limit", "100", "--weights"])
        .arg(&golden)
        .arg("--out")
        .arg(dir.path()));
    // An untrained PyTorch-initialised network: it loads and is near chance.
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("Accuracy of the network on the 100 test images")
    );
}

#[test]
fn bad_flags_fail_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--batch-size", "0"], "--batch-size"),
        (&["--lr", "-0.1"], "--lr"),
        (&["--gamma", "1.5"], "--gamma"),
        (&["--epochs", "0"], "--epochs"),
        (
            &["--backend", "wgpu"],
            "possible values: ndarray, flex, tch",
        ),
        (&["--device", "cuda:0"], "CPU only"),
    ];
    for (flags, expected) in cases {
        let run = dir.path().join("never");
        let stderr = fails(mnist().arg("train").args(flags).arg("--out").arg(&run));
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
        assert!(!run.exists(), "{flags:?}: nothing may be created");
    }
}

#[test]
fn tch_without_libtorch_says_how_to_get_it() {
    // The default build has no libtorch; asking for it must explain the set-up.
    let out = mnist().args(["backends"]).output().unwrap();
    if String::from_utf8_lossy(&out.stdout).contains("tch      not compiled in") {
        let stderr = fails(mnist().args(["train", "--backend", "tch"]));
        assert!(
            stderr.contains("--features tch") && stderr.contains("LIBTORCH"),
            "{stderr}"
        );
    }
}

#[test]
fn bad_weights_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"not safetensors").unwrap();
    let stderr = fails(mnist().args(["eval", "--weights"]).arg(&bad));
    assert!(
        stderr.contains("bad.safetensors") && stderr.contains("not a valid safetensors"),
        "{stderr}"
    );
}

#[test]
fn summary_prints_the_architecture() {
    let out = ok(mnist().arg("summary"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("(fc1): Linear(in_features=1568, out_features=100, bias=True)"),
        "{stdout}"
    );
    assert!(stdout.contains("Total parameters: 171158"), "{stdout}");
}

#[test]
fn divergence_names_the_step_and_suggests_a_lower_lr() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = fails(
        mnist()
            .args([
                "train",
                "--lr",
                "1e12",
                "--epochs",
                "2",
                "--batch-size",
                "50",
            ])
            .args(["--train-limit", "500", "--test-limit", "50", "--out"])
            .arg(dir.path().join("run")),
    );
    assert!(stderr.contains("training diverged"), "{stderr}");
    assert!(stderr.contains("step "), "{stderr}");
    assert!(stderr.contains("try --lr 100000000000"), "{stderr}");
}

#[test]
fn bench_reports_every_number_as_json() {
    let out = ok(mnist().args([
        "bench",
        "--quick",
        "--batch-size",
        "16",
        "--backend",
        "flex",
        "--json",
    ]));
    let report: Value = serde_json::from_slice(&out.stdout).expect("bench --json prints JSON");
    let r = &report["results"][0];
    assert_eq!(r["backend"], "flex");
    assert_eq!(r["model"], "seed");
    for key in [
        "ms_per_step",
        "epoch_s",
        "projected_run_s",
        "train_images_per_s",
        "inference_images_per_s",
    ] {
        assert!(r[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {r}");
    }
    // The notebook's 5 epochs of 60,000 / 16 steps.
    let epoch = r["epoch_s"].as_f64().unwrap();
    assert!((r["projected_run_s"].as_f64().unwrap() - 5.0 * epoch).abs() < 1e-9 * epoch);
    assert!((epoch - 3750.0 * r["ms_per_step"].as_f64().unwrap() / 1e3).abs() < 1e-9 * epoch);
    // The machine it ran on, so the numbers can be compared across machines.
    let machine = &report["machine"];
    assert!(
        machine["threads"].as_u64().is_some_and(|t| t >= 1),
        "{machine}"
    );
    assert_eq!(machine["arch"], std::env::consts::ARCH);
    assert!(
        machine["cpu"].as_str().is_some_and(|c| !c.is_empty()),
        "{machine}"
    );
    assert!(machine["simd"].is_array(), "{machine}");
}

#[test]
fn bench_times_a_recipes_model() {
    let out = ok(mnist().args([
        "bench",
        "--quick",
        "--recipe",
        "hvc",
        "--batch-size",
        "4",
        "--backend",
        "flex",
        "--json",
    ]));
    let report: Value = serde_json::from_slice(&out.stdout).expect("bench --json prints JSON");
    let r = &report["results"][0];
    assert_eq!(r["model"], "hvc");
    assert_eq!(r["batch_size"], 4);
    let epoch = r["epoch_s"].as_f64().unwrap();
    assert!((r["projected_run_s"].as_f64().unwrap() - 300.0 * epoch).abs() < 1e-9 * epoch);
    // Each of HVC's nine convolutions timed alone, beside the GEMM peak.
    assert!(r["gemm_gflops"].as_f64().unwrap() > 0.0);
    let layers = r["layers"].as_array().unwrap();
    let names: Vec<&str> = layers.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        (0..9).map(|i| format!("convs.{i}")).collect::<Vec<_>>()
    );
    assert_eq!(layers[0]["input"], "1×28×28");
    assert_eq!(layers[8]["input"], "144×12×12");
    for layer in layers {
        let forward = layer["forward_gflops"].as_f64().unwrap();
        let train = layer["train_gflops"].as_f64().unwrap();
        assert!(forward > 0.0 && train > 0.0, "{layer}");
    }
}

#[test]
fn a_corrupt_data_file_fails_with_its_name() {
    let data = tempfile::tempdir().unwrap();
    let real = common::data_dir();
    for name in [
        "train-images-idx3-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        std::fs::copy(real.join(name), data.path().join(name)).unwrap();
    }
    // A label file cut short: gzip stream truncated mid-way.
    let labels = std::fs::read(real.join("train-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(
        data.path().join("train-labels-idx1-ubyte.gz"),
        &labels[..labels.len() / 2],
    )
    .unwrap();
    let out = data.path().join("run");
    let stderr = fails(
        mnist()
            .args(["train", "--data-dir"])
            .arg(data.path())
            .arg("--out")
            .arg(&out),
    );
    assert!(stderr.contains("train-labels-idx1-ubyte.gz"), "{stderr}");
    assert!(
        !out.exists(),
        "no run directory for a run that could not start"
    );
}

#[test]
fn an_unwritable_out_fails_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let stderr = fails(
        mnist()
            .args(["train", "--train-limit", "100", "--out"])
            .arg(file.join("run")),
    );
    assert!(
        stderr.contains("cannot create the run directory"),
        "{stderr}"
    );
    assert!(!stderr.contains("Epoch ["), "{stderr}");
}

#[test]
fn bench_off_the_cpu_names_the_backend_it_needs() {
    let stderr = fails(mnist().args([
        "bench",
        "--quick",
        "--backend",
        "flex",
        "--device",
        "cuda:0",
    ]));
    assert!(
        stderr.contains("use `--backend tch --device cuda:0`"),
        "{stderr}"
    );
    let backends = String::from_utf8(ok(mnist().arg("backends")).stdout).unwrap();
    if !backends.contains("tch      compiled in") {
        let stderr = fails(mnist().args(["bench", "--quick", "--device", "cuda:0"]));
        assert!(stderr.contains("rebuild with --features tch"), "{stderr}");
    }
}

#[test]
fn bench_with_a_python_that_cannot_run_says_so() {
    let stderr = fails(mnist().args([
        "bench",
        "--quick",
        "--batch-size",
        "8",
        "--backend",
        "flex",
        "--python",
        "/nonexistent/python3",
    ]));
    assert!(
        stderr.contains("cannot run /nonexistent/python3"),
        "{stderr}"
    );
}
