//! Live sockets (docs/LIVE.md): agent consoles at `GET /v1/ws`, tickets for browsers at
//! `POST /v1/ws/ticket`, and the web-chat widget at `GET /v1/webchat/{inbox}/ws`.
//!
//! Credentials are checked before the upgrade, so a bad one is an ordinary `401` with the error
//! envelope. A session then joins its account's pump (`crate::live::Fanout`), replays what it
//! missed from the event log if it asked to resume, and runs one loop: ring events out
//! (admitted by its [`Viewer`]), client commands in, pings, token expiry and shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::time::Instant;
use tracing::{debug, warn};
use utoipa::ToSchema;

use super::AppState;
use crate::access::{ClientMeta, Permission, Principal, Scope};
use crate::error::{ApiError, ErrorEnvelope};
use crate::ids;
use crate::live::viewer::AgentView;
use crate::live::{LiveEvent, Viewer};
use crate::store::agents::PresenceRow;
use crate::store::live::{EventScope, PresenceChange, Ticket};

/// Close codes (docs/LIVE.md).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const RESTART: u16 = 1012;
    pub const AUTH_EXPIRED: u16 = 4001;
    pub const TOO_SLOW: u16 = 4008;
}

/// Errors a socket may make before it is closed with 1008.
const MAX_ERRORS: u32 = 10;
/// A send that cannot complete in this long means a peer that stopped reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a socket cut off for being too slow has to read up to its close frame.
const SLOW_CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// `switchboard_ws_frames_total`: event frames written to sockets (live and replayed). The
/// handle is looked up once, not per frame, since fan-out writes hundreds of thousands a second.
fn frames_pushed() -> &'static metrics::Counter {
    static COUNTER: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
    COUNTER.get_or_init(|| metrics::counter!("switchboard_ws_frames_total"))
}

/// Frames written before one flush, when many are waiting.
const FLUSH_EVERY: usize = 64;
/// Bytes written before one flush, when many frames are waiting.
const FLUSH_BYTES: usize = 32 * 1024;
/// Bytes tungstenite gathers before writing to the kernel. A socket with many frames waiting
/// (a fan-out burst) writes them in one system call instead of one each: the hub's CPU per
/// pushed frame fell from 2.3 to 1.0 µs at 10,000 consoles (docs/BENCHMARKS.md). An idle
/// socket holds none of it; one that had a burst keeps the buffer's capacity (up to twice
/// this). (Taken out once because the slow-consumer test lost its 4008 close on the Redis
/// backend; that was the Redis queue's 5 s job pickup, since fixed, stalling the test's writes
/// past the send timeout: 12 runs of 12 pass with the buffer.)
const WRITE_BUFFER: usize = 8 * 1024;
/// What a client frame is read into; grown to a frame's size when one is bigger.
const READ_BUFFER: usize = 256;
/// Rows per read while replaying.
const REPLAY_PAGE: i64 = 500;
/// Conversations one socket may subscribe to.
const MAX_SUBSCRIPTIONS: usize = 200;
/// The access token cookie accepted from the hub's own origin.
pub const ACCESS_COOKIE: &str = "sb_access";

#[derive(utoipa::OpenApi)]
#[openapi(paths(ticket, agent_socket, visitor_socket))]
pub struct WsApi;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/ws", get(agent_socket))
        .route("/v1/ws/ticket", post(ticket))
}

/// The visitor socket, limited per IP with the other visitor routes.
pub fn visitor_routes() -> Router<AppState> {
    Router::new().route("/v1/webchat/{inbox}/ws", get(visitor_socket))
}

#[derive(Debug, Serialize, ToSchema)]
struct TicketOut {
    /// Pass as `?ticket=` to `GET /v1/ws`, once, before `expires_at_ms`.
    ticket: String,
    expires_at_ms: i64,
}

fn ticket_hash(ticket: &str) -> String {
    hex::encode(Sha256::digest(ticket.as_bytes()))
}

/// A single-use ticket that opens one console socket: for browsers, which cannot send an
/// `Authorization` header with a WebSocket.
#[utoipa::path(
    post,
    path = "/v1/ws/ticket",
    tag = "live",
    responses(
        (status = 201, description = "A ticket, valid once for `live.ticket_ttl_secs`", body = TicketOut),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorEnvelope),
        (status = 403, description = "An API key: consoles belong to users", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn ticket(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<TicketOut>), ApiError> {
    let user_id = console_user(&who)?;
    let token = super::webchat::bearer(&headers).unwrap_or_default();
    let claims = crate::auth::tokens::verify(&state.keys, token)?;
    let ticket = format!("wst_{}", Alphanumeric.sample_string(&mut rand::rng(), 40));
    let expires_at_ms = ids::now_ms() + state.config.live.ticket_ttl_secs as i64 * 1000;
    state
        .store
        .create_ws_ticket(
            &ticket_hash(&ticket),
            &Ticket {
                account_id: who.account_id.clone(),
                user_id: user_id.to_owned(),
                session_id: claims.sid,
                token_exp: claims.exp,
            },
            expires_at_ms,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TicketOut {
            ticket,
            expires_at_ms,
        }),
    ))
}

fn console_user(who: &Principal) -> Result<&str, ApiError> {
    who.user_id.as_deref().ok_or_else(|| {
        ApiError::Forbidden("API keys cannot open a console; sign in as a user".to_owned())
    })
}

#[derive(Debug, Deserialize)]
struct SocketQuery {
    ticket: Option<String>,
    token: Option<String>,
    last_event_id: Option<String>,
}

fn resume_point(q: &SocketQuery) -> Result<Option<i64>, ApiError> {
    q.last_event_id
        .as_deref()
        .map(|v| {
            v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::invalid_field("last_event_id", "must be a non-negative integer")
            })
        })
        .transpose()
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| cookie::Cookie::split_parse(v.to_owned()))
        .filter_map(Result::ok)
        .find(|c| c.name() == ACCESS_COOKIE && !c.value().is_empty())
        .map(|c| c.value().to_owned())
}

/// Whether the request comes from the hub's own origin (for cookie credentials).
fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    origin.trim_end_matches('/') == state.config.server.public_url.trim_end_matches('/')
}

/// Authenticates a console: bearer header, then ticket, then cookie. Returns the principal and
/// its token's expiry (Unix ms).
async fn console_principal(
    state: &AppState,
    headers: &HeaderMap,
    q: &SocketQuery,
    meta: ClientMeta,
) -> Result<(Principal, i64), ApiError> {
    use crate::auth::tokens;
    let missing = || {
        ApiError::unauthenticated(
            "missing_credentials",
            "send an access token as `Authorization: Bearer <token>`, or a ticket from POST /v1/ws/ticket as `?ticket=`",
        )
    };
    let token = match super::webchat::bearer(headers) {
        Some(token) => Some(token.to_owned()),
        None if q.ticket.is_some() => None,
        None => cookie_token(headers).filter(|_| same_origin(state, headers)),
    };
    let (who, exp) = if let Some(token) = token {
        if token.starts_with("sbk_") {
            return Err(ApiError::Forbidden(
                "API keys cannot open a console; sign in as a user".to_owned(),
            ));
        }
        let claims = tokens::verify(&state.keys, &token)?;
        let who =
            tokens::session_principal(state, &claims.acc, &claims.sub, &claims.sid, meta).await?;
        (who, claims.exp)
    } else {
        let ticket = q.ticket.as_deref().ok_or_else(missing)?;
        let taken = state
            .store
            .take_ws_ticket(&ticket_hash(ticket))
            .await?
            .ok_or_else(|| {
                ApiError::unauthenticated(
                    "invalid_ticket",
                    "the ticket is unknown, used or expired; get a new one",
                )
            })?;
        let who = tokens::session_principal(
            state,
            &taken.account_id,
            &taken.user_id,
            &taken.session_id,
            meta,
        )
        .await?;
        (who, taken.token_exp)
    };
    state.limits.check_api(&who)?;
    Ok((who, exp.saturating_mul(1000)))
}

fn tuned(upgrade: WebSocketUpgrade, state: &AppState) -> WebSocketUpgrade {
    let max = state.config.live.max_frame_bytes;
    // tungstenite reserves `read_buffer_size` per socket up front (128 KiB by default) and
    // writes out its write buffer once it holds more than `write_buffer_size`: consoles send
    // small commands, so the read buffer stays small, and frames go out as they are fed.
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(max.max(64 * 1024) * 4 + WRITE_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
}

/// An agent console. See docs/LIVE.md for the protocol.
#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "live",
    params(
        ("ticket" = Option<String>, Query, description = "A ticket from `POST /v1/ws/ticket` (browsers)."),
        ("last_event_id" = Option<String>, Query, description = "Resume after this event id."),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol of docs/LIVE.md"),
        (status = 400, description = "Not a WebSocket upgrade request", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "An API key: consoles belong to users", body = ErrorEnvelope),
        (status = 422, description = "`last_event_id` is not a non-negative integer", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn agent_socket(
    State(state): State<AppState>,
    meta: ClientMeta,
    Query(q): Query<SocketQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (who, token_exp_ms) = console_principal(&state, &headers, &q, meta).await?;
    let user_id = console_user(&who)?.to_owned();
    let resume = resume_point(&q)?;
    let upgrade = upgrade.map_err(|_| not_websocket())?;
    let view = agent_view(&state, &who, &user_id).await?;
    let session = Session::new(
        state.clone(),
        who.account_id.clone(),
        Viewer::Agent(view),
        Some(Box::new(who)),
        token_exp_ms,
    );
    Ok(tuned(upgrade, &state).on_upgrade(move |socket| tracked(session, socket, resume)))
}

fn not_websocket() -> ApiError {
    ApiError::bad_request(
        "websocket_expected",
        "this route only accepts a WebSocket upgrade (GET with `Upgrade: websocket`)",
    )
}

async fn agent_view(
    state: &AppState,
    who: &Principal,
    user_id: &str,
) -> Result<AgentView, ApiError> {
    let scope = who.grants.scope(Permission::ViewConversations);
    let (team_ids, reach) = match scope {
        Some(Scope::Team) | Some(Scope::Branch) => {
            let by_team = scope == Some(Scope::Team);
            let user = state
                .store
                .get_user(&who.account_id, user_id)
                .await?
                .ok_or_else(|| ApiError::not_found("user"))?;
            let reach = state
                .store
                .viewer_reach(&who.account_id, user_id, who.branch_id.as_deref(), by_team)
                .await?;
            (
                user.team_ids.into_iter().collect(),
                reach.into_iter().collect(),
            )
        }
        _ => Default::default(),
    };
    Ok(AgentView {
        user_id: user_id.to_owned(),
        scope,
        branch_id: who.branch_id.clone(),
        team_ids,
        reach,
        subscribed: Default::default(),
    })
}

/// The web-chat widget's socket: the visitor's own conversation, live.
#[utoipa::path(
    get,
    path = "/v1/webchat/{inbox}/ws",
    tag = "webchat",
    params(
        ("inbox" = String, Path, description = "The web-chat inbox's slug."),
        ("token" = Option<String>, Query, description = "The visitor token, for browsers (or `Authorization: Bearer`)."),
        ("last_event_id" = Option<String>, Query, description = "Resume after this event id."),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol of docs/LIVE.md"),
        (status = 400, description = "Not a WebSocket upgrade request", body = ErrorEnvelope),
        (status = 401, description = "Missing, unknown or expired visitor token", body = ErrorEnvelope),
        (status = 404, description = "No such web-chat inbox", body = ErrorEnvelope),
        (status = 422, description = "`last_event_id` is not a non-negative integer", body = ErrorEnvelope),
    ),
)]
async fn visitor_socket(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<SocketQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let inbox = super::webchat::webchat_inbox(&state, &slug)?;
    let token = super::webchat::bearer(&headers)
        .map(str::to_owned)
        .or_else(|| q.token.clone())
        .ok_or_else(|| {
            ApiError::unauthenticated(
                "missing_visitor_token",
                "send the visitor token as `Authorization: Bearer <token>` or `?token=`",
            )
        })?;
    let visitor = super::webchat::visitor(&state, &inbox, Some(&token)).await?;
    let resume = resume_point(&q)?;
    let upgrade = upgrade.map_err(|_| not_websocket())?;
    let identity = visitor
        .identifier
        .clone()
        .unwrap_or_else(|| visitor.visitor_id.clone());
    let contact_id = state
        .store
        .visitor_contact(&visitor.account_id, &identity)
        .await?;
    let mut session = Session::new(
        state.clone(),
        visitor.account_id.clone(),
        Viewer::Visitor {
            contact_id: contact_id.unwrap_or_default(),
        },
        None,
        visitor.expires_at_ms,
    );
    session.visitor_identity = Some(identity);
    Ok(tuned(upgrade, &state).on_upgrade(move |socket| tracked(session, socket, resume)))
}

/// Runs a session inside the upgrade's own task (one task per socket: no second task waiting
/// on it), tracked by the node so that shutdown can wait for its close frame.
///
/// The session and the socket are boxed: each future that takes one by value keeps its own
/// copy in its state (the upgrade's closure, `run`'s arguments and its locals), so by value
/// they would be held two or three times over for the socket's whole life.
fn tracked(
    session: Box<Session>,
    socket: WebSocket,
    resume: Option<i64>,
) -> impl Future<Output = ()> + Send + 'static {
    let tracker = session.state.live.sessions.clone();
    tracker.track_future(session.run(Box::new(socket), resume))
}

/// Why a session ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The peer closed, vanished or stopped answering.
    Gone,
    /// We closed with a code.
    Closed(u16),
    Shutdown,
}

/// A session's state. Every socket holds one for as long as it is open, together with its
/// task's future, so both are kept small: the loop an idle socket waits in holds only its ring
/// receiver and its timers, and the rare paths (the greeting and replay, commands, presence
/// writes, closing) are boxed at their call, taking memory only while they run.
struct Session {
    state: AppState,
    socket_id: String,
    account_id: String,
    viewer: Viewer,
    /// The signed-in agent (None: a visitor).
    who: Option<Box<Principal>>,
    /// When the credentials run out (Unix ms).
    expires_at_ms: i64,
    /// The last event id this socket has passed (sent or not admitted).
    cursor: i64,
    errors: u32,
    last_heard: Instant,
    /// Per subscribed conversation: its scope (for `typing` frames) and whether the agent may
    /// type in it.
    subscriptions: HashMap<String, (EventScope, bool)>,
    /// A visitor's contact identity, until their contact exists.
    visitor_identity: Option<String>,
}

impl Session {
    fn new(
        state: AppState,
        account_id: String,
        viewer: Viewer,
        who: Option<Box<Principal>>,
        expires_at_ms: i64,
    ) -> Box<Self> {
        Box::new(Session {
            state,
            socket_id: ids::new("ws"),
            account_id,
            viewer,
            who,
            expires_at_ms,
            cursor: 0,
            errors: 0,
            last_heard: Instant::now(),
            subscriptions: HashMap::new(),
            visitor_identity: None,
        })
    }

    fn agent_id(&self) -> Option<&str> {
        self.who.as_ref().and_then(|w| w.user_id.as_deref())
    }

    async fn run(mut self: Box<Self>, mut socket: Box<WebSocket>, resume: Option<i64>) {
        metrics::gauge!("switchboard_ws_sockets").increment(1.0);
        let opened = Box::pin(self.open_console()).await;
        let end = match self.serve(&mut socket, resume).await {
            Ok(end) => end,
            // As good as lagging: it cannot keep up.
            Err(e) if e.is::<Stalled>() => Box::pin(self.too_slow(&mut socket)).await,
            Err(e) => {
                warn!(error = %e, "A live session failed.");
                Box::pin(close_with(
                    &mut socket,
                    close::INTERNAL,
                    "internal error; reconnect with last_event_id",
                ))
                .await;
                End::Closed(close::INTERNAL)
            }
        };
        debug!(socket = %self.socket_id, ?end, "Socket closed.");
        // A node shutting down leaves presence alone: its consoles reconnect elsewhere.
        if opened && end != End::Shutdown {
            Box::pin(self.close_console()).await;
        }
        metrics::gauge!("switchboard_ws_sockets").decrement(1.0);
    }

    /// The greeting: joins the account's ring, sends `hello`, then replays what the socket
    /// missed or tells it to resync. Returns the ring, read from the cursor on.
    async fn begin(
        &mut self,
        ws: &mut WebSocket,
        resume: Option<i64>,
    ) -> anyhow::Result<Receiver<Arc<LiveEvent>>> {
        let live = self.state.live.clone();
        let joined = live.fanout.join(&self.account_id).await?;
        let head = self.state.store.event_head(&self.account_id).await?;
        let resumable =
            resume.filter(|n| *n >= head.pruned_through && *n <= head.last_id.max(joined.from));
        self.send(
            ws,
            json!({"type": "hello", "data": {
                "last_event_id": resumable.unwrap_or(joined.from),
                "resumed": resumable.is_some(),
                "node": live.node_id,
                "ping_secs": self.state.config.live.ping_secs,
                "user_id": self.agent_id(),
            }})
            .to_string()
            .into(),
        )
        .await?;
        match (resume, resumable) {
            (Some(asked), None) => {
                let reason = if asked < head.pruned_through {
                    "expired"
                } else {
                    "unknown"
                };
                self.cursor = joined.from;
                self.send(
                    ws,
                    json!({"type": "resync.required", "data": {"reason": reason, "last_event_id": joined.from}})
                        .to_string()
                        .into(),
                )
                .await?;
            }
            (_, Some(after)) => {
                self.cursor = after;
                self.replay(ws).await?;
            }
            (None, None) => self.cursor = joined.from,
        }
        Ok(joined.rx)
    }

    async fn serve(&mut self, ws: &mut WebSocket, resume: Option<i64>) -> anyhow::Result<End> {
        let live = self.state.live.clone();
        let mut ring = Box::pin(self.begin(ws, resume)).await?;
        let ping_every = Duration::from_secs(self.state.config.live.ping_secs);
        // Made once, not per turn of the loop: a socket woken for every event would otherwise
        // register and drop a timer and a cancellation waiter each time.
        let shutdown = live.shutdown.cancelled();
        tokio::pin!(shutdown);
        // One timer for the next ping and the credentials' expiry, whichever comes first.
        let mut next_ping = Instant::now() + ping_every;
        let timer = tokio::time::sleep_until(self.next_timer(next_ping));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    Box::pin(close_with(ws, close::RESTART, "node shutting down; reconnect elsewhere with last_event_id")).await;
                    return Ok(End::Shutdown);
                }
                () = &mut timer => {
                    if ids::now_ms() >= self.expires_at_ms {
                        Box::pin(close_with(ws, close::AUTH_EXPIRED, "credentials expired; reconnect with a fresh token and last_event_id")).await;
                        return Ok(End::Closed(close::AUTH_EXPIRED));
                    }
                    // (Woken for the expiry a little early, the timer's clock not being the
                    // wall clock: it is set again below.)
                    let now = Instant::now();
                    if now >= next_ping {
                        if self.last_heard.elapsed() > ping_every * 2 {
                            return Ok(End::Gone);
                        }
                        timed(ws.send(Message::Ping(Default::default()))).await?;
                        next_ping = now + ping_every;
                    }
                    timer.as_mut().reset(self.next_timer(next_ping));
                }
                received = ring.recv() => match received {
                    Ok(event) => {
                        if !self.deliver(ws, &mut ring, event).await? {
                            return Ok(Box::pin(self.too_slow(ws)).await);
                        }
                    }
                    Err(RecvError::Lagged(_)) => return Ok(Box::pin(self.too_slow(ws)).await),
                    Err(RecvError::Closed) => {
                        Box::pin(close_with(ws, close::RESTART, "node shutting down; reconnect elsewhere with last_event_id")).await;
                        return Ok(End::Shutdown);
                    }
                },
                frame = ws.next() => match frame {
                    None => return Ok(End::Gone),
                    Some(Err(e)) => {
                        if is_too_big(&e) {
                            Box::pin(close_with(ws, close::TOO_BIG, "frame too large")).await;
                            return Ok(End::Closed(close::TOO_BIG));
                        }
                        return Ok(End::Gone);
                    }
                    Some(Ok(message)) => {
                        self.last_heard = Instant::now();
                        match message {
                            Message::Text(text) => {
                                Box::pin(self.command(ws, &text)).await?;
                                // An `auth` command may have moved the expiry.
                                timer.as_mut().reset(self.next_timer(next_ping));
                            }
                            Message::Binary(_) => {
                                Box::pin(self.error(ws, None, "unsupported_frame", "send JSON text frames")).await?
                            }
                            Message::Close(_) => return Ok(End::Gone),
                            Message::Ping(_) | Message::Pong(_) => {}
                        }
                        if self.errors >= MAX_ERRORS {
                            Box::pin(close_with(ws, close::POLICY, "too many bad frames")).await;
                            return Ok(End::Closed(close::POLICY));
                        }
                    }
                },
            }
        }
    }

    /// When the session's timer is next due: the next ping or the credentials' expiry.
    fn next_timer(&self, next_ping: Instant) -> Instant {
        next_ping.min(Instant::now() + until_ms(self.expires_at_ms))
    }

    /// Writes `first` and the events already waiting behind it in the ring (up to a batch),
    /// then flushes once: a socket that fell behind catches up in one turn instead of one
    /// wake-up per event. False when the socket lagged out of the ring meanwhile.
    async fn deliver(
        &mut self,
        ws: &mut WebSocket,
        ring: &mut Receiver<Arc<LiveEvent>>,
        first: Arc<LiveEvent>,
    ) -> anyhow::Result<bool> {
        let (mut written, mut frames, mut pushed) = (0, 0, 0);
        let mut next = Some(first);
        while let Some(event) = next.take() {
            if let Some(frame) = self.admit(&event).await {
                written += frame.len();
                pushed += 1;
                timed(ws.feed(Message::Text(frame))).await?;
            }
            frames += 1;
            if frames >= FLUSH_EVERY || written >= FLUSH_BYTES {
                break;
            }
            match ring.try_recv() {
                Ok(event) => next = Some(event),
                Err(TryRecvError::Lagged(_)) => return Ok(false),
                Err(_) => break,
            }
        }
        if written > 0 {
            timed(ws.flush()).await?;
            frames_pushed().increment(pushed);
        }
        Ok(true)
    }

    async fn too_slow(&self, ws: &mut WebSocket) -> End {
        metrics::counter!("switchboard_ws_too_slow_total").increment(1);
        // Its socket is backed up: the close frame waits behind what is already buffered
        // (megabytes of kernel buffer on a fast link), so a slow reader is given longer than
        // one send to drain to it and learn why. The socket holds no event while it waits.
        let frame = CloseFrame {
            code: close::TOO_SLOW,
            reason: "too slow; reconnect with last_event_id".into(),
        };
        let closing = async {
            if ws.send(Message::Close(Some(frame))).await.is_ok() {
                // Sent is only queued: wait for the peer's close (it reads up to ours first).
                // Dropping the socket while the peer's last frames (a pong) sit unread here
                // would reset the connection, and the peer would lose what it had not read yet,
                // the close among it.
                while let Some(Ok(_)) = ws.next().await {}
            }
        };
        let _ = tokio::time::timeout(SLOW_CLOSE_TIMEOUT, closing).await;
        End::Closed(close::TOO_SLOW)
    }

    /// Moves the cursor past `event`; its frame if the viewer admits it. The frame's bytes
    /// are the event's, shared by every socket (a visitor's view is made once per event too):
    /// the socket only copies them into its write buffer.
    async fn admit(&mut self, event: &LiveEvent) -> Option<Utf8Bytes> {
        if let Some(id) = event.id {
            if id <= self.cursor {
                return None;
            }
            self.cursor = id;
        }
        if let Viewer::Visitor { contact_id } = &self.viewer
            && contact_id.is_empty()
            && &*event.kind == "message.created"
        {
            Box::pin(self.learn_visitor_contact()).await;
        }
        if !self.viewer.admits(event, &self.socket_id) {
            return None;
        }
        Some(match self.viewer {
            Viewer::Visitor { .. } => event.visitor_frame(visitor_frame),
            Viewer::Agent(_) => event.frame.clone(),
        })
    }

    /// A visitor who had not written yet has no contact; their first message makes one.
    async fn learn_visitor_contact(&mut self) {
        let Some(identity) = self.visitor_identity.as_deref() else {
            return;
        };
        if let Ok(Some(found)) = self
            .state
            .store
            .visitor_contact(&self.account_id, identity)
            .await
            && let Viewer::Visitor { contact_id } = &mut self.viewer
        {
            *contact_id = found;
        }
    }

    /// Sends every logged event after the cursor that the viewer admits, in id order.
    async fn replay(&mut self, ws: &mut WebSocket) -> anyhow::Result<()> {
        loop {
            let rows = self
                .state
                .store
                .events_between(&self.account_id, self.cursor, i64::MAX, REPLAY_PAGE)
                .await?;
            if rows.is_empty() {
                return Ok(());
            }
            let mut pushed = 0;
            for row in rows {
                let event = LiveEvent::from_logged(row);
                if let Some(frame) = self.admit(&event).await {
                    pushed += 1;
                    timed(ws.feed(Message::Text(frame))).await?;
                }
            }
            timed(ws.flush()).await?;
            frames_pushed().increment(pushed);
        }
    }

    async fn send(&self, ws: &mut WebSocket, frame: Utf8Bytes) -> anyhow::Result<()> {
        timed(ws.send(Message::Text(frame))).await
    }

    async fn error(
        &mut self,
        ws: &mut WebSocket,
        reference: Option<&str>,
        code: &str,
        message: &str,
    ) -> anyhow::Result<()> {
        self.errors += 1;
        let frame =
            json!({"type": "error", "data": {"ref": reference, "code": code, "message": message}});
        self.send(ws, frame.to_string().into()).await
    }

    async fn command(&mut self, ws: &mut WebSocket, text: &str) -> anyhow::Result<()> {
        let Ok(Value::Object(mut command)) = serde_json::from_str::<Value>(text) else {
            return self
                .error(
                    ws,
                    None,
                    "malformed_frame",
                    "frames must be JSON objects with a `type`",
                )
                .await;
        };
        let reference = match command.remove("ref") {
            None | Some(Value::Null) => None,
            Some(Value::String(r)) if r.len() <= 64 => Some(r),
            Some(_) => {
                return self
                    .error(
                        ws,
                        None,
                        "invalid_field",
                        "`ref` must be a string of at most 64 characters",
                    )
                    .await;
            }
        };
        let Some(Value::String(kind)) = command.remove("type") else {
            return self
                .error(
                    ws,
                    reference.as_deref(),
                    "malformed_frame",
                    "the frame has no `type`",
                )
                .await;
        };
        if kind == "ping" {
            return self.send(ws, r#"{"type":"pong"}"#.into()).await;
        }
        match self.run_command(&kind, &command).await {
            Ok(result) => {
                let mut data = json!({"ref": reference, "command": kind});
                if let (Value::Object(out), Value::Object(extra)) = (&mut data, result) {
                    out.extend(extra);
                }
                self.send(ws, json!({"type": "ack", "data": data}).to_string().into())
                    .await
            }
            Err(e) => {
                let (code, message) = e.code_and_message();
                self.error(ws, reference.as_deref(), code, &message).await
            }
        }
    }

    async fn run_command(
        &mut self,
        kind: &str,
        fields: &serde_json::Map<String, Value>,
    ) -> Result<Value, ApiError> {
        let text = |key: &str| -> Result<String, ApiError> {
            match fields.get(key) {
                Some(Value::String(v)) if !v.is_empty() && v.len() <= 128 => Ok(v.clone()),
                _ => Err(ApiError::invalid_field(
                    key,
                    "is required: a string of 1 to 128 characters",
                )),
            }
        };
        let Some(who) = self.who.clone() else {
            return match kind {
                "typing" => self.visitor_typing(&text("conversation_id")?, fields).await,
                _ => Err(unknown(kind, "ping, typing")),
            };
        };
        let state = self.state.clone();
        match kind {
            "subscribe" => {
                let id = text("conversation_id")?;
                if self.subscriptions.len() >= MAX_SUBSCRIPTIONS
                    && !self.subscriptions.contains_key(&id)
                {
                    return Err(ApiError::Conflict {
                        message: format!("at most {MAX_SUBSCRIPTIONS} subscriptions per socket"),
                        details: Vec::new(),
                    });
                }
                let conv = super::api::visible_conversation(
                    &state,
                    &who,
                    Permission::ViewConversations,
                    &id,
                )
                .await?;
                let may_type = super::api::visible_conversation(
                    &state,
                    &who,
                    Permission::ReplyToCustomer,
                    &id,
                )
                .await
                .is_ok();
                let scope = EventScope {
                    conversation_id: Some(conv.id.clone()),
                    contact_id: Some(conv.contact_id.clone()),
                    inbox_id: Some(conv.inbox_id.clone()),
                    team_id: conv.team_id.clone(),
                    branch_id: conv.branch_id.clone(),
                    assignee_id: conv.assignee_id.clone(),
                    agent_id: None,
                };
                self.subscriptions.insert(id.clone(), (scope, may_type));
                if let Viewer::Agent(view) = &mut self.viewer {
                    view.subscribed.insert(id.clone());
                }
                Ok(json!({"conversation_id": id, "may_type": may_type}))
            }
            "unsubscribe" => {
                let id = text("conversation_id")?;
                self.subscriptions.remove(&id);
                if let Viewer::Agent(view) = &mut self.viewer {
                    view.subscribed.remove(&id);
                }
                Ok(json!({"conversation_id": id}))
            }
            "typing" => {
                let id = text("conversation_id")?;
                let typing = flag(fields, "typing")?;
                let Some((scope, true)) = self.subscriptions.get(&id).cloned() else {
                    return Err(ApiError::Forbidden(
                        "subscribe to the conversation first; typing needs reply_to_customer on it"
                            .to_owned(),
                    ));
                };
                state
                    .events
                    .ephemeral(
                        &self.account_id,
                        "typing",
                        json!({"conversation_id": id, "user_id": who.user_id, "typing": typing}),
                        scope,
                        Some(&self.socket_id),
                    )
                    .await;
                Ok(json!({}))
            }
            "presence" => {
                let status = text("status")?;
                let body = json!({ "status": status }).to_string();
                let Json(presence) = super::agents::put_presence(
                    State(state),
                    (*who).clone(),
                    super::RawBody(body.into()),
                )
                .await?;
                Ok(json!({ "presence": presence }))
            }
            "offer.accept" => {
                let Json(conv) = super::routing::accept_offer(
                    State(state),
                    (*who).clone(),
                    Path(text("offer_id")?),
                )
                .await?;
                Ok(json!({ "conversation": conv }))
            }
            "offer.decline" => {
                let Json(offer) = super::routing::decline_offer(
                    State(state),
                    (*who).clone(),
                    Path(text("offer_id")?),
                )
                .await?;
                Ok(json!({ "offer": offer }))
            }
            "auth" => {
                let token = text_any(fields, "token")?;
                let claims = crate::auth::tokens::verify(&state.keys, &token)?;
                if Some(claims.sub.as_str()) != who.user_id.as_deref()
                    || Some(claims.sid.as_str()) != who.session_id.as_deref()
                {
                    return Err(ApiError::Forbidden(
                        "the token must belong to this socket's session".to_owned(),
                    ));
                }
                let fresh = crate::auth::tokens::session_principal(
                    &state,
                    &claims.acc,
                    &claims.sub,
                    &claims.sid,
                    who.meta.clone(),
                )
                .await?;
                // Role or team changes since the socket opened take effect now.
                let subscribed = match &self.viewer {
                    Viewer::Agent(view) => view.subscribed.clone(),
                    Viewer::Visitor { .. } => Default::default(),
                };
                let mut view = agent_view(&state, &fresh, &claims.sub).await?;
                view.subscribed = subscribed;
                self.viewer = Viewer::Agent(view);
                self.who = Some(Box::new(fresh));
                self.expires_at_ms = claims.exp.saturating_mul(1000);
                Ok(json!({ "expires_at_ms": self.expires_at_ms }))
            }
            other => Err(unknown(
                other,
                "ping, subscribe, unsubscribe, typing, presence, offer.accept, offer.decline, auth",
            )),
        }
    }

    async fn visitor_typing(
        &mut self,
        conversation_id: &str,
        fields: &serde_json::Map<String, Value>,
    ) -> Result<Value, ApiError> {
        let typing = flag(fields, "typing")?;
        let contact = match &self.viewer {
            Viewer::Visitor { contact_id } if !contact_id.is_empty() => contact_id.clone(),
            _ => return Err(ApiError::not_found("conversation")),
        };
        let conv = self
            .state
            .store
            .get_conversation(
                &self.account_id,
                &crate::access::RecordScope::all(),
                conversation_id,
            )
            .await?
            .filter(|c| c.contact_id == contact)
            .ok_or_else(|| ApiError::not_found("conversation"))?;
        let scope = EventScope {
            conversation_id: Some(conv.id.clone()),
            contact_id: Some(conv.contact_id),
            inbox_id: Some(conv.inbox_id),
            team_id: conv.team_id,
            branch_id: conv.branch_id,
            assignee_id: conv.assignee_id,
            agent_id: None,
        };
        self.state
            .events
            .ephemeral(
                &self.account_id,
                "typing",
                json!({"conversation_id": conv.id, "visitor": true, "typing": typing}),
                scope,
                Some(&self.socket_id),
            )
            .await;
        Ok(json!({}))
    }

    /// Records the console (agents only); false when it could not be.
    async fn open_console(&self) -> bool {
        let Some(user_id) = self.agent_id() else {
            return false;
        };
        let now = ids::now_ms();
        match self
            .state
            .store
            .open_console(
                &self.account_id,
                user_id,
                &self.socket_id,
                &self.state.live.node_id,
                now,
                self.state.config.routing.presence_timeout_ms(),
            )
            .await
        {
            Ok(change) => {
                self.announce(user_id, change, now).await;
                true
            }
            Err(e) => {
                warn!(error = %e, "Could not record a console; presence stays as it was.");
                false
            }
        }
    }

    async fn close_console(&self) {
        let Some(user_id) = self.agent_id() else {
            return;
        };
        let now = ids::now_ms();
        match self
            .state
            .store
            .close_console(
                &self.account_id,
                user_id,
                &self.socket_id,
                now,
                self.state.config.routing.presence_timeout_ms(),
            )
            .await
        {
            Ok(change) => self.announce(user_id, change, now).await,
            Err(e) => {
                warn!(error = %e, "Could not record a console closing; presence times out instead.")
            }
        }
    }

    async fn announce(&self, user_id: &str, (before, after): PresenceChange, now: i64) {
        let timeout = self.state.config.routing.presence_timeout_ms();
        let was = PresenceRow::effective(before.as_ref(), now, timeout);
        let is = PresenceRow::effective(after.as_ref(), now, timeout);
        if was != is {
            self.state
                .events
                .publish(
                    &self.account_id,
                    "presence.changed",
                    json!({ "user_id": user_id, "status": is }),
                )
                .await;
        }
    }
}

fn unknown(kind: &str, known: &str) -> ApiError {
    ApiError::bad_request(
        "unknown_command",
        format!("unknown command `{kind}`; expected one of {known}"),
    )
}

fn flag(fields: &serde_json::Map<String, Value>, key: &str) -> Result<bool, ApiError> {
    fields
        .get(key)
        .and_then(Value::as_bool)
        .ok_or_else(|| ApiError::invalid_field(key, "is required: true or false"))
}

fn text_any(fields: &serde_json::Map<String, Value>, key: &str) -> Result<String, ApiError> {
    match fields.get(key) {
        Some(Value::String(v)) if !v.is_empty() && v.len() <= 4096 => Ok(v.clone()),
        _ => Err(ApiError::invalid_field(key, "is required")),
    }
}

/// What a visitor sees of an event: public fields of a message, or the typing frame.
fn visitor_frame(event: &LiveEvent) -> Utf8Bytes {
    if &*event.kind != "message.created" {
        return event.frame.clone();
    }
    let Ok(full) = serde_json::from_str::<Value>(event.frame.as_str()) else {
        return event.frame.clone();
    };
    let m = &full["data"];
    let mut data = json!({
        "id": m["id"],
        "conversation_id": m["conversation_id"],
        "direction": m["direction"],
        "content": m["content"],
        "status": m["status"],
        "created_at_ms": m["created_at_ms"],
    });
    if let Some(id) = super::webchat::client_message_id(
        m["direction"].as_str().unwrap_or_default(),
        m["provider_message_id"].as_str(),
    ) {
        data["client_message_id"] = id.into();
    }
    json!({"type": "message.created", "id": event.id, "data": data})
        .to_string()
        .into()
}

fn until_ms(at_ms: i64) -> Duration {
    Duration::from_millis(
        at_ms
            .saturating_sub(ids::now_ms())
            .clamp(0, 86_400_000 * 30) as u64,
    )
}

/// A send that did not complete within [`SEND_TIMEOUT`]: the peer is not reading.
#[derive(Debug, thiserror::Error)]
#[error("the peer stopped reading")]
struct Stalled;

async fn timed<F, T, E>(send: F) -> anyhow::Result<T>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(SEND_TIMEOUT, send).await {
        Ok(result) => result.map_err(anyhow::Error::from),
        Err(_) => Err(Stalled.into()),
    }
}

async fn close_with(ws: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ =
        tokio::time::timeout(Duration::from_secs(2), ws.send(Message::Close(Some(frame)))).await;
}

fn is_too_big(e: &axum::Error) -> bool {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(inner) = source {
        if let Some(t) = inner.downcast_ref::<tungstenite::Error>() {
            return matches!(t, tungstenite::Error::Capacity(_));
        }
        source = inner.source();
    }
    false
}
