//! Fake provider servers on port 0 that speak the send protocols of PROVIDERS.md: WhatsApp
//! Cloud API (1.7, `POST /{version}/{phone-number-id}/messages`) and Twilio Messages (2.7,
//! `POST /2010-04-01/Accounts/{sid}/Messages.json`). Each records what it was sent and when
//! it arrived, answers from a script (then with success), can be taken down, and can hold its
//! next answer until the test lets it go.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::helpers::TWILIO_TOKEN;

/// The demo SMS inbox's account (examples/demo.toml).
pub const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Request {
    /// When it arrived (before any hold).
    pub at: Instant,
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The form fields, in the order sent.
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    pub fn field(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// One fake provider's state.
#[derive(Default)]
pub struct Fake {
    seen: Mutex<Vec<Request>>,
    /// Answers to give, in order (status, body); then success.
    script: Mutex<VecDeque<(u16, Value)>>,
    /// While set, every request is answered 503.
    down: AtomicBool,
    /// The next request waits for this before it is answered.
    hold: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Fake {
    pub fn seen(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The next request not yet answered from the script gets this answer.
    pub fn then(&self, status: u16, body: Value) {
        self.script.lock().unwrap().push_back((status, body));
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Holds the answer to the next request until the returned sender fires (or is dropped).
    pub fn hold_next(&self) -> oneshot::Sender<()> {
        let (tx, rx) = oneshot::channel();
        *self.hold.lock().unwrap() = Some(rx);
        tx
    }

    /// Records the request; returns its 1-based number and the scripted answer, if any.
    async fn arrive(&self, path: String, headers: &HeaderMap, body: &[u8]) -> Arrival {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let request = Request {
            at: Instant::now(),
            path,
            authorization: header("authorization"),
            content_type: header("content-type"),
            body: body.to_vec(),
        };
        let n = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(request);
            seen.len()
        };
        let hold = self.hold.lock().unwrap().take();
        if let Some(hold) = hold {
            let _ = hold.await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Arrival::Down;
        }
        match self.script.lock().unwrap().pop_front() {
            Some((status, body)) => Arrival::Scripted(status, body),
            None => Arrival::Accept(n),
        }
    }
}

enum Arrival {
    Accept(usize),
    Scripted(u16, Value),
    Down,
}

fn answer(status: u16, body: Value) -> (StatusCode, axum::Json<Value>) {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body))
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The provider id the fake Graph API gives its `n`th request (1-based).
pub fn wamid(n: usize) -> String {
    format!("wamid.out.{n}")
}

/// A Graph API error envelope (PROVIDERS.md 1.7).
pub fn graph_error(code: u64, message: &str) -> Value {
    json!({ "error": { "message": message, "type": "OAuthException", "code": code,
                       "error_data": { "messaging_product": "whatsapp", "details": message },
                       "fbtrace_id": "AbCdEf" } })
}

/// A fake WhatsApp Cloud API send endpoint.
pub async fn fake_graph() -> (Arc<Fake>, SocketAddr) {
    async fn send(
        State(fake): State<Arc<Fake>>,
        Path((version, number)): Path<(String, String)>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> (StatusCode, axum::Json<Value>) {
        let path = format!("/{version}/{number}/messages");
        let to = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)["to"].clone();
        match fake.arrive(path, &headers, &body).await {
            Arrival::Accept(n) => answer(
                200,
                json!({
                    "messaging_product": "whatsapp",
                    "contacts": [{ "input": to, "wa_id": to }],
                    "messages": [{ "id": wamid(n) }],
                }),
            ),
            Arrival::Scripted(status, body) => answer(status, body),
            Arrival::Down => answer(503, graph_error(131016, "Service temporarily unavailable")),
        }
    }
    let fake = Arc::new(Fake::default());
    let app = axum::Router::new()
        .route("/{version}/{number}/messages", axum::routing::post(send))
        .with_state(fake.clone());
    (fake, serve(app).await)
}

/// The Message sid the fake Twilio gives its `n`th request (1-based): `SM` + 32 hex digits.
pub fn twilio_sid(n: usize) -> String {
    format!("SM{n:032x}")
}

/// A Twilio REST error body (the legacy shape of PROVIDERS.md 2.7).
pub fn twilio_error(status: u16, code: u32, message: &str) -> Value {
    json!({ "code": code, "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status })
}

/// `Authorization: Basic base64(sid:token)`, as Twilio expects it.
pub fn twilio_basic_auth() -> String {
    let pair = format!("{TWILIO_SID}:{TWILIO_TOKEN}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// A fake Twilio Messages create endpoint. Like Twilio it refuses wrong credentials (20003)
/// and a request without `To` (21604) or without a sender (21603) or content (21602).
pub async fn fake_twilio() -> (Arc<Fake>, SocketAddr) {
    async fn create(
        State(fake): State<Arc<Fake>>,
        Path(sid): Path<String>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> (StatusCode, axum::Json<Value>) {
        let path = format!("/2010-04-01/Accounts/{sid}/Messages.json");
        let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let authorized = sid == TWILIO_SID
            && headers.get("authorization").and_then(|v| v.to_str().ok())
                == Some(twilio_basic_auth().as_str());
        let arrival = fake.arrive(path, &headers, &body).await;
        if !authorized {
            return answer(401, twilio_error(401, 20003, "Authenticate"));
        }
        if field("To").is_none() {
            return answer(
                400,
                twilio_error(400, 21604, "A 'To' phone number is required."),
            );
        }
        if field("From").is_none() && field("MessagingServiceSid").is_none() {
            return answer(
                400,
                twilio_error(400, 21603, "A 'From' phone number is required."),
            );
        }
        if ["Body", "MediaUrl", "ContentSid"]
            .iter()
            .all(|k| field(k).is_none())
        {
            return answer(400, twilio_error(400, 21602, "Message body is required."));
        }
        match arrival {
            Arrival::Accept(n) => {
                let message_sid = twilio_sid(n);
                answer(
                    201,
                    json!({
                        "sid": message_sid, "account_sid": sid, "messaging_service_sid": null,
                        "from": field("From"), "to": field("To"), "body": field("Body"),
                        "status": "queued", "direction": "outbound-api", "num_segments": "1",
                        "num_media": "0", "price": null, "price_unit": null,
                        "error_code": null, "error_message": null, "api_version": "2010-04-01",
                        "date_created": "Thu, 03 Dec 2026 05:01:45 +0000", "date_sent": null,
                        "date_updated": "Thu, 03 Dec 2026 05:01:45 +0000",
                        "uri": format!("/2010-04-01/Accounts/{sid}/Messages/{message_sid}.json"),
                    }),
                )
            }
            Arrival::Scripted(status, body) => answer(status, body),
            Arrival::Down => answer(503, twilio_error(503, 20503, "Service Unavailable")),
        }
    }
    let fake = Arc::new(Fake::default());
    let app = axum::Router::new()
        .route(
            "/2010-04-01/Accounts/{sid}/Messages.json",
            axum::routing::post(create),
        )
        .with_state(fake.clone());
    (fake, serve(app).await)
}

/// The hub side of the conversations these tests hold with the fakes.
pub mod flow {
    use reqwest::Method;
    use serde_json::{Value, json};

    use crate::helpers::{PHONE_NUMBER_ID, TestHub, eventually, wa_envelope};

    /// The conversation holding the inbound message with provider id `provider_id`.
    async fn conversation_of(hub: &TestHub, provider_id: &str) -> String {
        eventually(&format!("the conversation of {provider_id}"), || async {
            for c in hub.conversations().await {
                let id = c["id"].as_str().unwrap();
                if hub
                    .messages(id)
                    .await
                    .iter()
                    .any(|m| m["provider_message_id"] == provider_id)
                {
                    return Some(id.to_owned());
                }
            }
            None
        })
        .await
    }

    /// A WhatsApp customer `wa_id` writes now; returns their conversation's id.
    pub async fn whatsapp_customer(hub: &TestHub, wa_id: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let provider_id = format!("wamid.in.{wa_id}");
        let body = wa_envelope(
            PHONE_NUMBER_ID,
            json!([{ "profile": { "name": "Ada" }, "wa_id": wa_id }]),
            json!([{ "from": wa_id, "id": provider_id, "timestamp": now.to_string(),
                     "type": "text", "text": { "body": "hello" } }]),
            json!([]),
        );
        assert_eq!(hub.post_whatsapp(&body).await.status(), 200);
        conversation_of(hub, &provider_id).await
    }

    /// An SMS customer `from` writes to the demo SMS inbox; returns their conversation's id.
    pub async fn sms_customer(hub: &TestHub, from: &str) -> String {
        let digits: String = from.chars().filter(char::is_ascii_digit).collect();
        let sid = format!("SM{digits:0>32}");
        let params = [
            ("AccountSid", super::TWILIO_SID),
            ("ApiVersion", "2010-04-01"),
            ("Body", "Hello, where is my order?"),
            ("From", from),
            ("MessageSid", sid.as_str()),
            ("NumMedia", "0"),
            ("NumSegments", "1"),
            ("SmsMessageSid", sid.as_str()),
            ("SmsSid", sid.as_str()),
            ("SmsStatus", "received"),
            ("To", "+14155550100"),
        ];
        let r = hub
            .post_twilio("/webhooks/twilio/support-sms", &params)
            .await;
        assert_eq!(r.status(), 200);
        conversation_of(hub, &sid).await
    }

    /// Posts a text reply; returns the message's id.
    pub async fn reply(hub: &TestHub, token: &str, conversation: &str, text: &str) -> String {
        let (status, body) = hub
            .call(
                Method::POST,
                &format!("/v1/conversations/{conversation}/messages"),
                token,
                Some(json!({ "text": text })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["status"], "pending", "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Posts a private note (a `note.created` event, nothing sent); returns its id.
    pub async fn note(hub: &TestHub, token: &str, conversation: &str, text: &str) -> String {
        let (status, body) = hub
            .call(
                Method::POST,
                &format!("/v1/conversations/{conversation}/messages"),
                token,
                Some(json!({ "text": text, "private": true })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn message(hub: &TestHub, conversation: &str, id: &str) -> Value {
        hub.messages(conversation)
            .await
            .into_iter()
            .find(|m| m["id"] == id)
            .unwrap_or(Value::Null)
    }

    pub async fn status_becomes(
        hub: &TestHub,
        conversation: &str,
        id: &str,
        status: &str,
    ) -> Value {
        eventually(&format!("{id} to be {status}"), || async {
            let m = message(hub, conversation, id).await;
            (m["status"] == status).then_some(m)
        })
        .await
    }

    /// Waits until every webhook the hub took in has been processed (none left `received`).
    pub async fn settled(hub: &TestHub) {
        eventually("every webhook to be processed", || async {
            hub.events("received").await.is_empty().then_some(())
        })
        .await;
    }
}
