//! Parity with `torch.optim.RAdam(decoupled_weight_decay=True)` and a
//! per-epoch `ExponentialLR` on the golden trajectory in `tests/golden/` (24 steps).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use mnist_optim::{LrSchedule, RAdamConfig, RunSchedule};
use serde_json::Value;

#[derive(Module, Debug)]
struct Point {
    p: Param<Tensor<1>>,
}

/// The fixture kept beside this test (`tests/golden/README.md`), or the one
/// in `$MNIST_GOLDEN_DIR` when set.
fn golden() -> Value {
    let dir = std::env::var_os("MNIST_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden"));
    let path = dir.join("radam_decoupled.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (MNIST_GOLDEN_DIR points elsewhere?)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn radam_follows_pytorchs_trajectory() {
    let g = golden();
    #[allow(deprecated)]
    let device = Device::ndarray().autodiff();
    let tensor =
        |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v.clone(), [v.len()]), &device);
    let (c, t) = (tensor(floats(&g["c"])), tensor(floats(&g["t"])));
    let mut point = Point {
        p: Param::from_tensor(tensor(floats(&g["p0"]))),
    };

    let mut optim = RAdamConfig::new()
        .with_beta_1(g["beta1"].as_f64().unwrap())
        .with_beta_2(g["beta2"].as_f64().unwrap())
        .with_epsilon(g["eps"].as_f64().unwrap())
        .with_weight_decay(g["weight_decay"].as_f64().unwrap())
        .init();
    let steps_per_epoch = g["steps_per_epoch"].as_u64().unwrap() as usize;
    let trajectory = g["trajectory"].as_array().unwrap();
    assert_eq!(trajectory.len(), 24);
    let schedule = RunSchedule {
        lr: g["lr"].as_f64().unwrap(),
        schedule: LrSchedule::Exponential {
            gamma: g["gamma"].as_f64().unwrap(),
        },
        steps_per_epoch,
        epochs: trajectory.len().div_ceil(steps_per_epoch),
    };
    let mut worst = 0.0f64;
    for (i, expected) in trajectory.iter().enumerate() {
        let lr = schedule.lr(i / steps_per_epoch, i % steps_per_epoch);
        assert_eq!(
            lr,
            expected["lr_used"].as_f64().unwrap(),
            "step {}: lr",
            i + 1
        );

        // f(p) = Σ c·(p − t)²
        let diff = point.p.val() - t.clone();
        let loss = (diff.clone() * diff * c.clone()).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &point);
        point = optim.step(lr, point, grads);

        let got: Vec<f32> = point.p.val().into_data().try_into_vec_as::<f32>().unwrap();
        for (j, (a, b)) in got.iter().zip(floats(&expected["params"])).enumerate() {
            let rel = f64::from((a - b).abs()) / f64::from(b.abs()).max(1e-3);
            worst = worst.max(rel);
            assert!(
                rel <= 1e-5,
                "step {} param {j}: {a} vs PyTorch {b} (relative {rel:e})",
                i + 1
            );
        }
    }
    eprintln!("24 steps, worst relative difference {worst:e}");
}

#[test]
fn state_survives_a_save_and_load() {
    #[allow(deprecated)]
    let device = Device::ndarray().autodiff();
    let make = || Point {
        p: Param::from_tensor(Tensor::<1>::from_data(
            TensorData::new(vec![1.0f32, -2.0], [2]),
            &device,
        )),
    };
    let step = |optim: &mut burn::optim::ModuleOptimizer, point: Point| {
        let loss = (point.p.val() * point.p.val()).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &point);
        optim.step(0.01, point, grads)
    };
    // Uninterrupted: 8 steps.
    let mut a_optim = RAdamConfig::new().init();
    let mut a = make();
    for _ in 0..8 {
        a = step(&mut a_optim, a);
    }
    // Interrupted after 4: save, load into a fresh optimizer, 4 more.
    let mut b_optim = RAdamConfig::new().init();
    let mut b = Point { p: make().p };
    let b_id = b.p.id;
    for _ in 0..4 {
        b = step(&mut b_optim, b);
    }
    let bytes = b_optim.into_bytes().unwrap();
    let mut resumed = RAdamConfig::new().init().from_bytes(bytes).unwrap();
    assert_eq!(b.p.id, b_id);
    for _ in 0..4 {
        b = step(&mut resumed, b);
    }
    let (va, vb): (Vec<f32>, Vec<f32>) = (
        a.p.val().into_data().try_into_vec_as::<f32>().unwrap(),
        b.p.val().into_data().try_into_vec_as::<f32>().unwrap(),
    );
    assert_eq!(va, vb, "resumed optimizer must continue exactly");
}
