//! Just enough of the W3C WebDriver protocol to drive headless Chromium
//! through chromedriver: sessions, navigation, elements, pointer actions,
//! scripts and screenshots. Blocking, over the `ureq` client the project
//! already builds (a WebDriver crate would bring its own HTTP stack and
//! async runtime into the test build for these dozen calls).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key W3C gives element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver and the browser it drives, or why there is none.
pub fn chromium() -> Result<Browser, String> {
    let chromium = std::env::var("MNIST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let driver = std::env::var("MNIST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    if !Path::new(&chromium).is_file() {
        return Err(format!(
            "no Chromium at {chromium} (set MNIST_CHROMIUM, or apt-get install chromium chromium-driver)"
        ));
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let child = Command::new(&driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {driver}: {e} (apt-get install chromium-driver)"))?;
    let mut browser = Browser {
        agent: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into(),
        driver: child,
        url: format!("http://127.0.0.1:{port}"),
        session: String::new(),
    };
    let started = Instant::now();
    while browser.call("GET", "/status", None).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            return Err("chromedriver did not answer within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let profile = tempfile::tempdir().map_err(|e| e.to_string())?.keep();
    let capabilities = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1200,1000",
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    }}});
    let session = browser.call("POST", "/session", Some(capabilities))?;
    browser.session = session["sessionId"]
        .as_str()
        .ok_or_else(|| format!("no session: {session}"))?
        .to_string();
    Ok(browser)
}

/// A browser session.
pub struct Browser {
    agent: ureq::Agent,
    driver: Child,
    url: String,
    session: String,
}

/// An element of the page.
#[derive(Clone)]
pub struct Element(String);

impl Browser {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.url);
        let response = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body.unwrap_or_else(|| json!({})).to_string()),
        };
        let mut response = response.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let value: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if status != 200 {
            return Err(format!("{method} {path}: {status} {}", value["value"]));
        }
        Ok(value["value"].clone())
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Open `url`.
    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Resize the window (CSS pixels).
    pub fn window(&self, width: u32, height: u32) {
        self.session_call(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// The first element matching `css`, waiting up to 20 s for it.
    pub fn find(&self, css: &str) -> Element {
        self.wait_for(&format!("element {css}"), || {
            let path = format!("/session/{}/element", self.session);
            self.call(
                "POST",
                &path,
                Some(json!({"using": "css selector", "value": css})),
            )
            .ok()
            .and_then(|v| v[ELEMENT].as_str().map(|id| Element(id.to_string())))
        })
    }

    /// Run `script` (a function body; `arguments` holds `args`) in the page.
    pub fn script(&self, script: &str, args: Value) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Poll `check` until it gives a value, failing after 20 s.
    pub fn wait_for<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let started = Instant::now();
        loop {
            if let Some(found) = check() {
                return found;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "waited 20 s for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Click `element`.
    pub fn click(&self, element: &Element) {
        self.session_call("POST", &format!("/element/{}/click", element.0), None);
    }

    /// Type `text` into `element` (for a file input: the file's path).
    pub fn send_keys(&self, element: &Element, text: &str) {
        self.session_call(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        );
    }

    /// Press the mouse at `from` (pixels from the element's centre), move
    /// through `path` and release: one stroke, as Pointer Events.
    pub fn stroke(&self, element: &Element, from: (i64, i64), path: &[(i64, i64)]) {
        let mut actions = vec![
            json!({"type": "pointerMove", "origin": {ELEMENT: element.0}, "x": from.0, "y": from.1, "duration": 0}),
            json!({"type": "pointerDown", "button": 0}),
        ];
        for &(x, y) in path {
            actions.push(json!({"type": "pointerMove", "origin": {ELEMENT: element.0}, "x": x, "y": y, "duration": 20}));
        }
        actions.push(json!({"type": "pointerUp", "button": 0}));
        let body = json!({"actions": [{
            "type": "pointer", "id": "pen", "parameters": {"pointerType": "mouse"}, "actions": actions
        }]});
        self.session_call("POST", "/actions", Some(body));
    }

    /// Save a screenshot of the window as a PNG in `dir`.
    pub fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let encoded = self.session_call("GET", "/screenshot", None);
        let png = base64_decode(encoded.as_str().expect("a base64 string"));
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (with padding), as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .map(value)
        .collect();
    digits
        .chunks(4)
        .flat_map(|chunk| {
            let n =
                chunk.iter().fold(0u32, |n, &d| (n << 6) | u32::from(d)) << (6 * (4 - chunk.len()));
            let bytes = n.to_be_bytes();
            bytes[1..chunk.len()].to_vec()
        })
        .collect()
}
