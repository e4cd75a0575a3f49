//! `mnist serve` over HTTP: answers that match `mnist predict` under
//! concurrent load, every bad request refused with a named problem, run ids
//! that cannot leave `--runs`, live and half-written runs, Ctrl-C.

#![cfg(feature = "serve")]
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::server::{Server, get, get_json, post, predict, test_image_png, trained_run};

#[test]
fn concurrent_predictions_each_match_mnist_predict_on_the_same_image() {
    let temp = tempfile::tempdir().unwrap();
    let run = trained_run(&temp.path().join("runs"), "small");
    let weights = run.join("model.safetensors");
    let images: Vec<_> = (0..48).map(|i| test_image_png(temp.path(), i)).collect();
    let expected = predict(&weights, &images);

    let server = Arc::new(Server::start(&["--weights", weights.to_str().unwrap()]));
    let threads: Vec<_> = images
        .iter()
        .cloned()
        .map(|path| {
            let server = server.clone();
            std::thread::spawn(move || {
                let png = std::fs::read(&path).unwrap();
                post(&format!("{}/api/predict", server.url), "image/png", &png)
            })
        })
        .collect();
    let mut classes = std::collections::HashSet::new();
    for ((thread, (class, probability)), path) in threads.into_iter().zip(&expected).zip(&images) {
        let (status, answer) = thread.join().unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["prediction"].as_u64().unwrap() as usize,
            *class,
            "{}",
            path.display()
        );
        let got = answer["probabilities"][*class].as_f64().unwrap();
        assert!(
            (got - probability).abs() < 1e-4,
            "{}: {got} vs {probability}",
            path.display()
        );
        assert_eq!(answer["input"].as_array().unwrap().len(), 28 * 28);
        classes.insert(*class);
    }
    assert!(
        classes.len() >= 5,
        "the images are different digits: {classes:?}"
    );
}

#[test]
fn bad_requests_get_a_json_error_that_names_the_problem() {
    let temp = tempfile::tempdir().unwrap();
    let run = trained_run(&temp.path().join("runs"), "small");
    let server = Server::start(&["--runs", temp.path().join("runs").to_str().unwrap()]);
    assert!(
        server
            .banner
            .iter()
            .any(|l| l.contains(&*run.to_string_lossy()) || l.contains("small")),
        "the newest finished run is the default model: {:?}",
        server.banner
    );
    let predict = format!("{}/api/predict", server.url);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("image/png", Vec::new(), 400, "empty"),
        (
            "image/png",
            b"\x89PNG\r\n\x1a\nnot really".to_vec(),
            400,
            "cannot read the picture",
        ),
        (
            "application/json",
            b"{\"pixels\": [[0, 1]".to_vec(),
            400,
            "malformed JSON",
        ),
        (
            "application/json",
            b"{\"pixels\": [[0, 1]]}".to_vec(),
            400,
            "28 rows",
        ),
        (
            "application/octet-stream",
            vec![0u8; 5 * 1024 * 1024],
            413,
            "limit",
        ),
    ];
    for (content_type, body, status, message) in cases {
        let (got, answer) = post(&predict, content_type, &body);
        assert_eq!(got, status, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(message), "{message:?} not in {error:?}");
    }
    let blank = {
        let mut png = Vec::new();
        image::GrayImage::from_pixel(64, 64, image::Luma([0]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        png
    };
    let (status, answer) = post(&predict, "image/png", &blank);
    assert_eq!(
        (
            status,
            answer["error"].as_str().unwrap().starts_with("no digit")
        ),
        (400, true)
    );
    // The server is still there after all of it.
    assert_eq!(get_json(&format!("{}/healthz", server.url))["status"], "ok");
}

#[test]
fn run_ids_cannot_reach_outside_the_runs_directory() {
    let temp = tempfile::tempdir().unwrap();
    let runs = temp.path().join("runs");
    trained_run(&runs, "small");
    std::fs::write(temp.path().join("metrics.json"), br#"{"secret": true}"#).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(temp.path(), runs.join("escape")).unwrap();
    let server = Server::start(&["--runs", runs.to_str().unwrap()]);
    for path in [
        "/api/runs/..",
        "/api/runs/..%2F",
        "/api/runs/%2E%2E",
        "/api/runs/%2e%2e%2f%2e%2e%2fetc",
        "/api/runs/..%2F..%2Fetc%2Fpasswd",
        "/api/runs/%2Fetc%2Fpasswd",
        "/api/runs/escape",
        "/api/runs/escape/images/0.png",
        "/api/runs/..%5C..%5Cwindows",
        "/api/runs/small%00",
    ] {
        let (status, body) = get(&format!("{}{path}", server.url));
        let body = String::from_utf8_lossy(&body);
        assert!(matches!(status, 400 | 404), "{path}: {status} {body}");
        assert!(!body.contains("secret"), "{path} leaked: {body}");
    }
    assert_eq!(
        get_json(&format!("{}/api/runs/small", server.url))["status"],
        "finished"
    );
    let listed = get_json(&format!("{}/api/runs", server.url));
    let ids: Vec<&str> = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["small"], "the symlink out is not listed");
}

#[test]
fn confusion_cells_list_the_test_images_their_counts_promise() {
    let temp = tempfile::tempdir().unwrap();
    let runs = temp.path().join("runs");
    let run = trained_run(&runs, "small");
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("metrics.json")).unwrap()).unwrap();
    let server = Server::start(&["--runs", runs.to_str().unwrap()]);
    let matrix = metrics["confusion_matrix"].as_array().unwrap();
    let mut total = 0;
    for (truth, row) in matrix.iter().enumerate() {
        for (predicted, count) in row.as_array().unwrap().iter().enumerate() {
            let cell = get_json(&format!(
                "{}/api/runs/small/confusion/{truth}/{predicted}",
                server.url
            ));
            assert_eq!(cell["count"], *count, "cell ({truth}, {predicted})");
            for case in cell["images"].as_array().unwrap() {
                let p = case["probabilities"].as_array().unwrap();
                let best = (0..p.len())
                    .max_by(|&a, &b| p[a].as_f64().unwrap().total_cmp(&p[b].as_f64().unwrap()))
                    .unwrap();
                assert_eq!(best, predicted);
            }
            total += count.as_u64().unwrap();
        }
    }
    assert_eq!(total, 500);
    let (status, png) = get(&format!("{}/api/runs/small/images/7.png", server.url));
    assert_eq!(status, 200);
    let picture = image::load_from_memory(&png).unwrap();
    assert_eq!((picture.width(), picture.height()), (28, 28));
    assert_eq!(
        get(&format!("{}/api/runs/small/images/500.png", server.url)).0,
        404
    );
    assert_eq!(
        get(&format!("{}/api/runs/small/confusion/10/0", server.url)).0,
        400
    );
}

#[test]
fn live_and_half_written_runs_are_served_without_a_crash() {
    let temp = tempfile::tempdir().unwrap();
    let runs = temp.path().join("runs");
    std::fs::create_dir_all(runs.join("live")).unwrap();
    std::fs::create_dir_all(runs.join("torn")).unwrap();
    std::fs::write(
        runs.join("live/progress.json"),
        br#"{"state": "training", "epoch": 2, "epochs": 5, "step": 40, "steps": 100, "loss": 0.3,
            "history": [{"epoch": 1, "train_loss": 0.5, "test_accuracy": 0.9}], "updated": "2026-11-30T12:00:00+00:00"}"#,
    )
    .unwrap();
    std::fs::write(
        runs.join("torn/metrics.json"),
        br#"{"test_accuracy": 0.98, "confusion_ma"#,
    )
    .unwrap();
    let server = Server::start(&["--runs", runs.to_str().unwrap()]);
    assert!(
        server.banner.iter().any(|l| l.contains("No weights")),
        "{:?}",
        server.banner
    );
    let live = get_json(&format!("{}/api/runs/live", server.url));
    assert_eq!(live["status"], "training");
    assert_eq!(live["progress"]["step"], 40);
    let torn = get_json(&format!("{}/api/runs/torn", server.url));
    assert!(
        torn["problems"][0]
            .as_str()
            .unwrap()
            .contains("metrics.json"),
        "{torn}"
    );
    assert_eq!(
        get(&format!("{}/api/runs/torn/confusion/0/0", server.url)).0,
        409
    );
    assert_eq!(
        get_json(&format!("{}/api/runs", server.url))["runs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (status, answer) = post(&format!("{}/api/predict", server.url), "image/png", b"x");
    assert_eq!(status, 503, "no model: {answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("cargo xtask train")
    );
}

#[test]
fn a_training_run_reports_its_progress_while_it_trains() {
    let temp = tempfile::tempdir().unwrap();
    let run = trained_run(&temp.path().join("runs"), "small");
    let progress: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("progress.json")).unwrap()).unwrap();
    assert_eq!(progress["state"], "finished");
    assert_eq!(progress["epoch"], 1);
    assert_eq!(progress["history"].as_array().unwrap().len(), 1);
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["recipe"], "notebook");
    assert!(
        metrics["validation"].is_null(),
        "no --val, and metrics.json says so"
    );
    assert_eq!(metrics["scored_on"], "test");
    assert!(metrics["finished"].as_str().unwrap().starts_with("20"));
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_the_server_cleanly() {
    let temp = tempfile::tempdir().unwrap();
    let server = Server::start(&["--runs", temp.path().to_str().unwrap()]);
    assert_eq!(get_json(&format!("{}/healthz", server.url))["status"], "ok");
    let (status, printed) = server.interrupt();
    assert!(status.success(), "{status:?}");
    assert_eq!(printed, vec!["Stopped."]);
}

#[test]
fn listening_beyond_this_machine_is_warned_about() {
    let temp = tempfile::tempdir().unwrap();
    let mut child = common::mnist()
        .args(["serve", "--addr", "0.0.0.0:0", "--runs"])
        .arg(temp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        line.contains("warning") && line.contains("other machines"),
        "{line}"
    );
}
