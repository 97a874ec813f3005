//! The webhook: every live event of `GET /v1/events` POSTed as JSON to a URL the owner set
//! (`pilotctl set-webhook`), kept in `$PILOT_HOME/webhook.json` across restarts.
//!
//! A slow or dead webhook never slows the daemon: a forwarder task takes each event from its
//! own subscription and only `try_send`s it into a bounded queue (`[webhook] queue`); what does
//! not fit is dropped and counted. One sender task POSTs the queued events in order, each with
//! a per-request timeout and retries with exponential backoff, and counts what it gave up.
//! Plain `http://` only: a URL with another scheme is refused when it is set.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use crate::api::events::Subscription;
use crate::api::types::{ApiEvent, StreamEvent, WebhookStatus};
use crate::config::WebhookConfig;
use crate::error::PilotError;

/// The file in the state directory that holds the URL.
pub const WEBHOOK_FILE: &str = "webhook.json";
/// The longest pause between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Where events go: a parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as the owner gave it.
    pub url: String,
    /// `HOST:PORT` to connect to.
    authority: String,
    /// The `Host` header.
    host: String,
    /// Path and query.
    path: String,
}

impl Target {
    /// Parses `url`; anything but `http://HOST[:PORT][/PATH]` is refused with a hint.
    pub fn parse(url: &str) -> Result<Self, PilotError> {
        let bad = |why: String| {
            PilotError::invalid(
                why,
                "give an http:// URL, e.g. pilotctl set-webhook http://127.0.0.1:8080/events",
            )
        };
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| bad(format!("`{url}` is not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(bad(format!(
                    "webhook scheme `{other}` is not supported: only http:// (put a local \
                     forwarder in front of an https endpoint)"
                )))
            }
            None => return Err(bad(format!("`{url}` has no scheme"))),
        }
        let auth = uri
            .authority()
            .ok_or_else(|| bad(format!("`{url}` has no host")))?;
        if auth.as_str().contains('@') {
            return Err(bad("credentials in the URL are not supported".into()));
        }
        let port = auth.port_u16().unwrap_or(80);
        let host = auth.host().to_string();
        Ok(Target {
            url: url.to_string(),
            authority: format!("{host}:{port}"),
            host: auth.as_str().to_string(),
            path: uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into()),
        })
    }
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// One queued event: its type and its JSON.
type Queued = (&'static str, Bytes);

/// The webhook: its URL, queue and counters.
pub struct Webhook {
    target: Mutex<Option<Target>>,
    file: PathBuf,
    tx: mpsc::Sender<Queued>,
    rx: Mutex<Option<mpsc::Receiver<Queued>>>,
    counters: Counters,
    config: WebhookConfig,
}

impl Webhook {
    /// The webhook of the state directory `dir` (its URL from `webhook.json`, if any); nothing
    /// is sent until [`Webhook::start`].
    pub fn open(dir: &Path, config: &WebhookConfig) -> Self {
        let file = dir.join(WEBHOOK_FILE);
        let target = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["url"].as_str().map(String::from))
            .and_then(|u| match Target::parse(&u) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(error = %e, "webhook.json ignored");
                    None
                }
            });
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        Webhook {
            target: Mutex::new(target),
            file,
            tx,
            rx: Mutex::new(Some(rx)),
            counters: Counters::default(),
            config: config.clone(),
        }
    }

    /// Starts the forwarder (taking events from `events`) and the sender; once only.
    pub fn start(self: &Arc<Self>, events: Subscription) {
        let Some(rx) = self.rx.lock().expect("webhook rx").take() else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move { me.forward(events).await });
        let me = self.clone();
        tokio::spawn(async move { me.send_loop(rx).await });
    }

    /// The URL, if one is set.
    fn target(&self) -> Option<Target> {
        self.target.lock().expect("webhook target").clone()
    }

    /// The URL and the counters.
    pub fn status(&self) -> WebhookStatus {
        let c = &self.counters;
        WebhookStatus {
            url: self.target().map(|t| t.url),
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            queued: self.tx.max_capacity() - self.tx.capacity(),
            queue_capacity: self.tx.max_capacity(),
        }
    }

    /// Sets the URL (persisted) after checking it.
    pub fn set(&self, url: &str) -> Result<WebhookStatus, PilotError> {
        let t = Target::parse(url)?;
        let body = serde_json::json!({ "url": t.url }).to_string();
        crate::state::paths::write_private_atomic(&self.file, body.as_bytes()).map_err(|e| {
            PilotError::internal(format!("cannot write {}: {e}", self.file.display()))
        })?;
        tracing::info!(url = %t.url, "webhook set");
        *self.target.lock().expect("webhook target") = Some(t);
        Ok(self.status())
    }

    /// Removes the URL (and its file); queued events are dropped without being counted.
    pub fn clear(&self) -> Result<WebhookStatus, PilotError> {
        match std::fs::remove_file(&self.file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(PilotError::internal(format!(
                    "cannot remove {}: {e}",
                    self.file.display()
                )))
            }
        }
        *self.target.lock().expect("webhook target") = None;
        tracing::info!("webhook cleared");
        Ok(self.status())
    }

    /// Takes every event from `events` and queues it without ever waiting: a full queue drops
    /// it (counted), as does this forwarder's own lag.
    async fn forward(self: Arc<Self>, mut events: Subscription) {
        while let Some(e) = events.next().await {
            if let ApiEvent::Api(StreamEvent::Lagged { missed }) = e {
                self.counters.dropped.fetch_add(missed, Ordering::Relaxed);
                continue;
            }
            if self.target().is_none() {
                continue;
            }
            let Ok(body) = serde_json::to_vec(&e) else {
                continue;
            };
            if self.tx.try_send((e.kind(), Bytes::from(body))).is_err() {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// POSTs each queued event in order, with retries and backoff.
    async fn send_loop(self: Arc<Self>, mut rx: mpsc::Receiver<Queued>) {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        while let Some((kind, body)) = rx.recv().await {
            let mut backoff = Duration::from_millis(self.config.backoff_ms);
            for attempt in 1..=self.config.max_attempts.max(1) {
                let Some(target) = self.target() else { break };
                let sent = tokio::time::timeout(timeout, post(&target, kind, body.clone())).await;
                match sent {
                    Ok(Ok(())) => {
                        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Ok(Err(e)) => tracing::debug!(%kind, attempt, error = %e, "webhook failed"),
                    Err(_) => tracing::debug!(%kind, attempt, "webhook timed out"),
                }
                if attempt == self.config.max_attempts.max(1) {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%kind, url = %target.url, "webhook event given up");
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// One POST of `body` to `target`; a non-2xx answer is an error.
async fn post(target: &Target, kind: &str, body: Bytes) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect(target.authority.as_str())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::post(target.path.as_str())
        .header(hyper::header::HOST, target.host.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("pilot/", env!("CARGO_PKG_VERSION")),
        )
        .header("pilot-event", kind)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string());
    conn.abort();
    let status = resp?.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered HTTP {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_are_taken() {
        let t = Target::parse("http://127.0.0.1:8080/hook?x=1").unwrap();
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path, "/hook?x=1");
        let t = Target::parse("http://example.test").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("example.test:80", "/")
        );
        for bad in [
            "https://example.test/",
            "ftp://x/",
            "not a url",
            "/path",
            "http://u:p@h/",
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert_eq!(e.code, crate::error::ErrorCode::InvalidArgument, "{bad}");
        }
        let e = Target::parse("https://example.test/").unwrap_err();
        assert!(e.message.contains("only http://"), "{}", e.message);
    }

    #[test]
    fn the_url_is_kept_across_a_reopen_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WebhookConfig::default();
        let w = Webhook::open(dir.path(), &cfg);
        assert_eq!(w.status().url, None);
        w.set("http://127.0.0.1:9/x").unwrap();
        let again = Webhook::open(dir.path(), &cfg);
        assert_eq!(again.status().url.as_deref(), Some("http://127.0.0.1:9/x"));
        again.clear().unwrap();
        assert_eq!(Webhook::open(dir.path(), &cfg).status().url, None);
        assert!(again.set("https://127.0.0.1/").is_err());
    }
}
