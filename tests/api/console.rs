//! A WebSocket console client for tests: a real tokio-tungstenite client speaking docs/LIVE.md.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::TestHub;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Console {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub hello: Value,
    /// The id of the last event received.
    pub last_id: i64,
}

/// How a socket ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    Code(u16),
    /// The connection went without a close frame.
    Dropped,
}

/// A request for `path` on the hub, with `token` as the bearer when given.
pub fn request(
    hub: &TestHub,
    path: &str,
    token: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = format!("ws://{}{path}", hub.addr)
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    request
}

impl Console {
    /// An agent console on `hub`, resuming after `last_event_id` when given.
    pub async fn open(hub: &TestHub, token: &str, last_event_id: Option<i64>) -> Console {
        let path = match last_event_id {
            Some(id) => format!("/v1/ws?last_event_id={id}"),
            None => "/v1/ws".to_owned(),
        };
        Self::open_request(request(hub, &path, Some(token))).await
    }

    pub async fn open_request(
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Console {
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut console = Console {
            ws,
            hello: Value::Null,
            last_id: 0,
        };
        let hello = console.next().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        console.last_id = hello["data"]["last_event_id"].as_i64().unwrap();
        console.hello = hello;
        console
    }

    /// The next frame (pings answered, not returned); panics after [`WAIT`].
    pub async fn next(&mut self) -> Value {
        self.next_within(WAIT)
            .await
            .unwrap_or_else(|| panic!("no frame within {WAIT:?}"))
    }

    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    if let Some(id) = value["id"].as_i64() {
                        assert!(id > self.last_id, "ids go up: {id} after {}", self.last_id);
                        self.last_id = id;
                    }
                    return Some(value);
                }
                Some(Ok(Message::Close(frame))) => panic!("closed: {frame:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error: {e}"),
                None => panic!("socket ended"),
            }
        }
    }

    /// The next frame of `kind`, skipping others.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.next().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Asserts that no frame (other than pings) arrives within `wait`.
    pub async fn silent_for(&mut self, wait: Duration) {
        if let Some(frame) = self.next_within(wait).await {
            panic!("expected silence, got {frame}");
        }
    }

    pub async fn send(&mut self, command: Value) {
        self.ws
            .send(Message::Text(command.to_string().into()))
            .await
            .unwrap();
    }

    /// Sends a command and returns its `ack` or `error` frame (skipping events).
    pub async fn command(&mut self, command: Value) -> Value {
        let reference = format!("r{}", rand_ref());
        let mut command = command;
        command["ref"] = json!(reference);
        self.send(command).await;
        loop {
            let frame = self.next().await;
            if matches!(frame["type"].as_str(), Some("ack" | "error"))
                && frame["data"]["ref"] == reference.as_str()
            {
                return frame;
            }
        }
    }

    /// Reads until the server closes; returns how.
    pub async fn closed(&mut self) -> Closed {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Err(_) => panic!("not closed within {WAIT:?}"),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return frame.map_or(Closed::Code(1005), |f| Closed::Code(f.code.into()));
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_)) | None) => return Closed::Dropped,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Let the server see it.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.ws.next()).await {}
    }
}

fn rand_ref() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The upgrade's HTTP answer when it is refused: status and JSON body.
pub async fn refused(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
) -> (u16, Value) {
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => panic!("the upgrade was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            (status, body)
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}
