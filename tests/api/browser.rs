//! The browser front-ends in a real browser: Debian's headless Chromium, driven through
//! chromedriver (WebDriver) against the real hub on port 0 and fake providers. Each test also
//! fails on any error or Content-Security-Policy violation the page logs.
//!
//! `scripts/test.sh` installs `chromium` and `chromium-driver` when they are missing; set
//! `CHROMIUM` / `CHROMEDRIVER` to use others. With `SWITCHBOARD_SCREENSHOTS=<dir>` the tests
//! save the screenshots shown in the README (`docs/screenshots/`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::helpers::eventually;

/// How long a page may take to show what a test waits for.
const WAIT: Duration = Duration::from_secs(20);

pub struct Browser {
    pub client: Client,
    driver_url: String,
    session: String,
    _profile: tempfile::TempDir,
    _driver: tokio::process::Child,
}

fn tool(var: &str, default: &str) -> String {
    let path = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: scripts/test.sh installs Debian's chromium and chromium-driver \
         (or set {var})"
    );
    path
}

impl Browser {
    /// A fresh headless Chromium with its own profile, `width`×`height`.
    pub async fn start(width: u32, height: u32) -> Browser {
        let chromedriver = tool("CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = tool("CHROMIUM", "/usr/bin/chromium");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let driver_url = format!("http://127.0.0.1:{port}");
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions", "--disable-background-networking",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let capabilities = capabilities.as_object().unwrap().clone();
        let client = eventually("chromedriver to start a browser", || {
            let (url, capabilities) = (driver_url.clone(), capabilities.clone());
            async move {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&url)
                    .await
                    .ok()
            }
        })
        .await;
        // The window includes the browser's own bars: size it so the page gets width×height.
        let chrome = client
            .execute("return window.outerHeight - window.innerHeight", vec![])
            .await
            .unwrap()
            .as_u64()
            .unwrap_or(0) as u32;
        client
            .set_window_size(width, height + chrome)
            .await
            .unwrap();
        let session = client.session_id().await.unwrap().unwrap();
        Browser {
            client,
            driver_url,
            session,
            _profile: profile,
            _driver: driver,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The first element matching `css`, once it exists and is displayed.
    pub async fn shown(&self, css: &str) -> Element {
        let start = Instant::now();
        loop {
            if let Ok(found) = self.client.find_all(Locator::Css(css)).await {
                for e in found {
                    if e.is_displayed().await.unwrap_or(false) {
                        return e;
                    }
                }
            }
            if start.elapsed() > WAIT {
                self.fail(&format!("nothing shown matches `{css}`")).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `script` (a JS function body) returns something other than null, false or
    /// undefined, and returns it.
    pub async fn until(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        let start = Instant::now();
        loop {
            match self.client.execute(script, args.clone()).await {
                Ok(v) if !(v.is_null() || v == Value::Bool(false)) => return v,
                Ok(_) => {}
                Err(e) => self.fail(&format!("{what}: the script failed: {e}")).await,
            }
            if start.elapsed() > WAIT {
                self.fail(&format!("waited {WAIT:?} for {what}")).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for an element matching `css` whose text contains `text`.
    pub async fn text_appears(&self, css: &str, text: &str) -> Element {
        let start = Instant::now();
        loop {
            if let Ok(found) = self.client.find_all(Locator::Css(css)).await {
                for e in found {
                    if e.text().await.unwrap_or_default().contains(text) {
                        return e;
                    }
                }
            }
            if start.elapsed() > WAIT {
                self.fail(&format!("no `{css}` shows {text:?}")).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let e = self.shown(css).await;
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.shown(css).await.click().await.unwrap();
    }

    /// Signs in through the shared sign-in form.
    pub async fn sign_in(&self, email: &str, password: &str) {
        self.fill("#email", email).await;
        self.fill("#password", password).await;
        self.click("#sign-in").await;
    }

    /// Everything the page logged at error level, CSP violations included.
    pub async fn errors(&self) -> Vec<String> {
        let logs: Value = reqwest::Client::new()
            .post(format!(
                "{}/session/{}/se/log",
                self.driver_url, self.session
            ))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        logs["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Fails if the page logged errors, other than the `allowed` ones (expected failures of
    /// requests the test provokes).
    pub async fn assert_clean(&self, allowed: &[&str]) {
        let errors: Vec<String> = self
            .errors()
            .await
            .into_iter()
            .filter(|e| !allowed.iter().any(|a| e.contains(a)))
            .collect();
        assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
    }

    /// Saves a screenshot when `SWITCHBOARD_SCREENSHOTS` names a directory.
    pub async fn screenshot(&self, name: &str) {
        if let Ok(dir) = std::env::var("SWITCHBOARD_SCREENSHOTS") {
            let png = self.client.screenshot().await.unwrap();
            let path = PathBuf::from(dir).join(format!("{name}.png"));
            std::fs::write(&path, png).unwrap();
        }
    }

    async fn fail(&self, why: &str) -> ! {
        let errors = self.errors().await;
        let body = self
            .client
            .execute(
                "return document.body ? document.body.innerText : ''",
                vec![],
            )
            .await
            .unwrap_or_default();
        if let Ok(png) = self.client.screenshot().await {
            let path =
                std::env::temp_dir().join(format!("switchboard-failed-{}.png", self.session));
            let _ = std::fs::write(&path, png);
            eprintln!("screenshot: {}", path.display());
        }
        panic!("{why}\npage text: {body}\nbrowser errors: {errors:#?}");
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
