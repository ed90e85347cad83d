//! Inbox administration: `/v1/admin/inboxes` (create, list, read, change, deactivate), for
//! callers granted `configure_routing`.
//!
//! Provider credentials are write-only: they are sealed before they reach the store, replaced
//! wholesale when given, and shown back only as a masked `credentials_hint`. Audit snapshots
//! use the same view, so they never hold a secret either. Inboxes declared in config keep what
//! the config declares; only their team, branch and `active` flag can be changed here.
//!
//! Every change is committed with its audit record, then announced so every node reloads its
//! registry (see `crate::inboxes`). Deactivation is the only removal: rows stay for the
//! conversations and the audit trail that name them, and webhooks to a deactivated inbox are
//! answered as for an unknown one.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Deserializer, Serialize};
use switchboard_connectors::Channel;

use super::{ApiQuery, AppState, RawBody, parse_json};
use crate::access::{Permission, Principal};
use crate::config::{is_e164, is_slug};
use crate::error::{ApiError, ErrorEnvelope};
use crate::ids;
use crate::inboxes::Credentials;
use crate::store::audit;
use crate::store::inboxes::{self as rows, InboxRow, Taken};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/inboxes", get(list_inboxes).post(create_inbox))
        .route("/v1/admin/whatsapp-apps", get(list_whatsapp_apps))
        .route(
            "/v1/admin/inboxes/{id}",
            get(get_inbox).patch(update_inbox).delete(deactivate_inbox),
        )
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        create_inbox,
        list_inboxes,
        get_inbox,
        update_inbox,
        deactivate_inbox,
        list_whatsapp_apps
    ),
    components(schemas(
        InboxIn,
        InboxPatch,
        CredentialsIn,
        InboxOut,
        InboxList,
        WebhookUrls,
        WhatsappApps
    ))
)]
pub struct InboxesApi;

const MAX_NAME_CHARS: usize = 200;
const MAX_SECRET_CHARS: usize = 512;
const DEFAULT_LIMIT: i64 = 25;
const MAX_LIMIT: i64 = 100;

/// Provider secrets. Which ones a channel takes: WhatsApp `access_token`; SMS
/// `twilio_auth_token` (required) and `twilio_account_sid`; web chat `identity_secret`.
#[derive(Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsIn {
    pub access_token: Option<String>,
    pub twilio_auth_token: Option<String>,
    pub twilio_account_sid: Option<String>,
    pub identity_secret: Option<String>,
}

/// A new inbox.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboxIn {
    /// Lowercase letters, digits, `-` and `_`; names the inbox in webhook paths.
    #[schema(required = true, value_type = String, example = "support-sms")]
    pub slug: Option<String>,
    #[schema(required = true, value_type = String)]
    pub name: Option<String>,
    /// `whatsapp`, `sms` or `webchat`.
    #[schema(required = true, value_type = String, example = "sms")]
    pub channel: Option<String>,
    /// WhatsApp only.
    pub phone_number_id: Option<String>,
    /// WhatsApp only: the name of a configured `whatsapp_apps` entry.
    pub whatsapp_app: Option<String>,
    /// SMS only, E.164.
    pub phone_number: Option<String>,
    pub credentials: Option<CredentialsIn>,
    pub team_id: Option<String>,
    pub branch_id: Option<String>,
}

/// A change; absent fields stay as they are, `null` clears `team_id`/`branch_id`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboxPatch {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub team_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub branch_id: Option<Option<String>>,
    /// Replaces all stored credentials of the inbox.
    pub credentials: Option<CredentialsIn>,
    pub active: Option<bool>,
}

/// Tells an explicit `null` (`Some(None)`) from an absent field (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// An inbox as admins (and the audit log) see it: everything but the secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InboxOut {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub channel: String,
    pub phone_number_id: Option<String>,
    pub phone_number: Option<String>,
    pub whatsapp_app: Option<String>,
    pub team_id: Option<String>,
    pub branch_id: Option<String>,
    /// `config` or `api`.
    pub managed_by: String,
    pub active: bool,
    /// Each stored secret, masked: `{"twilio_auth_token":"••••cdef"}`.
    #[schema(value_type = Object)]
    pub credentials_hint: BTreeMap<String, String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Where the provider must call, built from `server.public_url`: paste these into Meta's
    /// or Twilio's dashboard, or the script tag into the business's site. Not in audit records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_urls: Option<WebhookUrls>,
}

/// The addresses a provider calls for one inbox (only those of its channel are present).
#[derive(Debug, Serialize, Clone, PartialEq, Eq, utoipa::ToSchema)]
pub struct WebhookUrls {
    /// WhatsApp: Meta's "Callback URL" (the app's, shared by its numbers); the verify token is
    /// the app's `verify_token` in the configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    /// SMS: Twilio's "A message comes in" webhook (HTTP POST).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incoming: Option<String>,
    /// SMS: the status callback Twilio calls for delivery reports (the hub sends it with
    /// every reply; set it on the number or Messaging Service too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Web chat: the tag to paste into the business's pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub widget_script: Option<String>,
}

impl InboxOut {
    /// The view an admin gets: with the webhook addresses under `public_url`.
    fn with_urls(mut self, public_url: &str) -> Self {
        let base = public_url.trim_end_matches('/');
        let mut urls = WebhookUrls {
            callback: None,
            incoming: None,
            status: None,
            widget_script: None,
        };
        match self.channel.as_str() {
            "whatsapp" => {
                urls.callback = self
                    .whatsapp_app
                    .as_deref()
                    .map(|app| format!("{base}/webhooks/whatsapp/{app}"));
            }
            "sms" => {
                urls.incoming = Some(format!("{base}/webhooks/twilio/{}", self.slug));
                urls.status = Some(format!("{base}/webhooks/twilio/{}/status", self.slug));
            }
            _ => {
                urls.widget_script = Some(format!(
                    "<script src=\"{base}/widget.js\" data-inbox=\"{}\" async></script>",
                    self.slug
                ));
            }
        }
        self.webhook_urls = Some(urls);
        self
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct InboxList {
    pub data: Vec<InboxOut>,
    pub next_cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

impl From<&InboxRow> for InboxOut {
    fn from(row: &InboxRow) -> Self {
        let (phone_number_id, phone_number) = match row.channel.as_str() {
            "whatsapp" => (row.provider_ref.clone(), None),
            "sms" => (None, row.provider_ref.clone()),
            _ => (None, None),
        };
        InboxOut {
            id: row.id.clone(),
            slug: row.slug.clone(),
            name: row.name.clone(),
            channel: row.channel.clone(),
            phone_number_id,
            phone_number,
            whatsapp_app: row.whatsapp_app.clone(),
            team_id: row.team_id.clone(),
            branch_id: row.branch_id.clone(),
            managed_by: row.managed_by.clone(),
            active: row.active,
            credentials_hint: row
                .credentials_hint
                .as_deref()
                .and_then(|h| serde_json::from_str(h).ok())
                .unwrap_or_default(),
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
            webhook_urls: None,
        }
    }
}

fn required(field: &str, value: Option<String>) -> Result<String, ApiError> {
    value.ok_or_else(|| ApiError::invalid_field(field, "is required"))
}

fn valid_name(name: String) -> Result<String, ApiError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid_field(
            "name",
            format!("must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// Checks the secrets a channel takes (and that SMS has its token), as config does.
fn valid_credentials(channel: Channel, input: CredentialsIn) -> Result<Credentials, ApiError> {
    let allowed: &[&str] = match channel {
        Channel::Whatsapp => &["access_token"],
        Channel::Sms => &["twilio_auth_token", "twilio_account_sid"],
        Channel::Webchat => &["identity_secret"],
    };
    let credentials = Credentials {
        access_token: input.access_token,
        twilio_auth_token: input.twilio_auth_token,
        twilio_account_sid: input.twilio_account_sid,
        identity_secret: input.identity_secret,
    };
    for (name, value) in [
        ("access_token", &credentials.access_token),
        ("twilio_auth_token", &credentials.twilio_auth_token),
        ("twilio_account_sid", &credentials.twilio_account_sid),
        ("identity_secret", &credentials.identity_secret),
    ] {
        let Some(value) = value else { continue };
        let field = format!("credentials.{name}");
        if !allowed.contains(&name) {
            return Err(ApiError::invalid_field(
                &field,
                format!("is not used by channel `{}`", channel.as_str()),
            ));
        }
        if value.trim().is_empty() || value.chars().count() > MAX_SECRET_CHARS {
            return Err(ApiError::invalid_field(
                &field,
                format!("must be 1 to {MAX_SECRET_CHARS} characters"),
            ));
        }
    }
    if channel == Channel::Sms && credentials.twilio_auth_token.is_none() {
        return Err(ApiError::invalid_field(
            "credentials.twilio_auth_token",
            "required for channel `sms`",
        ));
    }
    Ok(credentials)
}

/// A team or branch named in a request must belong to the caller's account.
async fn check_org(
    state: &AppState,
    account_id: &str,
    team_id: Option<&str>,
    branch_id: Option<&str>,
) -> Result<(), ApiError> {
    if let Some(team) = team_id
        && state.store.get_team(account_id, team).await?.is_none()
    {
        return Err(ApiError::invalid_field("team_id", "no such team"));
    }
    if let Some(branch) = branch_id
        && state.store.get_branch(account_id, branch).await?.is_none()
    {
        return Err(ApiError::invalid_field("branch_id", "no such branch"));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/v1/admin/inboxes",
    tag = "inboxes",
    request_body = InboxIn,
    responses(
        (status = 201, description = "Created", body = InboxOut),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The role lacks configure_routing", body = ErrorEnvelope),
        (status = 409, description = "Slug or provider number taken (details name the field)", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "Invalid field (details name it)", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn create_inbox(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let input: InboxIn = parse_json(&body)?;
    let slug = required("slug", input.slug)?;
    if !is_slug(&slug) {
        return Err(ApiError::invalid_field(
            "slug",
            "must be 1 to 64 lowercase letters, digits, - and _",
        ));
    }
    let name = valid_name(required("name", input.name)?)?;
    let channel = required("channel", input.channel)?;
    let channel = Channel::parse(&channel).ok_or_else(|| {
        ApiError::invalid_field("channel", "must be one of whatsapp, sms, webchat")
    })?;
    let unused = |field: &str, present: bool| {
        if present {
            Err(ApiError::invalid_field(
                field,
                format!("is not used by channel `{}`", channel.as_str()),
            ))
        } else {
            Ok(())
        }
    };
    let provider_ref = match channel {
        Channel::Whatsapp => {
            unused("phone_number", input.phone_number.is_some())?;
            let id = required("phone_number_id", input.phone_number_id)?;
            if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ApiError::invalid_field(
                    "phone_number_id",
                    "must be Meta's numeric phone number id",
                ));
            }
            let app = input
                .whatsapp_app
                .as_deref()
                .ok_or_else(|| ApiError::invalid_field("whatsapp_app", "is required"))?;
            if state
                .registry
                .app(app)
                .is_none_or(|a| a.account_id != who.account_id)
            {
                return Err(ApiError::invalid_field(
                    "whatsapp_app",
                    format!("no configured whatsapp_apps entry is named `{app}`"),
                ));
            }
            Some(id)
        }
        Channel::Sms => {
            unused("phone_number_id", input.phone_number_id.is_some())?;
            unused("whatsapp_app", input.whatsapp_app.is_some())?;
            let number = required("phone_number", input.phone_number)?;
            if !is_e164(&number) {
                return Err(ApiError::invalid_field(
                    "phone_number",
                    "must be E.164, like +14155550100",
                ));
            }
            Some(number)
        }
        Channel::Webchat => {
            unused("phone_number_id", input.phone_number_id.is_some())?;
            unused("whatsapp_app", input.whatsapp_app.is_some())?;
            unused("phone_number", input.phone_number.is_some())?;
            None
        }
    };
    let credentials = valid_credentials(channel, input.credentials.unwrap_or_default())?;
    check_org(
        &state,
        &who.account_id,
        input.team_id.as_deref(),
        input.branch_id.as_deref(),
    )
    .await?;
    let now = ids::now_ms();
    let row = InboxRow {
        id: ids::new(ids::INBOX),
        account_id: who.account_id.clone(),
        slug,
        channel: channel.as_str().to_owned(),
        name,
        provider_ref,
        whatsapp_app: input.whatsapp_app,
        team_id: input.team_id,
        branch_id: input.branch_id,
        credentials: credentials.seal(&state.keys.sealer),
        credentials_hint: credentials.hint_json(),
        managed_by: "api".to_owned(),
        active: true,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let view = InboxOut::from(&row);
    let mut tx = state.store.begin().await?;
    if let Err(taken) = rows::insert(&mut tx, &row).await? {
        return Err(match taken {
            Taken::Slug => ApiError::conflict_field("slug", "is already used by another inbox"),
            Taken::ProviderRef => ApiError::conflict_field(
                if channel == Channel::Whatsapp {
                    "phone_number_id"
                } else {
                    "phone_number"
                },
                "is already used by another inbox",
            ),
        });
    }
    let record = who
        .audit("inbox.created", "inbox", Some(&row.id))
        .after(&view);
    audit::append(&mut tx, &record).await?;
    tx.commit().await?;
    state
        .registry
        .announce(&state.broker, &row.account_id, &row.id)
        .await;
    Ok((
        StatusCode::CREATED,
        Json(view.with_urls(&state.config.server.public_url)),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/admin/inboxes",
    tag = "inboxes",
    params(
        ("limit" = Option<i64>, Query, description = "1 to 100, default 25"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
    ),
    responses(
        (status = 200, description = "Inboxes by id, active or not", body = InboxList),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The role lacks configure_routing", body = ErrorEnvelope),
        (status = 422, description = "A bad `limit` or `cursor`, or a query parameter this list does not take", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn list_inboxes(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<InboxList>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let limit = match query.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
    };
    if let Some(cursor) = &query.cursor
        && !ids::has_prefix(cursor, ids::INBOX)
    {
        return Err(ApiError::invalid_field(
            "cursor",
            "is not a cursor from this list",
        ));
    }
    let mut items = state
        .store
        .list_inboxes(&who.account_id, query.cursor.as_deref(), limit + 1)
        .await?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = more.then(|| items.last().map(|i| i.id.clone())).flatten();
    Ok(Json(InboxList {
        data: items
            .iter()
            .map(|row| InboxOut::from(row).with_urls(&state.config.server.public_url))
            .collect(),
        next_cursor,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/admin/inboxes/{id}",
    tag = "inboxes",
    params(("id" = String, Path, description = "inb_…")),
    responses(
        (status = 200, description = "The inbox", body = InboxOut),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The role lacks configure_routing", body = ErrorEnvelope),
        (status = 404, description = "No such inbox", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn get_inbox(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<InboxOut>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let row = state
        .store
        .get_inbox(&who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("inbox"))?;
    Ok(Json(
        InboxOut::from(&row).with_urls(&state.config.server.public_url),
    ))
}

#[utoipa::path(
    patch,
    path = "/v1/admin/inboxes/{id}",
    tag = "inboxes",
    params(("id" = String, Path, description = "inb_…")),
    request_body = InboxPatch,
    responses(
        (status = 200, description = "The changed inbox", body = InboxOut),
        (status = 400, description = "The body is not valid JSON or could not be read", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The role lacks configure_routing", body = ErrorEnvelope),
        (status = 404, description = "No such inbox", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`", body = ErrorEnvelope),
        (status = 422, description = "Invalid field, or a field the config declares", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn update_inbox(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<InboxOut>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let patch: InboxPatch = parse_json(&body)?;
    let name = patch.name.map(valid_name).transpose()?;
    check_org(
        &state,
        &who.account_id,
        patch.team_id.as_ref().and_then(Option::as_deref),
        patch.branch_id.as_ref().and_then(Option::as_deref),
    )
    .await?;

    let mut tx = state.store.begin().await?;
    let before = rows::lock(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("inbox"))?;
    if before.managed_by == "config" {
        for (field, present) in [
            ("name", name.is_some()),
            ("credentials", patch.credentials.is_some()),
        ] {
            if present {
                return Err(ApiError::invalid_field(
                    field,
                    "is declared in the configuration file of this inbox; change it there",
                ));
            }
        }
    }
    let mut after = before.clone();
    if let Some(name) = name {
        after.name = name;
    }
    if let Some(team_id) = patch.team_id {
        after.team_id = team_id;
    }
    if let Some(branch_id) = patch.branch_id {
        after.branch_id = branch_id;
    }
    if let Some(active) = patch.active {
        after.active = active;
    }
    let rotated = match patch.credentials {
        Some(input) => {
            let channel = Channel::parse(&before.channel)
                .ok_or_else(|| ApiError::internal(format!("inbox {id} has a bad channel")))?;
            let credentials = valid_credentials(channel, input)?;
            after.credentials = credentials.seal(&state.keys.sealer);
            after.credentials_hint = credentials.hint_json();
            true
        }
        None => false,
    };
    if after == before {
        // Nothing changed: no write, no audit record, no announcement.
        return Ok(Json(
            InboxOut::from(&before).with_urls(&state.config.server.public_url),
        ));
    }
    after.updated_at_ms = ids::now_ms().max(before.updated_at_ms + 1);
    rows::update(&mut tx, &after).await?;
    let (old, new) = (InboxOut::from(&before), InboxOut::from(&after));
    let fields_changed = InboxOut {
        credentials_hint: old.credentials_hint.clone(),
        updated_at_ms: old.updated_at_ms,
        ..new.clone()
    } != old;
    if fields_changed {
        let record = who
            .audit("inbox.updated", "inbox", Some(&id))
            .before(&old)
            .after(&new);
        audit::append(&mut tx, &record).await?;
    }
    if rotated {
        let record = who
            .audit("inbox.credentials_rotated", "inbox", Some(&id))
            .before(serde_json::json!({ "credentials_hint": old.credentials_hint }))
            .after(serde_json::json!({ "credentials_hint": new.credentials_hint }));
        audit::append(&mut tx, &record).await?;
    }
    tx.commit().await?;
    state
        .registry
        .announce(&state.broker, &after.account_id, &after.id)
        .await;
    Ok(Json(new.with_urls(&state.config.server.public_url)))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/inboxes/{id}",
    tag = "inboxes",
    params(("id" = String, Path, description = "inb_…")),
    responses(
        (status = 204, description = "Deactivated (or already inactive)"),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The role lacks configure_routing", body = ErrorEnvelope),
        (status = 404, description = "No such inbox", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn deactivate_inbox(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let mut tx = state.store.begin().await?;
    let before = rows::lock(&mut tx, &who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("inbox"))?;
    if !before.active {
        return Ok(StatusCode::NO_CONTENT);
    }
    let after = InboxRow {
        active: false,
        updated_at_ms: ids::now_ms().max(before.updated_at_ms + 1),
        ..before.clone()
    };
    rows::update(&mut tx, &after).await?;
    let record = who
        .audit("inbox.deactivated", "inbox", Some(&id))
        .before(InboxOut::from(&before))
        .after(InboxOut::from(&after));
    audit::append(&mut tx, &record).await?;
    tx.commit().await?;
    state
        .registry
        .announce(&state.broker, &after.account_id, &after.id)
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// The WhatsApp apps (`[[whatsapp_apps]]` in the configuration) an inbox of this account can
/// use, with the address Meta calls; never their secrets.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WhatsappApps {
    pub data: Vec<WhatsappAppOut>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WhatsappAppOut {
    pub name: String,
    /// Meta's "Callback URL" for this app.
    pub callback_url: String,
}

#[utoipa::path(
    get,
    path = "/v1/admin/whatsapp-apps",
    tag = "inboxes",
    responses(
        (status = 200, description = "The configured apps this account may use", body = WhatsappApps),
        (status = 401, description = "Missing, invalid or expired credentials", body = ErrorEnvelope),
        (status = 403, description = "The role lacks configure_routing", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
pub async fn list_whatsapp_apps(
    State(state): State<AppState>,
    who: Principal,
) -> Result<Json<WhatsappApps>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let default = state.config.accounts.default.as_str();
    let base = state.config.server.public_url.trim_end_matches('/');
    let mut data = Vec::new();
    for app in &state.config.whatsapp_apps {
        let slug = app.account.as_deref().unwrap_or(default);
        if state.store.find_account(slug).await?.as_deref() == Some(who.account_id.as_str()) {
            data.push(WhatsappAppOut {
                name: app.name.clone(),
                callback_url: format!("{base}/webhooks/whatsapp/{}", app.name),
            });
        }
    }
    Ok(Json(WhatsappApps { data }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::OpenApi;

    #[test]
    fn openapi_lists_every_inbox_route() {
        let spec = serde_json::to_value(InboxesApi::openapi()).expect("serializes");
        let paths = spec["paths"].as_object().expect("paths");
        assert!(paths.contains_key("/v1/admin/inboxes"));
        let one = &paths["/v1/admin/inboxes/{id}"];
        for method in ["get", "patch", "delete"] {
            assert!(one.get(method).is_some(), "{method}");
        }
        assert!(spec["components"]["schemas"]["InboxOut"].is_object());
    }
}
