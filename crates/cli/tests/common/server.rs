//! A `mnist serve` process for the server's integration and browser tests,
//! and a blocking HTTP client for talking to it.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use super::{mnist, ok};

/// A running server, killed when dropped.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub url: String,
    /// What it printed before "Serving on".
    pub banner: Vec<String>,
    /// The rest of its stdout, read as it comes.
    rest: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Server {
    /// `mnist serve --addr 127.0.0.1:0 ARGS`, once it listens.
    pub fn start(args: &[&str]) -> Server {
        let mut child = mnist()
            .arg("serve")
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mnist serve starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut banner = Vec::new();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => match line.strip_prefix("Serving on ") {
                    Some(rest) => break rest.split('/').take(3).collect::<Vec<_>>().join("/"),
                    None => banner.push(line),
                },
                _ => {
                    let mut err = String::new();
                    child
                        .stderr
                        .take()
                        .unwrap()
                        .read_to_string(&mut err)
                        .unwrap();
                    panic!("mnist serve did not start:\n{}\n{err}", banner.join("\n"));
                }
            }
        };
        // Keep reading so the server never blocks on a full pipe.
        let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect());
        Server {
            child: Some(child),
            url,
            banner,
            rest: Some(rest),
        }
    }

    /// Send Ctrl-C (SIGINT) and wait for the process to end: its exit
    /// status and the lines it printed after "Serving on".
    #[cfg(unix)]
    pub fn interrupt(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let child = self.child.take().unwrap();
        super::interrupt(child.id());
        let out = child.wait_with_output().unwrap();
        (out.status, self.rest.take().unwrap().join().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// GET `url`: status and body.
pub fn get(url: &str) -> (u16, Vec<u8>) {
    let mut response = agent().get(url).call().expect("the server answers");
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_vec().unwrap())
}

/// GET `url` as JSON, insisting on 200.
pub fn get_json(url: &str) -> serde_json::Value {
    let (status, body) = get(url);
    assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// POST `body` as `content_type`: status and JSON body.
pub fn post(url: &str, content_type: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut response = agent()
        .post(url)
        .header("content-type", content_type)
        .send(body)
        .expect("the server answers");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, json)
}

/// Train a small run into `runs/name` (one epoch, 2,000 images, 500 test
/// images: a few seconds) and return its folder.
pub fn trained_run(runs: &Path, name: &str) -> PathBuf {
    let dir = runs.join(name);
    ok(mnist()
        .args([
            "train",
            "--epochs",
            "1",
            "--train-limit",
            "2000",
            "--test-limit",
            "500",
            "--batch-size",
            "100",
            "-q",
            "--out",
        ])
        .arg(&dir));
    dir
}

/// MNIST test image `index` as a PNG file in `dir`.
pub fn test_image_png(dir: &Path, index: usize) -> PathBuf {
    let test = mnist_data::load_test(mnist_data::Dataset::Mnist, &super::data_dir()).unwrap();
    let picture = image::GrayImage::from_raw(28, 28, test.image(index).to_vec()).unwrap();
    let path = dir.join(format!("test-{index}.png"));
    picture.save(&path).unwrap();
    path
}

/// `mnist predict --json` on `images`: each image's top class and its
/// probability.
pub fn predict(weights: &Path, images: &[PathBuf]) -> Vec<(usize, f64)> {
    let out = ok(mnist()
        .args(["predict", "--json", "--weights"])
        .arg(weights)
        .args(images));
    let answers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    answers
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let top = &a["top"][0];
            (
                top["class"].as_u64().unwrap() as usize,
                top["probability"].as_f64().unwrap(),
            )
        })
        .collect()
}
