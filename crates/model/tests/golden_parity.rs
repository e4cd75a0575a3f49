//! Parity with PyTorch 2.9 on the golden fixtures in `tests/golden/`: the seed CNN's
//! logits, loss and gradients for a fixed input, on every compiled CPU backend.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use burn::module::Param;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Int, Tensor, TensorData};
use mnist_model::backend::test_devices;
use mnist_model::{SeedCnn, SeedCnnConfig, load_weights};
use serde_json::Value;

/// The fixtures kept beside this test (`tests/golden/README.md`), or
/// `$MNIST_GOLDEN_DIR` when set.
fn golden_dir() -> PathBuf {
    let dir = std::env::var_os("MNIST_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden"));
    assert!(
        dir.join("seed_cnn_io.json").is_file(),
        "golden fixtures not found in {} (MNIST_GOLDEN_DIR points elsewhere?)",
        dir.display()
    );
    dir
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// x[b,0,h,w] = 2·sin(0.1·(b·784 + h·28 + w)), as the fixture says.
fn fixture_input(batch: usize) -> Vec<f32> {
    (0..batch * 784)
        .map(|i| 2.0 * (0.1 * i as f32).sin())
        .collect()
}

fn grad_stats<const D: usize>(
    param: &Param<Tensor<D>>,
    grads: &burn::tensor::Gradients,
) -> (f64, f64) {
    let g: Vec<f32> = param
        .val()
        .grad(grads)
        .unwrap()
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap();
    let sum = g.iter().map(|&v| f64::from(v)).sum();
    let l2 = g
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    (sum, l2)
}

#[test]
fn seed_cnn_matches_pytorch() {
    let dir = golden_dir();
    let io: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("seed_cnn_io.json")).unwrap())
            .unwrap();
    let labels: Vec<i64> = io["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let batch = labels.len();
    let expected_logits: Vec<f32> = io["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(f32s)
        .collect();
    let expected_loss = io["loss"].as_f64().unwrap();

    for (backend, device) in test_devices() {
        let device = device.autodiff();
        let model: SeedCnn = load_weights(
            SeedCnnConfig::new().init(0, &device),
            &dir.join("seed_cnn.safetensors"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let x = Tensor::<4>::from_data(
            TensorData::new(fixture_input(batch), [batch, 1, 28, 28]),
            &device,
        );
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [batch]), &device);

        let logits = model.forward(x);
        let got: Vec<f32> = logits.clone().into_data().try_into_vec_as::<f32>().unwrap();
        let worst = got
            .iter()
            .zip(&expected_logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst <= 1e-4, "{backend}: logits differ by {worst}");

        let loss = CrossEntropyLossConfig::new()
            .init(&device)
            .forward(logits, y);
        let got_loss = f64::from(loss.clone().into_scalar::<f32>());
        assert!(
            (got_loss - expected_loss).abs() <= 1e-5,
            "{backend}: loss {got_loss} vs {expected_loss}"
        );

        let grads = loss.backward();
        let stats = [
            ("conv1.weight", grad_stats(&model.conv1.weight, &grads)),
            (
                "conv1.bias",
                grad_stats(model.conv1.bias.as_ref().unwrap(), &grads),
            ),
            ("conv2.weight", grad_stats(&model.conv2.weight, &grads)),
            (
                "conv2.bias",
                grad_stats(model.conv2.bias.as_ref().unwrap(), &grads),
            ),
            ("fc1.weight", grad_stats(&model.fc1.weight, &grads)),
            (
                "fc1.bias",
                grad_stats(model.fc1.bias.as_ref().unwrap(), &grads),
            ),
            ("fc2.weight", grad_stats(&model.fc2.weight, &grads)),
            (
                "fc2.bias",
                grad_stats(model.fc2.bias.as_ref().unwrap(), &grads),
            ),
        ];
        for (name, (sum, l2)) in stats {
            let want = &io["grads"][name];
            let (want_sum, want_l2) = (want["sum"].as_f64().unwrap(), want["l2"].as_f64().unwrap());
            // The fixture's rule: sums absolutely, scaled by the l2 norm; norms relatively.
            assert!(
                (sum - want_sum).abs() <= 1e-3 * want_l2,
                "{backend} {name}: grad sum {sum} vs {want_sum}"
            );
            assert!(
                (l2 - want_l2).abs() <= 1e-3 * want_l2,
                "{backend} {name}: grad l2 {l2} vs {want_l2}"
            );
        }
        eprintln!("{backend}: logits within {worst:e}, loss {got_loss} (PyTorch {expected_loss})");
    }
}
