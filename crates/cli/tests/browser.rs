//! The web app in a real browser (headless Chromium through chromedriver):
//! a stroke drawn with pointer actions gets an answer, an MNIST test image
//! chosen as a file gets `mnist predict`'s answer, and a confusion-matrix
//! cell opens as many thumbnails as `metrics.json` counts. Screenshots of
//! both pages go to $MNIST_SCREENSHOTS (default: the target's tmp folder).
//!
//! `MNIST_BROWSER_RUN=DIR` shows a finished run of yours (its
//! model.safetensors and metrics.json) instead of the small run the test
//! trains: the README's screenshots are of a real model.
//!
//! Without Chromium the test says so and passes, except under `CI=true`,
//! where a browser that cannot start is a failure.

#![cfg(feature = "serve")]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::server::{Server, predict, test_image_png, trained_run};
use common::webdriver::{Browser, chromium};

fn browser() -> Option<Browser> {
    match chromium() {
        Ok(browser) => Some(browser),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and the browser test cannot run: {why}")
        }
        Err(why) => {
            eprintln!("skipping the browser test: {why}");
            None
        }
    }
}

/// A finished run's model and reports, copied to `to`.
fn copy_run(from: &std::path::Path, to: &std::path::Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for file in ["model.safetensors", "metrics.json", "progress.json"] {
        if from.join(file).is_file() {
            std::fs::copy(from.join(file), to.join(file)).unwrap();
        }
    }
    to.to_path_buf()
}

fn screenshots() -> PathBuf {
    std::env::var_os("MNIST_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"))
}

/// The verdict's class once the page shows an answer from `source`.
fn answer_from(browser: &Browser, source: &str) -> (usize, Vec<f64>) {
    browser.wait_for(&format!("an answer from the {source}"), || {
        let verdict = browser.script(
            "const v = document.querySelector('#verdict'); \
             return [v.dataset.source || null, v.dataset.prediction || null, v.dataset.probabilities || null];",
            serde_json::json!([]),
        );
        (verdict[0] == source).then(|| {
            let class = verdict[1].as_str().unwrap().parse().unwrap();
            let probabilities = serde_json::from_str(verdict[2].as_str().unwrap()).unwrap();
            (class, probabilities)
        })
    })
}

#[test]
fn the_page_answers_drawings_and_files_and_opens_confusion_cells() {
    let Some(browser) = browser() else { return };
    let temp = tempfile::tempdir().unwrap();
    let runs = temp.path().join("runs");
    let run = match std::env::var_os("MNIST_BROWSER_RUN") {
        Some(yours) => copy_run(&PathBuf::from(yours), &runs.join("small")),
        None => trained_run(&runs, "small"),
    };
    let server = Server::start(&["--runs", runs.to_str().unwrap()]);
    let shots = screenshots();

    // Draw: one stroke, an answer appears with the 28×28 the model saw.
    browser.goto(&format!("{}/#/draw", server.url));
    browser.wait_for("ten probability bars", || {
        (browser.script(
            "return document.querySelectorAll('#bars li').length",
            serde_json::json!([]),
        ) == 10)
            .then_some(())
    });
    let pad = browser.find("#pad");
    browser.stroke(&pad, (-10, -90), &[(0, -40), (5, 0), (5, 45), (8, 90)]);
    let (drawn, probabilities) = answer_from(&browser, "drawing");
    assert!(drawn < 10);
    assert!((probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-3);
    let seen_ink = browser.script(
        "const d = document.querySelector('#seen').getContext('2d').getImageData(0, 0, 28, 28).data; \
         let ink = 0; for (let i = 0; i < d.length; i += 4) ink += d[i] > 64; return ink;",
        serde_json::json!([]),
    );
    assert!(
        seen_ink.as_u64().unwrap() > 20,
        "the model's view shows the stroke: {seen_ink}"
    );

    // A test image chosen as a file: the same answer as `mnist predict`.
    browser.click(&browser.find("#clear"));
    let image = test_image_png(temp.path(), 0);
    let (expected, expected_p) =
        predict(&run.join("model.safetensors"), std::slice::from_ref(&image))[0];
    browser.send_keys(&browser.find("#file"), image.to_str().unwrap());
    let (class, probabilities) = answer_from(&browser, "file");
    assert_eq!(class, expected, "the page and mnist predict disagree");
    assert!((probabilities[class] - expected_p).abs() < 1e-4);
    browser.screenshot(&shots, "serve-draw.png");

    // A run's page: click the largest off-diagonal cell.
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("metrics.json")).unwrap()).unwrap();
    let matrix: Vec<Vec<u64>> =
        serde_json::from_value(metrics["confusion_matrix"].clone()).unwrap();
    let (count, truth, predicted) = (0..10)
        .flat_map(|t| (0..10).filter(move |&p| p != t).map(move |p| (t, p)))
        .map(|(t, p)| (matrix[t][p], t, p))
        .filter(|&(c, _, _)| c <= 100)
        .max()
        .unwrap();
    assert!(count > 0, "a one-epoch run makes mistakes");
    browser.goto(&format!("{}/#/runs/small", server.url));
    let cell = browser.find(&format!(
        "#confusion td[data-truth='{truth}'][data-predicted='{predicted}'] button"
    ));
    browser.click(&cell);
    let shown = browser.wait_for("the cell's thumbnails", || {
        let n = browser
            .script(
                "return document.querySelectorAll('#thumbs img').length",
                serde_json::json!([]),
            )
            .as_u64()
            .unwrap();
        (n > 0).then_some(n)
    });
    assert_eq!(shown, count, "thumbnails of cell ({truth}, {predicted})");
    browser.wait_for("the thumbnails to load", || {
        browser
            .script(
                "return [...document.querySelectorAll('#thumbs img')].every(i => i.complete && i.naturalWidth === 28)",
                serde_json::json!([]),
            )
            .as_bool()
            .unwrap()
            .then_some(())
    });
    browser.window(1200, 1500);
    browser.script(
        "document.querySelector('#confusion-block').scrollIntoView({block: 'start'})",
        serde_json::json!([]),
    );
    browser.screenshot(&shots, "serve-run.png");
    browser.window(1200, 700);

    // The runs table, and the drawing page at phone width.
    browser.goto(&format!("{}/#/runs", server.url));
    browser.find("#runs-table tbody tr[data-run='small']");
    browser.screenshot(&shots, "serve-runs.png");

    // A run that starts training while the page is open appears on its own
    // and its page follows its progress file.
    let live = runs.join("live");
    std::fs::create_dir_all(&live).unwrap();
    let progress = |step: u32| {
        serde_json::json!({
            "state": "training", "epoch": 2, "epochs": 5, "step": step, "steps": 100, "loss": 0.25,
            "history": [{"epoch": 1, "train_loss": 0.5, "test_accuracy": 0.9}],
            "updated": "2026-11-30T12:00:00+00:00"
        })
        .to_string()
    };
    std::fs::write(live.join("progress.json"), progress(40)).unwrap();
    browser.find("#runs-table tbody tr[data-run='live'] .status.training");
    browser.goto(&format!("{}/#/runs/live", server.url));
    let status_says = |text: &str| {
        browser.wait_for(&format!("the status line to say {text:?}"), || {
            let line = browser.script(
                "return document.querySelector('#run-status').textContent",
                serde_json::json!([]),
            );
            line.as_str().unwrap().contains(text).then_some(())
        })
    };
    status_says("epoch 2 of 5, step 40 of 100");
    std::fs::write(live.join("progress.json"), progress(60)).unwrap();
    status_says("step 60 of 100");

    // Two runs' curves overlaid.
    browser.goto(&format!("{}/#/runs", server.url));
    for id in ["small", "live"] {
        browser.click(&browser.find(&format!(
            "#runs-table tr[data-run='{id}'] input[type=checkbox]"
        )));
    }
    browser.click(&browser.find("#compare:not([disabled])"));
    browser.wait_for("a legend entry per run", || {
        let legend = browser.script(
            "return [...document.querySelectorAll('#compare-legend li')].map(li => li.textContent)",
            serde_json::json!([]),
        );
        (legend == serde_json::json!(["small", "live"])).then_some(())
    });
    browser.window(390, 844);
    browser.goto(&format!("{}/#/draw", server.url));
    let pad = browser.find("#pad");
    let fits = browser.script(
        "const r = document.querySelector('#pad').getBoundingClientRect(); \
         return r.right <= document.documentElement.clientWidth && document.documentElement.scrollWidth <= window.innerWidth;",
        serde_json::json!([]),
    );
    assert_eq!(fits, true, "the page fits a phone's width");
    browser.stroke(&pad, (0, -60), &[(0, 0), (0, 60)]);
    answer_from(&browser, "drawing");
    let phone = browser.screenshot(&shots, "serve-phone.png");
    let picture = image::open(&phone).unwrap();
    assert!(picture.width() > 0);
}
