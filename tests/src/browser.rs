//! [`Browser`]: headless Chromium driven over WebDriver (Debian's `chromium-driver`, i.e.
//! `chromedriver`), spoken with this crate's own HTTP/1.1 client — no browser crate needed.
//!
//! [`ensure_chromium`] installs the Debian packages `chromium` and `chromium-driver` with
//! `apt-get` when `/usr/bin/chromium` or `/usr/bin/chromedriver` is missing (CI runs as root;
//! otherwise `sudo` is used). The browser runs with its own temporary profile, no GPU, no
//! sandbox (root in CI), no QUIC and no background networking: it talks to 127.0.0.1 only.
use crate::client::{Client, Request};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Chromium binary Debian's `chromium` package installs.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The WebDriver server Debian's `chromium-driver` package installs.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// W3C WebDriver's key for element references in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Install `chromium` and `chromium-driver` with apt-get when either binary is missing.
/// Panics (with apt's output) when that fails.
pub fn ensure_chromium() {
    if Path::new(CHROMIUM).is_file() && Path::new(CHROMEDRIVER).is_file() {
        return;
    }
    crate::apt_install(&["chromium", "chromium-driver"], true).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        Path::new(CHROMIUM).is_file() && Path::new(CHROMEDRIVER).is_file(),
        "chromium or chromedriver still missing after installing them"
    );
}

/// A headless Chromium session behind a `chromedriver` process on a free 127.0.0.1 port.
/// Dropping it ends the session (Chromium exits) and kills the driver by PID.
pub struct Browser {
    driver: Option<Child>,
    client: Client,
    session: String,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("driver", &self.client.addr())
            .field("session", &self.session)
            .finish()
    }
}

impl Browser {
    /// Install Chromium if needed, start `chromedriver`, open a headless session with a
    /// `width`×`height` window.
    pub fn start(width: u32, height: u32) -> Browser {
        ensure_chromium();
        let addr: SocketAddr = crate::free_addr();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={}", addr.port()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let profile = tempfile::Builder::new()
            .prefix("berth-chromium-")
            .tempdir()
            .expect("create a Chromium profile dir");
        let mut browser = Browser {
            driver: Some(driver),
            client: Client::new(addr).timeout(Duration::from_secs(60)),
            session: String::new(),
            _profile: profile,
        };
        browser.wait_driver();
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        }}});
        let v = browser.call("POST", "/session", Some(caps));
        browser.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("POST /session: no sessionId in {v}"))
            .to_string();
        browser
    }

    fn wait_driver(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = Client::new(self.client.addr())
                .fresh_connections()
                .timeout(Duration::from_secs(2))
                .try_send(&Request::get("/status"));
            if let Ok(r) = r {
                if r.json().is_ok_and(|v| v["value"]["ready"] == json!(true)) {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.driver.as_mut().map(Child::try_wait) {
                panic!("{CHROMEDRIVER} exited with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "{CHROMEDRIVER} not ready within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One WebDriver command; its `value`. Panics on an HTTP error or a WebDriver error.
    fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut req = Request::new(method, path);
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let r = self
            .client
            .try_send(&req)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let v = r
            .json()
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        assert!(
            r.status == 200,
            "WebDriver {method} {path}: {} {}",
            r.status,
            v["value"]
        );
        v["value"].clone()
    }

    fn session_call(&mut self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
    }

    /// Navigate to `url` and wait until the page has loaded.
    pub fn goto(&mut self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    /// The first element matching CSS `selector`, if any (no waiting).
    pub fn find(&mut self, selector: &str) -> Option<String> {
        let path = format!("/session/{}/elements", self.session);
        let v = self.call(
            "POST",
            &path,
            Some(json!({ "using": "css selector", "value": selector })),
        );
        v.as_array()?
            .first()
            .and_then(|e| e[ELEMENT_KEY].as_str())
            .map(str::to_string)
    }

    /// Poll [`Browser::find`] until `selector` matches (panics after `timeout`).
    pub fn wait_find(&mut self, selector: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.find(selector) {
                return e;
            }
            if Instant::now() > deadline {
                let url = self.session_call("GET", "/url", None);
                let html = self.execute("return document.documentElement.outerHTML", json!([]));
                let html = html.as_str().unwrap_or_default();
                panic!(
                    "no element {selector:?} within {timeout:?} on {url}; the page starts: {}",
                    &html[..html.len().min(2000)]
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Type `text` into element `element`.
    pub fn send_keys(&mut self, element: &str, text: &str) {
        self.session_call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Click element `element` (a real pointer click, as a user would).
    pub fn click(&mut self, element: &str) {
        self.session_call(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        );
    }

    /// Run `script` (a function body; `arguments[i]` are `args`) in the page; its return value.
    pub fn execute(&mut self, script: &str, args: Value) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// A PNG screenshot of the viewport.
    pub fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let v = self.session_call("GET", "/screenshot", None);
        let b64 = v.as_str().expect("the screenshot is a base64 string");
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("the screenshot is valid base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            // Ends Chromium; failures here must not hide the test's own panic.
            let _ = self.client.try_send(&Request::new("DELETE", &path));
        }
        if let Some(mut d) = self.driver.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}
