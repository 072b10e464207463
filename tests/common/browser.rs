//! A real browser for the dashboard's tests: Debian's `chromium`, headless, driven over the
//! Chrome DevTools Protocol (a WebSocket on loopback). Keeps every console error, uncaught
//! exception and requested URL, so a test can say there were none and that nothing left
//! 127.0.0.1.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;
type Sink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

/// The chromium binary: `$IRIS_CHROMIUM`, else Debian's.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("IRIS_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        path.exists(),
        "{} not found: the dashboard's tests need Debian's chromium (scripts/test installs it: apt-get install chromium)",
        path.display()
    );
    path
}

/// One headless chromium with one page. Ends (killed, reaped) when dropped.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    sink: tokio::sync::Mutex<Sink>,
    pending: Pending,
    next: std::sync::atomic::AtomicU64,
    session: String,
    /// Every event of the page's session, in order.
    events: Arc<Mutex<Vec<Value>>>,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts chromium (no network but loopback is reached anyway: background services off)
    /// and opens a blank page with the console, log, network and page domains on.
    pub async fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--metrics-recording-only",
                "--window-size=1280,900",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let (found, url) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(at) = line.find("ws://") {
                    let _ = found.send(line[at..].trim().to_owned());
                    sent = true;
                }
            }
        });
        let url = url
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium printed no DevTools address within 60 s");
        let (socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let (sink, mut stream) = socket.split();
        let pending: Pending = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (reader_pending, reader_events) = (Arc::clone(&pending), Arc::clone(&events));
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if let Some(id) = value.get("id").and_then(Value::as_u64) {
                    if let Some(reply) = reader_pending.lock().unwrap().remove(&id) {
                        let _ = reply.send(value);
                    }
                } else {
                    reader_events.lock().unwrap().push(value);
                }
            }
        });
        let mut browser = Self {
            child,
            _profile: profile,
            sink: tokio::sync::Mutex::new(sink),
            pending,
            next: std::sync::atomic::AtomicU64::new(1),
            session: String::new(),
            events,
        };
        let target = browser
            .command(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = browser
            .command(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        for domain in [
            "Page.enable",
            "Runtime.enable",
            "Network.enable",
            "Log.enable",
        ] {
            browser.call(domain, json!({})).await;
        }
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
            )
            .await;
        browser
    }

    async fn command(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, reply);
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.sink
            .lock()
            .await
            .send(Message::Text(message.to_string().into()))
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(60), answer)
            .await
            .unwrap_or_else(|_| panic!("chromium did not answer {method} within 60 s"))
            .unwrap();
        assert!(
            answer.get("error").is_none(),
            "{method} failed: {}",
            answer["error"]
        );
        answer["result"].clone()
    }

    /// A command on the page.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.command(Some(&session), method, params).await
    }

    /// Opens `url` and waits until the page has loaded.
    pub async fn goto(&self, url: &str) {
        let before = self.events.lock().unwrap().len();
        self.call("Page.navigate", json!({"url": url})).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let loaded = self.events.lock().unwrap()[before..]
                .iter()
                .any(|event| event["method"] == "Page.loadEventFired");
            if loaded {
                return;
            }
            assert!(Instant::now() < deadline, "{url} did not load within 60 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The value of a JavaScript expression, or `None` when it threw or the page was
    /// navigating away meanwhile.
    pub async fn try_eval(&self, expression: &str) -> Option<Value> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, reply);
        let message = json!({
            "id": id,
            "sessionId": self.session,
            "method": "Runtime.evaluate",
            "params": {"expression": expression, "awaitPromise": true, "returnByValue": true},
        });
        self.sink
            .lock()
            .await
            .send(Message::Text(message.to_string().into()))
            .await
            .ok()?;
        let answer = tokio::time::timeout(Duration::from_secs(60), answer)
            .await
            .ok()?
            .ok()?;
        let result = answer.get("result")?;
        if result.get("exceptionDetails").is_some() {
            return None;
        }
        Some(result["result"]["value"].clone())
    }

    /// The value of a JavaScript expression (promises awaited).
    pub async fn eval(&self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression} threw: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy in the page.
    pub async fn wait_until(&self, what: &str, expression: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut pause = Duration::from_millis(5);
        loop {
            // A page that is navigating answers nothing: ask again.
            let value = self.try_eval(&format!("!!({expression})")).await;
            if value == Some(json!(true)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {expression}"
            );
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Clicks the element `selector` names (it must exist).
    pub async fn click(&self, selector: &str) {
        let clicked = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({}); if (!e) return false; e.click(); return true; }})()",
                json!(selector)
            ))
            .await;
        assert_eq!(clicked, json!(true), "nothing to click at {selector}");
    }

    /// Types `text` into the input `selector` names, as a person would (input events).
    pub async fn type_into(&self, selector: &str, text: &str) {
        let done = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({}); if (!e) return false; e.focus(); e.value = {}; e.dispatchEvent(new Event('input', {{bubbles: true}})); e.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()",
                json!(selector),
                json!(text)
            ))
            .await;
        assert_eq!(done, json!(true), "no input at {selector}");
    }

    /// Console errors, uncaught exceptions and error log entries so far.
    pub fn errors(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|event| match event["method"].as_str()? {
                "Runtime.exceptionThrown" => Some(event["params"]["exceptionDetails"].to_string()),
                "Runtime.consoleAPICalled" if event["params"]["type"] == "error" => {
                    Some(event["params"]["args"].to_string())
                }
                "Log.entryAdded" if event["params"]["entry"]["level"] == "error" => {
                    Some(event["params"]["entry"].to_string())
                }
                _ => None,
            })
            .collect()
    }

    /// Every URL the page requested so far.
    pub fn requested(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|event| event["method"] == "Network.requestWillBeSent")
            .filter_map(|event| {
                event["params"]["request"]["url"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }

    /// Asserts no console error and no request that left 127.0.0.1 (the page's own
    /// `data:` URLs aside).
    pub fn assert_clean(&self) {
        let errors = self.errors();
        assert!(errors.is_empty(), "console errors: {errors:#?}");
        let outside: Vec<String> = self
            .requested()
            .into_iter()
            .filter(|url| {
                !(url.starts_with("http://127.0.0.1:")
                    || url.starts_with("data:")
                    || url == "about:blank")
            })
            .collect();
        assert!(
            outside.is_empty(),
            "requests that left 127.0.0.1: {outside:#?}"
        );
    }

    /// A PNG of the page as it is.
    pub async fn screenshot(&self, path: &Path) {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let data = shot["data"].as_str().unwrap();
        let bytes = base64_decode(data);
        std::fs::write(path, bytes).unwrap();
    }
}

/// Standard base64 (the screenshot's encoding), without a crate for it.
fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0_u32;
    let mut bits = 0;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff).unwrap());
        }
    }
    out
}
