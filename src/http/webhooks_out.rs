//! Outbound webhook endpoints over REST (docs/WEBHOOKS_OUT.md), for operators
//! (`configure_routing`, every change audited): the endpoints, their secrets (shown once, on
//! creation and rotation), their deliveries, replays and test events.
//!
//! An endpoint's URL passes the SSRF guard when it is saved (and again on every attempt, see
//! `webhooks_out::deliver`); a refusal is a 422 naming `url`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::api::{cut_page, id_cursor, page_limit};
use super::{ApiQuery, AppState, RawBody, parse_json};
use crate::access::{Permission, Principal};
use crate::error::{ApiError, ErrorEnvelope};
use crate::ids;
use crate::ssrf::Guard;
use crate::store::webhooks_out::{EndpointFields, WebhookDelivery, WebhookEndpoint};
use crate::webhooks_out;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/admin/webhook-endpoints",
            get(list_endpoints).post(create_endpoint),
        )
        .route(
            "/v1/admin/webhook-endpoints/{id}",
            get(get_endpoint)
                .patch(update_endpoint)
                .delete(delete_endpoint),
        )
        .route(
            "/v1/admin/webhook-endpoints/{id}/rotate-secret",
            post(rotate_secret),
        )
        .route("/v1/admin/webhook-endpoints/{id}/test", post(send_test))
        .route(
            "/v1/admin/webhook-endpoints/{id}/deliveries",
            get(list_deliveries),
        )
        .route(
            "/v1/admin/webhook-endpoints/{id}/deliveries/{delivery_id}/replay",
            post(replay_delivery),
        )
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list_endpoints,
    create_endpoint,
    get_endpoint,
    update_endpoint,
    delete_endpoint,
    rotate_secret,
    send_test,
    list_deliveries,
    replay_delivery
))]
pub struct WebhooksOutApi;

/// A new endpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointIn {
    /// Where events are POSTed: HTTPS (unless `webhooks_out.allow_http`), at most 2048
    /// characters, without credentials, not resolving to a loopback, private, link-local or reserved address
    /// unless allow-listed (`webhooks_out.allowed_hosts`).
    pub url: String,
    /// At least one: event types (`message.created`), groups (`conversation.*`) or `*`.
    pub event_types: Vec<String>,
    /// At most 500 characters.
    #[serde(default)]
    pub description: String,
    /// Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Deliver in event order (each delivery waits for the one before it). Default false.
    #[serde(default)]
    pub ordered: bool,
}

fn yes() -> bool {
    true
}

/// Changes to an endpoint; fields left out stay as they are. Enabling a disabled endpoint
/// starts it at the current event (the events in between are not sent) and clears its run of
/// failures; its deliveries still due go out again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointPatch {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub ordered: Option<bool>,
}

/// A new endpoint and its secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEndpointCreated {
    pub endpoint: WebhookEndpoint,
    /// `whsec_…`: base64 of the key bytes after the prefix; verify `webhook-signature` with it.
    pub secret: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretIn {
    /// How long the previous secret keeps signing beside the new one (0 to 604800 s); default
    /// `webhooks_out.rotation_overlap_secs`.
    pub overlap_secs: Option<u64>,
}

/// The new secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecret {
    pub secret: String,
    /// Until then, deliveries carry signatures by both the new and the previous secret.
    pub previous_secret_until_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEndpointPage {
    pub data: Vec<WebhookEndpoint>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryPage {
    pub data: Vec<WebhookDelivery>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EndpointQuery {
    /// 1 to 100, default 25.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// `due`, `sending`, `succeeded` or `failed`.
    pub state: Option<String>,
    /// 1 to 100, default 25.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Checks an endpoint URL: its form, its scheme, and where it resolves to.
async fn checked_url(state: &AppState, raw: &str) -> Result<String, ApiError> {
    let bad = |m: String| ApiError::invalid_field("url", m);
    let raw = raw.trim();
    if raw.len() > 2048 {
        return Err(bad("must be at most 2048 characters".to_owned()));
    }
    let url = url::Url::parse(raw).map_err(|e| bad(format!("is not a URL ({e})")))?;
    let config = &state.config.webhooks_out;
    match url.scheme() {
        "https" => {}
        "http" if config.allow_http => {}
        "http" => {
            return Err(bad(
                "must be https (http is allowed only with webhooks_out.allow_http)".to_owned(),
            ));
        }
        _ => return Err(bad("must be an https URL".to_owned())),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host".to_owned()));
    }
    // The URL is shown by the API and kept in audit records: no secrets in it.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not carry credentials (receivers authenticate deliveries by their signature)"
                .to_owned(),
        ));
    }
    let guard = Guard::new(&config.allowed_hosts).map_err(ApiError::internal)?;
    guard.check_url(&url).await.map_err(bad)?;
    Ok(url.to_string())
}

fn checked_types(types: &[String]) -> Result<Vec<String>, ApiError> {
    if types.is_empty() {
        return Err(ApiError::invalid_field(
            "event_types",
            "must name at least one event type",
        ));
    }
    if types.len() > 50 {
        return Err(ApiError::invalid_field(
            "event_types",
            "must name at most 50",
        ));
    }
    for (i, t) in types.iter().enumerate() {
        webhooks_out::check_filter(t)
            .map_err(|e| ApiError::invalid_field(&format!("event_types[{i}]"), e))?;
    }
    let mut out = types.to_vec();
    out.dedup();
    Ok(out)
}

fn checked_description(d: &str) -> Result<String, ApiError> {
    if d.chars().count() > 500 {
        return Err(ApiError::invalid_field(
            "description",
            "must be at most 500 characters",
        ));
    }
    Ok(d.trim().to_owned())
}

fn endpoint_id(id: &str) -> Result<(), ApiError> {
    if ids::has_prefix(id, ids::WEBHOOK_ENDPOINT) {
        Ok(())
    } else {
        Err(ApiError::not_found("webhook endpoint"))
    }
}

const UNAUTH: &str = "Missing, invalid or expired credentials.";
const FORBIDDEN: &str = "The caller's role does not grant `configure_routing`.";

#[utoipa::path(
    get,
    path = "/v1/admin/webhook-endpoints",
    tag = "webhook-endpoints",
    summary = "List webhook endpoints",
    description = "The caller's account's outbound webhook endpoints, oldest first, without their secrets. Requires `configure_routing`.",
    params(EndpointQuery),
    responses(
        (status = 200, description = "One page.", body = WebhookEndpointPage),
        (status = 401, description = UNAUTH, body = ErrorEnvelope),
        (status = 403, description = FORBIDDEN, body = ErrorEnvelope),
        (status = 422, description = "A bad `limit` or `cursor`, or an unknown parameter.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn list_endpoints(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<EndpointQuery>,
) -> Result<Json<WebhookEndpointPage>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let limit = page_limit(query.limit)?;
    let cursor = id_cursor(query.cursor.as_deref(), ids::WEBHOOK_ENDPOINT)?;
    let items = state
        .store
        .list_webhook_endpoints(&who.account_id, cursor.as_deref(), limit + 1)
        .await?;
    let (data, next_cursor) = cut_page(items, limit, |e| e.id.clone());
    Ok(Json(WebhookEndpointPage { data, next_cursor }))
}

#[utoipa::path(
    post,
    path = "/v1/admin/webhook-endpoints",
    tag = "webhook-endpoints",
    summary = "Add a webhook endpoint",
    description = "Registers a URL to receive the account's events, signed per Standard Webhooks. The answer carries the endpoint's secret, shown this once. Events from now on are delivered (not the history). Audited as `webhook_endpoint.created`. Requires `configure_routing`.",
    request_body = WebhookEndpointIn,
    responses(
        (status = 201, description = "Added; keep the secret.", body = WebhookEndpointCreated),
        (status = 400, description = "The body is not valid JSON or could not be read.", body = ErrorEnvelope),
        (status = 401, description = UNAUTH, body = ErrorEnvelope),
        (status = 403, description = FORBIDDEN, body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`.", body = ErrorEnvelope),
        (status = 422, description = "An invalid URL, one refused by the SSRF guard or not HTTPS, an unknown event type, or a description too long (details name the field).", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn create_endpoint(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<WebhookEndpointCreated>), ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let input: WebhookEndpointIn = parse_json(&body)?;
    let fields = EndpointFields {
        url: checked_url(&state, &input.url).await?,
        event_types: checked_types(&input.event_types)?,
        description: checked_description(&input.description)?,
        enabled: input.enabled,
        ordered: input.ordered,
    };
    let id = ids::new(ids::WEBHOOK_ENDPOINT);
    let secret = webhooks_out::new_secret();
    let record = who.audit("webhook_endpoint.created", "webhook_endpoint", Some(&id));
    let endpoint = state
        .store
        .create_webhook_endpoint(
            &who.account_id,
            &id,
            &fields,
            &state.keys.sealer.seal(&secret),
            record,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookEndpointCreated { endpoint, secret }),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/admin/webhook-endpoints/{id}",
    tag = "webhook-endpoints",
    summary = "Get a webhook endpoint",
    description = "One endpoint, without its secret: whether it is enabled (and why the hub disabled it), its run of failed deliveries. Requires `configure_routing`.",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`).")),
    responses(
        (status = 200, description = "The endpoint.", body = WebhookEndpoint),
        (status = 401, description = UNAUTH, body = ErrorEnvelope),
        (status = 403, description = FORBIDDEN, body = ErrorEnvelope),
        (status = 404, description = "No such endpoint in the caller's account.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn get_endpoint(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<WebhookEndpoint>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    endpoint_id(&id)?;
    state
        .store
        .webhook_endpoint(&who.account_id, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

#[utoipa::path(
    patch,
    path = "/v1/admin/webhook-endpoints/{id}",
    tag = "webhook-endpoints",
    summary = "Change a webhook endpoint",
    description = "Changes the fields given: URL, event types, description, `enabled` (re-enable an endpoint the hub disabled), `ordered`. Audited as `webhook_endpoint.updated` with before and after. Requires `configure_routing`.",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`).")),
    request_body = WebhookEndpointPatch,
    responses(
        (status = 200, description = "Changed.", body = WebhookEndpoint),
        (status = 400, description = "The body is not valid JSON or could not be read.", body = ErrorEnvelope),
        (status = 401, description = UNAUTH, body = ErrorEnvelope),
        (status = 403, description = FORBIDDEN, body = ErrorEnvelope),
        (status = 404, description = "No such endpoint in the caller's account.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`.", body = ErrorEnvelope),
        (status = 422, description = "An invalid or refused URL, an unknown event type, or a description too long (details name the field).", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn update_endpoint(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<WebhookEndpoint>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    endpoint_id(&id)?;
    let patch: WebhookEndpointPatch = parse_json(&body)?;
    // Checked before the transaction: resolving a name must not hold a write lock.
    let url = match &patch.url {
        Some(u) => Some(checked_url(&state, u).await?),
        None => None,
    };
    let types = patch
        .event_types
        .as_deref()
        .map(checked_types)
        .transpose()?;
    let description = patch
        .description
        .as_deref()
        .map(checked_description)
        .transpose()?;
    let record = who.audit("webhook_endpoint.updated", "webhook_endpoint", Some(&id));
    let changed = state
        .store
        .update_webhook_endpoint(
            &who.account_id,
            &id,
            |mut f| {
                if let Some(url) = url {
                    f.url = url;
                }
                if let Some(types) = types {
                    f.event_types = types;
                }
                if let Some(d) = description {
                    f.description = d;
                }
                f.enabled = patch.enabled.unwrap_or(f.enabled);
                f.ordered = patch.ordered.unwrap_or(f.ordered);
                Ok::<_, ApiError>(f)
            },
            record,
        )
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))??;
    Ok(Json(changed))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/webhook-endpoints/{id}",
    tag = "webhook-endpoints",
    summary = "Remove a webhook endpoint",
    description = "Removes the endpoint and its deliveries (pending ones are not sent). Audited as `webhook_endpoint.deleted`. Requires `configure_routing`.",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`).")),
    responses(
        (status = 204, description = "Removed."),
        (status = 401, description = UNAUTH, body = ErrorEnvelope),
        (status = 403, description = FORBIDDEN, body = ErrorEnvelope),
        (status = 404, description = "No such endpoint in the caller's account.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn delete_endpoint(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    endpoint_id(&id)?;
    let record = who.audit("webhook_endpoint.deleted", "webhook_endpoint", Some(&id));
    if !state
        .store
        .delete_webhook_endpoint(&who.account_id, &id, record)
        .await?
    {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/admin/webhook-endpoints/{id}/rotate-secret",
    tag = "webhook-endpoints",
    summary = "Rotate a webhook endpoint's secret",
    description = "Generates a new secret, shown this once. The previous secret keeps signing beside it for the overlap (the body's `overlap_secs`, or `webhooks_out.rotation_overlap_secs`), so receivers can switch without losing a delivery. The body may be empty. Audited as `webhook_endpoint.secret_rotated` (without secrets). Requires `configure_routing`.",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`).")),
    request_body(content = Option<RotateSecretIn>),
    responses(
        (status = 200, description = "Rotated; keep the new secret.", body = RotatedSecret),
        (status = 400, description = "The body is not valid JSON or could not be read.", body = ErrorEnvelope),
        (status = 401, description = UNAUTH, body = ErrorEnvelope),
        (status = 403, description = FORBIDDEN, body = ErrorEnvelope),
        (status = 404, description = "No such endpoint in the caller's account.", body = ErrorEnvelope),
        (status = 422, description = "`overlap_secs` out of range.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn rotate_secret(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<RotatedSecret>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    endpoint_id(&id)?;
    let input: RotateSecretIn = if body.iter().all(u8::is_ascii_whitespace) {
        RotateSecretIn::default()
    } else {
        parse_json(&body)?
    };
    let overlap = input
        .overlap_secs
        .unwrap_or(state.config.webhooks_out.rotation_overlap_secs);
    if overlap > 7 * 24 * 3600 {
        return Err(ApiError::invalid_field(
            "overlap_secs",
            "must be 0 to 604800 (7 days)",
        ));
    }
    let secret = webhooks_out::new_secret();
    let until = ids::now_ms() + i64::try_from(overlap * 1000).unwrap_or(0);
    let record = who.audit(
        "webhook_endpoint.secret_rotated",
        "webhook_endpoint",
        Some(&id),
    );
    state
        .store
        .rotate_webhook_secret(
            &who.account_id,
            &id,
            &state.keys.sealer.seal(&secret),
            until,
            record,
        )
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    Ok(Json(RotatedSecret {
        secret,
        previous_secret_until_ms: until,
    }))
}

/// The endpoint, enabled, or the refusal.
async fn enabled_endpoint(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> Result<WebhookEndpoint, ApiError> {
    endpoint_id(id)?;
    let endpoint = state
        .store
        .webhook_endpoint(&who.account_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    if !endpoint.enabled {
        return Err(ApiError::conflict(
            "the endpoint is disabled; enable it (PATCH enabled: true) first",
        ));
    }
    Ok(endpoint)
}

#[utoipa::path(
    post,
    path = "/v1/admin/webhook-endpoints/{id}/test",
    tag = "webhook-endpoints",
    summary = "Send a test event",
    description = "Queues a signed `webhook.test` event to the endpoint, delivered like any other (same headers, schedule and visibility). Audited as `webhook_endpoint.tested`. Requires `configure_routing`.",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`).")),
    responses(
        (status = 202, description = "Queued; follow it in the deliveries list.", body = WebhookDelivery),
        (status = 401, description = UNAUTH, body = ErrorEnvelope),
        (status = 403, description = FORBIDDEN, body = ErrorEnvelope),
        (status = 404, description = "No such endpoint in the caller's account.", body = ErrorEnvelope),
        (status = 409, description = "The endpoint is disabled.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn send_test(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<WebhookDelivery>), ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let endpoint = enabled_endpoint(&state, &who, &id).await?;
    let data = json!({
        "endpoint_id": endpoint.id,
        "message": "A test event from Switchboard: your endpoint received and can verify it.",
    });
    let payload = webhooks_out::payload(webhooks_out::TEST_EVENT, ids::now_ms(), &data.to_string());
    let record = who.audit("webhook_endpoint.tested", "webhook_endpoint", Some(&id));
    let queued = state
        .store
        .queue_webhook_message(
            &who.account_id,
            &id,
            webhooks_out::TEST_EVENT,
            &payload,
            &ids::new(ids::WEBHOOK_MESSAGE),
            None,
            record,
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(queued)))
}

#[utoipa::path(
    get,
    path = "/v1/admin/webhook-endpoints/{id}/deliveries",
    tag = "webhook-endpoints",
    summary = "List an endpoint's deliveries",
    description = "Newest first: each message's state (`due`, `sending`, `succeeded`, `failed`), attempts, the receiver's last status and the start of its answer, and why the last attempt failed. Requires `configure_routing`.",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`)."), DeliveryQuery),
    responses(
        (status = 200, description = "One page, newest first.", body = WebhookDeliveryPage),
        (status = 401, description = UNAUTH, body = ErrorEnvelope),
        (status = 403, description = FORBIDDEN, body = ErrorEnvelope),
        (status = 404, description = "No such endpoint in the caller's account.", body = ErrorEnvelope),
        (status = 422, description = "A bad `state`, `limit` or `cursor`, or an unknown parameter.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn list_deliveries(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> Result<Json<WebhookDeliveryPage>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    endpoint_id(&id)?;
    if let Some(s) = query.state.as_deref()
        && !matches!(s, "due" | "sending" | "succeeded" | "failed")
    {
        return Err(ApiError::invalid_field(
            "state",
            "must be due, sending, succeeded or failed",
        ));
    }
    let limit = page_limit(query.limit)?;
    let cursor = id_cursor(query.cursor.as_deref(), ids::WEBHOOK_DELIVERY)?;
    if state
        .store
        .webhook_endpoint(&who.account_id, &id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    let items = state
        .store
        .list_webhook_deliveries(
            &who.account_id,
            &id,
            query.state.as_deref(),
            cursor.as_deref(),
            limit + 1,
        )
        .await?;
    let (data, next_cursor) = cut_page(items, limit, |d| d.id.clone());
    Ok(Json(WebhookDeliveryPage { data, next_cursor }))
}

#[utoipa::path(
    post,
    path = "/v1/admin/webhook-endpoints/{id}/deliveries/{delivery_id}/replay",
    tag = "webhook-endpoints",
    summary = "Replay a delivery",
    description = "Sends a finished delivery's message (`succeeded` or `failed`) once more, as a new delivery with the same `webhook-id` and body (signed afresh), on the full schedule. Audited as `webhook_delivery.replayed`. Requires `configure_routing`.",
    params(
        ("id" = String, Path, description = "The endpoint's id (`whe_…`)."),
        ("delivery_id" = String, Path, description = "The delivery's id (`whd_…`)."),
    ),
    responses(
        (status = 202, description = "Queued; follow it in the deliveries list.", body = WebhookDelivery),
        (status = 401, description = UNAUTH, body = ErrorEnvelope),
        (status = 403, description = FORBIDDEN, body = ErrorEnvelope),
        (status = 404, description = "No such endpoint or delivery in the caller's account.", body = ErrorEnvelope),
        (status = 409, description = "The endpoint is disabled, or the delivery is not finished yet.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn replay_delivery(
    State(state): State<AppState>,
    who: Principal,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<WebhookDelivery>), ApiError> {
    who.require(Permission::ConfigureRouting)?;
    enabled_endpoint(&state, &who, &id).await?;
    if !ids::has_prefix(&delivery_id, ids::WEBHOOK_DELIVERY) {
        return Err(ApiError::not_found("webhook delivery"));
    }
    let (original, payload) = state
        .store
        .webhook_delivery(&who.account_id, &id, &delivery_id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook delivery"))?;
    if !matches!(original.state.as_str(), "succeeded" | "failed") {
        return Err(ApiError::conflict(
            "the delivery is not finished yet; it is still being attempted",
        ));
    }
    let record = who.audit(
        "webhook_delivery.replayed",
        "webhook_delivery",
        Some(&delivery_id),
    );
    let queued = state
        .store
        .queue_webhook_message(
            &who.account_id,
            &id,
            &original.event_type,
            &payload,
            &original.msg_id,
            Some(&original.id),
            record,
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(queued)))
}
