//! The live-console scenarios (`ws-idle`, `ws-latency`, `ws-fanout`): many agent consoles on
//! `GET /v1/ws` (docs/LIVE.md), and what they receive when signed webhooks arrive.
//!
//! What they share lives here: the loopback-only console address, opening sockets at a
//! controlled pace (so the hub's accept queue is not overrun), reading the `hello`, and how a
//! socket ended. Every socket is a plain `ws://` tokio-tungstenite client with a small read
//! buffer (the frames are small; the generator holds up to ~20,000 of them). Tungstenite
//! answers the hub's pings by itself as long as a socket is read, and every scenario reads
//! every socket until it stops.

pub mod fanout;
pub mod idle;
pub mod latency;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::http;
use crate::report::latency_histogram;

/// One console socket, over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// Connect, upgrade and the `hello` must all happen within this.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping socket waits for its close to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes read from the socket at a time (tungstenite's default is 128 KiB, reserved per
/// socket).
const READ_BUFFER: usize = 4096;

/// Where the consoles connect and as whom.
#[derive(Args, Clone)]
pub struct ConsoleArgs {
    /// Base URL of the hub. Only loopback hosts are accepted: 127.0.0.0/8, localhost, ::1.
    /// The consoles connect to ws://{host:port}/v1/ws.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_parser = http::loopback_url)]
    pub url: Url,
    /// An access token (from /v1/auth/login) of the user whose consoles these are; API keys
    /// cannot open a console. Every socket uses it. For the frame counts to mean anything the
    /// user must see the whole account (super_admin).
    #[arg(long, env = "SWITCHBOARD_BENCH_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Most sockets being opened at once (connect, upgrade, hello); the rest wait their turn.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=20_000))]
    pub in_flight: u64,
}

/// The signed WhatsApp webhooks that make the events (as `ingest` sends them).
#[derive(Args, Clone)]
pub struct WebhookArgs {
    /// The Meta app name in /webhooks/whatsapp/{app}.
    #[arg(long, default_value = "demo")]
    pub app: String,
    /// The app secret that signs the bodies.
    #[arg(long, default_value = "test_app_secret_0123456789abcdef")]
    pub app_secret: String,
    /// metadata.phone_number_id, which picks the inbox.
    #[arg(long, default_value = "800000000000001", value_parser = crate::ingest::digits)]
    pub phone_number_id: String,
    /// Events per second, started on a fixed schedule whatever the answers (open model).
    #[arg(long, value_parser = crate::ingest::positive_rate)]
    pub rate: f64,
    /// Seconds of sending: rate × seconds events in all.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: u64,
    /// Most webhooks in flight; an event that finds none free starts late (and is counted).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,
    /// After the last ack, how long to wait for the last frames.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_seconds: u64,
}

impl WebhookArgs {
    /// rate × seconds, at least one.
    pub fn events(&self) -> anyhow::Result<usize> {
        let n = (self.rate * self.seconds as f64).round().max(1.0);
        anyhow::ensure!(
            n <= 10_000_000.0,
            "--rate × --seconds is over 10,000,000 events"
        );
        Ok(n as usize)
    }
}

/// Waits until `count` reaches `expected` or `timeout` passes; how long it waited.
pub async fn drain(
    count: &std::sync::atomic::AtomicU64,
    expected: u64,
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    while count.load(std::sync::atomic::Ordering::Acquire) < expected && started.elapsed() < timeout
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

/// Everything needed to open one more console: resolved once, cheap to share.
pub struct Dialer {
    addr: SocketAddr,
    uri: String,
    authorization: HeaderValue,
    config: WebSocketConfig,
}

/// The first frame of every socket.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Hello {
    #[serde(default)]
    pub last_event_id: Option<u64>,
    #[serde(default)]
    pub node: Option<serde_json::Value>,
    #[serde(default)]
    pub ping_secs: Option<u64>,
}

/// Why opening a socket failed: a short key to count by, and the details.
#[derive(Debug)]
pub struct OpenError {
    pub key: String,
    pub detail: String,
}

impl OpenError {
    fn new(key: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            detail: detail.into(),
        }
    }
}

impl Dialer {
    pub fn new(args: &ConsoleArgs) -> anyhow::Result<Self> {
        if args.token.starts_with("sbk_") {
            bail!("--token is an API key; a console needs an access token (POST /v1/auth/login)");
        }
        let addr = args
            .url
            .socket_addrs(|| Some(80))
            .context("resolving --url")?
            .into_iter()
            .next()
            .context("--url resolves to no address")?;
        if !addr.ip().is_loopback() {
            bail!("--url resolves to {addr}, not loopback");
        }
        let host = args.url.host_str().context("--url has no host")?;
        let port = args.url.port_or_known_default().unwrap_or(80);
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let mut authorization = HeaderValue::try_from(format!("Bearer {}", args.token))
            .map_err(|_| anyhow::anyhow!("--token holds characters a header cannot carry"))?;
        authorization.set_sensitive(true);
        Ok(Self {
            addr,
            uri: format!("ws://{host}:{port}/v1/ws"),
            authorization,
            config: WebSocketConfig::default()
                .read_buffer_size(READ_BUFFER)
                .write_buffer_size(0),
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn request(&self) -> Result<Request, OpenError> {
        // A fresh Sec-WebSocket-Key each time.
        let mut request = self
            .uri
            .as_str()
            .into_client_request()
            .map_err(|e| OpenError::new("request", e.to_string()))?;
        request
            .headers_mut()
            .insert(AUTHORIZATION, self.authorization.clone());
        Ok(request)
    }

    /// Connects, upgrades and reads the `hello`.
    pub async fn open(&self) -> Result<(Ws, Hello), OpenError> {
        match tokio::time::timeout(OPEN_TIMEOUT, self.open_inner()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(OpenError::new(
                "timeout",
                format!("no hello within {OPEN_TIMEOUT:?}"),
            )),
        }
    }

    async fn open_inner(&self) -> Result<(Ws, Hello), OpenError> {
        let request = self.request()?;
        let stream = TcpStream::connect(self.addr).await.map_err(|e| {
            OpenError::new(format!("connect: {:?}", e.kind()), format!("connect: {e}"))
        })?;
        stream
            .set_nodelay(true)
            .map_err(|e| OpenError::new("connect", e.to_string()))?;
        let (mut ws, _) = client_async_with_config(request, stream, Some(self.config))
            .await
            .map_err(|e| match e {
                WsError::Http(response) => {
                    let status = response.status();
                    let body = response
                        .body()
                        .as_deref()
                        .map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned())
                        .unwrap_or_default();
                    OpenError::new(
                        format!("HTTP {}", status.as_u16()),
                        format!("upgrade refused: HTTP {status}: {body}"),
                    )
                }
                other => OpenError::new("upgrade", format!("upgrade: {other}")),
            })?;
        let first = match next_text(&mut ws).await {
            Ok(text) => text,
            Err(end) => {
                return Err(OpenError::new(
                    format!("before hello: {}", end.key()),
                    format!("before hello: {}", end.detail()),
                ));
            }
        };
        let hello = parse_hello(first.as_bytes())
            .map_err(|e| OpenError::new("no hello", format!("first frame: {e}: {first}")))?;
        Ok((ws, hello))
    }
}

/// `{"type":"hello","data":{…}}`.
fn parse_hello(frame: &[u8]) -> anyhow::Result<Hello> {
    #[derive(Deserialize)]
    struct Frame {
        #[serde(rename = "type")]
        kind: String,
        data: Hello,
    }
    let frame: Frame = serde_json::from_slice(frame)?;
    if frame.kind != "hello" {
        bail!("type {:?}, not hello", frame.kind);
    }
    Ok(frame.data)
}

/// The `type` and `id` of a server frame (the data is skipped).
#[derive(Deserialize)]
pub struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    pub id: Option<u64>,
}

/// How a socket stopped reading.
#[derive(Debug)]
pub enum End {
    /// The scenario stopped it.
    Stopped,
    /// The hub closed it, with this code (None: no code).
    Closed(Option<u16>, String),
    /// The connection ended without a close frame.
    Eof,
    Error(String),
}

impl End {
    /// A short key to count by: `stopped`, `closed 4008`, `eof`, `error`.
    pub fn key(&self) -> String {
        match self {
            End::Stopped => "stopped".to_owned(),
            End::Closed(Some(code), _) => format!("closed {code}"),
            End::Closed(None, _) => "closed".to_owned(),
            End::Eof => "eof".to_owned(),
            End::Error(_) => "error".to_owned(),
        }
    }

    /// The key with the close reason or error.
    pub fn detail(&self) -> String {
        match self {
            End::Closed(_, reason) | End::Error(reason) if !reason.is_empty() => {
                format!("{}: {reason}", self.key())
            }
            _ => self.key(),
        }
    }
}

/// The next text frame; pings are answered by tungstenite on the way, pongs and binary frames
/// skipped.
pub async fn next_text(ws: &mut Ws) -> Result<Utf8Bytes, End> {
    loop {
        match ws.next().await {
            None => return Err(End::Eof),
            Some(Err(WsError::ConnectionClosed)) => return Err(End::Eof),
            Some(Err(e)) => return Err(End::Error(e.to_string())),
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Close(frame))) => {
                return Err(match frame {
                    Some(f) => End::Closed(Some(u16::from(f.code)), f.reason.to_string()),
                    None => End::Closed(None, String::new()),
                });
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Reads text frames into `on_frame` until `stop` turns true (then closes the socket politely)
/// or the socket ends.
pub async fn read_until(
    mut ws: Ws,
    mut stop: watch::Receiver<bool>,
    mut on_frame: impl FnMut(Utf8Bytes),
) -> End {
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut stop) => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
                return End::Stopped;
            }
            next = next_text(&mut ws) => match next {
                Ok(text) => on_frame(text),
                Err(end) => return end,
            },
        }
    }
}

/// Returns once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// What opening a batch of sockets came to; the readers go on in `tasks`.
pub struct Opened<T> {
    pub tasks: Vec<JoinHandle<Option<T>>>,
    pub ok: u64,
    pub failed: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    /// Connect → hello, microseconds, sockets that opened.
    pub open_us: Histogram<u64>,
    /// The smallest and largest `hello.last_event_id` seen.
    pub hello_ids: Option<(u64, u64)>,
    pub elapsed: Duration,
}

impl<T> Opened<T> {
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// Opens sockets `ids` with at most `in_flight` being opened at once; each one that opens is
/// handed with its hello to `reader` (a task of its own). Returns when every socket has opened
/// or failed.
pub async fn open_sockets<T, F, Fut>(
    dialer: &Arc<Dialer>,
    ids: std::ops::Range<usize>,
    in_flight: usize,
    reader: F,
) -> Opened<T>
where
    F: Fn(usize, Ws, Hello) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let started = Instant::now();
    let slots = Arc::new(Semaphore::new(in_flight));
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<(Duration, Option<u64>), OpenError>>();
    let mut tasks = Vec::with_capacity(ids.len());
    let count = ids.len();
    for i in ids {
        let dialer = dialer.clone();
        let slots = slots.clone();
        let tx = tx.clone();
        let reader = reader.clone();
        tasks.push(tokio::spawn(async move {
            let slot = slots.acquire_owned().await.ok();
            let begun = Instant::now();
            let opened = dialer.open().await;
            drop(slot);
            match opened {
                Ok((ws, hello)) => {
                    let _ = tx.send(Ok((begun.elapsed(), hello.last_event_id)));
                    Some(reader(i, ws, hello).await)
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    None
                }
            }
        }));
    }
    drop(tx);
    let mut opened = Opened {
        tasks,
        ok: 0,
        failed: BTreeMap::new(),
        first_error: None,
        open_us: latency_histogram(),
        hello_ids: None,
        elapsed: Duration::ZERO,
    };
    for _ in 0..count {
        match rx.recv().await {
            Some(Ok((took, hello_id))) => {
                opened.ok += 1;
                opened
                    .open_us
                    .saturating_record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
                if let Some(id) = hello_id {
                    opened.hello_ids = Some(match opened.hello_ids {
                        None => (id, id),
                        Some((lo, hi)) => (lo.min(id), hi.max(id)),
                    });
                }
            }
            Some(Err(e)) => {
                *opened.failed.entry(e.key).or_default() += 1;
                opened.first_error.get_or_insert(e.detail);
            }
            None => break,
        }
    }
    opened.elapsed = started.elapsed();
    opened
}

/// Sockets by how they ended, and the first detail of an ending other than `stopped`.
#[derive(Default, Serialize)]
pub struct Ends {
    pub by_kind: BTreeMap<String, u64>,
    pub first_unexpected: Option<String>,
}

impl Ends {
    pub fn record(&mut self, end: &End) {
        *self.by_kind.entry(end.key()).or_default() += 1;
        if !matches!(end, End::Stopped) && self.first_unexpected.is_none() {
            self.first_unexpected = Some(end.detail());
        }
    }

    /// Sockets that ended before the scenario stopped them.
    pub fn unexpected(&self) -> u64 {
        self.by_kind
            .iter()
            .filter(|(k, _)| k.as_str() != "stopped")
            .map(|(_, n)| n)
            .sum()
    }

    pub fn cell(&self) -> String {
        let all: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        let mut cell = all.join(", ");
        if let Some(first) = &self.first_unexpected {
            cell.push_str(&format!(" (first other: {first})"));
        }
        cell
    }
}

/// A frame as text bytes (tungstenite has checked it is UTF-8).
pub fn bytes_of(text: &Utf8Bytes) -> &[u8] {
    text.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str, token: &str) -> ConsoleArgs {
        ConsoleArgs {
            url: http::loopback_url(url).unwrap(),
            token: token.to_owned(),
            in_flight: 1,
        }
    }

    #[test]
    fn console_uri_and_refusals() {
        let d = Dialer::new(&args("http://127.0.0.1:18383", "ey.a.b")).unwrap();
        assert_eq!(d.uri(), "ws://127.0.0.1:18383/v1/ws");
        assert_eq!(d.addr, "127.0.0.1:18383".parse().unwrap());
        let d = Dialer::new(&args("http://[::1]:9/", "ey.a.b")).unwrap();
        assert_eq!(d.uri(), "ws://[::1]:9/v1/ws");
        let request = d.request().unwrap();
        assert_eq!(request.headers()[AUTHORIZATION], "Bearer ey.a.b");
        assert!(request.headers().contains_key("sec-websocket-key"));
        assert!(Dialer::new(&args("http://127.0.0.1:1", "sbk_secret")).is_err());
    }

    #[test]
    fn hello_and_envelopes() {
        let hello = parse_hello(
            br#"{"type":"hello","data":{"last_event_id":42,"resumed":false,"node":"n1","ping_secs":25,"user_id":"usr_1"}}"#,
        )
        .unwrap();
        assert_eq!(hello.last_event_id, Some(42));
        assert_eq!(hello.ping_secs, Some(25));
        assert!(parse_hello(br#"{"type":"message.created","id":1,"data":{}}"#).is_err());
        assert!(parse_hello(b"not json").is_err());
        let e: Envelope = serde_json::from_slice(
            br#"{"type":"message.created","id":4212,"data":{"id":"msg_1","content":{"type":"text","text":"x"}}}"#,
        )
        .unwrap();
        assert_eq!(e.kind, "message.created");
        assert_eq!(e.id, Some(4212));
        let e: Envelope = serde_json::from_slice(br#"{"type":"pong"}"#).unwrap();
        assert_eq!(e.id, None);
    }

    #[test]
    fn ends_are_counted() {
        let mut ends = Ends::default();
        ends.record(&End::Stopped);
        ends.record(&End::Stopped);
        ends.record(&End::Closed(Some(4008), "too slow".into()));
        assert_eq!(ends.unexpected(), 1);
        assert_eq!(ends.by_kind["closed 4008"], 1);
        assert!(ends.cell().contains("stopped: 2"));
    }
}
