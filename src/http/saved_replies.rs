//! Canned responses and message templates over REST (docs/OUTBOUND.md):
//!
//! - `GET /v1/canned-responses`, `GET /v1/templates`: what an agent can reply with
//!   (`reply_to_customer`, or `configure_routing`);
//! - `/v1/admin/canned-responses`, `/v1/admin/templates`: adding, changing and removing them
//!   (`configure_routing`), each change audited.
//!
//! Everything a reply will rely on is checked here, when it is saved: a canned response's
//! `{{variables}}` parse, a template belongs to a WhatsApp or SMS inbox of the account and its
//! body's `{{n}}` placeholders agree with its parameter count.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::api::{cut_page, id_cursor, page_limit};
use super::compose::placeholders;
use super::{ApiQuery, AppState, RawBody, parse_json};
use crate::access::{Permission, Principal};
use crate::error::{ApiError, ErrorEnvelope};
use crate::ids;
use crate::store::saved_replies::{CannedResponse, Saved, Template};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/canned-responses", get(list_canned))
        .route("/v1/admin/canned-responses", post(create_canned))
        .route(
            "/v1/admin/canned-responses/{id}",
            put(update_canned).delete(delete_canned),
        )
        .route("/v1/templates", get(list_templates))
        .route("/v1/admin/templates", post(create_template))
        .route(
            "/v1/admin/templates/{id}",
            put(update_template).delete(delete_template),
        )
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list_canned,
    create_canned,
    update_canned,
    delete_canned,
    list_templates,
    create_template,
    update_template,
    delete_template
))]
pub struct SavedRepliesApi;

/// Agents read what they may reply with; admins may read what they configure.
fn may_read(who: &Principal) -> Result<(), ApiError> {
    who.require(Permission::ReplyToCustomer)
        .or_else(|_| who.require(Permission::ConfigureRouting))
        .map(|_| ())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CannedQuery {
    /// Only short codes starting with this.
    pub short_code_prefix: Option<String>,
    /// 1 to 100, default 25.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CannedPage {
    pub data: Vec<CannedResponse>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CannedIn {
    /// 1 to 64 lowercase letters, digits, `-` and `_`; unique in the account.
    pub short_code: String,
    /// 1 to 4096 characters. `{{name}}` placeholders: the built-in `contact.name`,
    /// `contact.phone` and `agent.name`, or the reply's own `variables` (lowercase letters,
    /// digits and `_`).
    pub body: String,
}

fn checked_canned(input: CannedIn) -> Result<CannedIn, ApiError> {
    if !crate::config::is_slug(&input.short_code) {
        return Err(ApiError::invalid_field(
            "short_code",
            "must be 1 to 64 lowercase letters, digits, - and _",
        ));
    }
    let body = input.body.trim();
    if body.is_empty() || body.chars().count() > 4096 {
        return Err(ApiError::invalid_field(
            "body",
            "must be 1 to 4096 characters",
        ));
    }
    placeholders(body).map_err(|m| ApiError::invalid_field("body", m))?;
    Ok(CannedIn {
        short_code: input.short_code,
        body: body.to_owned(),
    })
}

const SHORT_CODE_TAKEN: &str = "the account already has a canned response with this short code";

#[utoipa::path(
    get,
    path = "/v1/canned-responses",
    tag = "delivery",
    summary = "List canned responses",
    description = "The account's saved replies, oldest first. Requires `reply_to_customer` or `configure_routing`.",
    params(CannedQuery),
    responses(
        (status = 200, description = "One page.", body = CannedPage),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role grants neither permission.", body = ErrorEnvelope),
        (status = 422, description = "A bad `limit` or `cursor`, or an unknown parameter.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn list_canned(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<CannedQuery>,
) -> Result<Json<CannedPage>, ApiError> {
    may_read(&who)?;
    let limit = page_limit(query.limit)?;
    let cursor = id_cursor(query.cursor.as_deref(), ids::CANNED_RESPONSE)?;
    let items = state
        .store
        .list_canned(
            &who.account_id,
            query.short_code_prefix.as_deref(),
            cursor.as_deref(),
            limit + 1,
        )
        .await?;
    let (data, next_cursor) = cut_page(items, limit, |c| c.id.clone());
    Ok(Json(CannedPage { data, next_cursor }))
}

#[utoipa::path(
    post,
    path = "/v1/admin/canned-responses",
    tag = "delivery",
    summary = "Add a canned response",
    description = "Audited as `canned_response.created`. Requires `configure_routing`.",
    request_body = CannedIn,
    responses(
        (status = 201, description = "Saved.", body = CannedResponse),
        (status = 400, description = "The body is not valid JSON or could not be read.", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`.", body = ErrorEnvelope),
        (status = 409, description = "The short code is taken.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`.", body = ErrorEnvelope),
        (status = 422, description = "A bad short code, an empty or too long body, or a malformed or unknown `{{variable}}` (details name the field).", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn create_canned(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<CannedResponse>), ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let input = checked_canned(parse_json(&body)?)?;
    let now = ids::now_ms();
    let canned = CannedResponse {
        id: ids::new(ids::CANNED_RESPONSE),
        short_code: input.short_code,
        body: input.body,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let record = who.audit(
        "canned_response.created",
        "canned_response",
        Some(&canned.id),
    );
    match state
        .store
        .create_canned(&who.account_id, canned, record)
        .await?
    {
        Saved::Done(c) => Ok((StatusCode::CREATED, Json(c))),
        Saved::Taken | Saved::Missing => {
            Err(ApiError::conflict_field("short_code", SHORT_CODE_TAKEN))
        }
    }
}

#[utoipa::path(
    put,
    path = "/v1/admin/canned-responses/{id}",
    tag = "delivery",
    summary = "Change a canned response",
    description = "Replaces its short code and body. Audited as `canned_response.updated`. Requires `configure_routing`.",
    params(("id" = String, Path, description = "The canned response's id (`cnd_…`).")),
    request_body = CannedIn,
    responses(
        (status = 200, description = "Saved.", body = CannedResponse),
        (status = 400, description = "The body is not valid JSON or could not be read.", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`.", body = ErrorEnvelope),
        (status = 404, description = "No such canned response in the account.", body = ErrorEnvelope),
        (status = 409, description = "The short code is taken.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`.", body = ErrorEnvelope),
        (status = 422, description = "A bad short code, an empty or too long body, or a malformed or unknown `{{variable}}`.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn update_canned(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<CannedResponse>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let input = checked_canned(parse_json(&body)?)?;
    let record = who.audit("canned_response.updated", "canned_response", Some(&id));
    match state
        .store
        .update_canned(
            &who.account_id,
            &id,
            &input.short_code,
            &input.body,
            ids::now_ms(),
            record,
        )
        .await?
    {
        Saved::Done(c) => Ok(Json(c)),
        Saved::Taken => Err(ApiError::conflict_field("short_code", SHORT_CODE_TAKEN)),
        Saved::Missing => Err(ApiError::not_found("canned response")),
    }
}

#[utoipa::path(
    delete,
    path = "/v1/admin/canned-responses/{id}",
    tag = "delivery",
    summary = "Remove a canned response",
    description = "Replies already sent with it keep their text. Audited as `canned_response.deleted`. Requires `configure_routing`.",
    params(("id" = String, Path, description = "The canned response's id (`cnd_…`).")),
    responses(
        (status = 204, description = "Removed."),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`.", body = ErrorEnvelope),
        (status = 404, description = "No such canned response in the account.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn delete_canned(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let record = who.audit("canned_response.deleted", "canned_response", Some(&id));
    state
        .store
        .delete_canned(&who.account_id, &id, record)
        .await?
        .ok_or_else(|| ApiError::not_found("canned response"))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TemplateQuery {
    /// Only this inbox's templates.
    pub inbox_id: Option<String>,
    /// 1 to 100, default 25.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplatePage {
    pub data: Vec<Template>,
    pub next_cursor: Option<String>,
}

/// A template as approved on the provider's side, registered for one inbox.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateIn {
    /// A WhatsApp or SMS inbox of the account (`inb_…`). Not changed by `PUT`: leave it out
    /// there, or give the same inbox.
    pub inbox_id: Option<String>,
    /// WhatsApp: the template's name (lowercase letters, digits and `_`, up to 512). SMS: the
    /// Twilio Content SID (`HX` and 32 hex digits).
    pub name: String,
    /// WhatsApp: the language code it was approved in (`en_US`, `pt_BR`, `es`). SMS: the
    /// Content template's language (same form).
    pub language: String,
    /// How many body parameters a send fills, 0 to 100. May be left out when `body` is given:
    /// it is then the number of `{{n}}` placeholders.
    pub parameters: Option<i64>,
    /// The approved text, with `{{1}}`, `{{2}}`, … for the parameters; shown to agents.
    pub body: Option<String>,
}

/// How many positional parameters `{{1}}`…`{{n}}` a template body uses: each of 1 to n at
/// least once, and no other `{{…}}`.
fn positional(body: &str) -> Result<i64, String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "has a {{ without its closing }}".to_owned())?;
        let n: i64 = after[..end]
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                format!(
                    "{{{{{}}}}} is not a parameter ({{{{1}}}} to {{{{100}}}})",
                    &after[..end]
                )
            })?;
        seen.insert(n);
        rest = &after[end + 2..];
    }
    let count = i64::try_from(seen.len()).unwrap_or(i64::MAX);
    match seen.last() {
        Some(&last) if last != count => Err(format!(
            "uses {{{{{last}}}}} but not every parameter before it"
        )),
        _ => Ok(count),
    }
}

/// Checks `input` for an inbox of `channel` and returns (name, language, parameters, body).
fn checked_template(
    input: TemplateIn,
    channel: &str,
) -> Result<(String, String, i64, Option<String>), ApiError> {
    let name = input.name.trim().to_owned();
    let name_ok = match channel {
        "whatsapp" => {
            (1..=512).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }
        _ => {
            name.len() == 34
                && name.starts_with("HX")
                && name.bytes().skip(2).all(|b| b.is_ascii_hexdigit())
        }
    };
    if !name_ok {
        let rule = if channel == "whatsapp" {
            "must be the WhatsApp template name: lowercase letters, digits and _"
        } else {
            "must be a Twilio Content SID: HX and 32 hex digits"
        };
        return Err(ApiError::invalid_field("name", rule));
    }
    let language = input.language.trim().to_owned();
    let mut parts = language.split(['_', '-']);
    let primary = parts.next().unwrap_or_default();
    let language_ok = (2..=3).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_lowercase())
        && parts
            .all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !language_ok {
        return Err(ApiError::invalid_field(
            "language",
            "must be a language code such as en, en_US or pt_BR",
        ));
    }
    let body = input
        .body
        .map(|b| b.trim().to_owned())
        .filter(|b| !b.is_empty());
    if body.as_ref().is_some_and(|b| b.chars().count() > 4096) {
        return Err(ApiError::invalid_field(
            "body",
            "must be at most 4096 characters",
        ));
    }
    let in_body = body
        .as_deref()
        .map(positional)
        .transpose()
        .map_err(|m| ApiError::invalid_field("body", m))?;
    let parameters = match (input.parameters, in_body) {
        (Some(n), _) if !(0..=100).contains(&n) => {
            return Err(ApiError::invalid_field("parameters", "must be 0 to 100"));
        }
        (Some(n), Some(b)) if n != b => {
            return Err(ApiError::invalid_field(
                "parameters",
                format!("is {n}, but the body has {b} placeholders"),
            ));
        }
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => {
            return Err(ApiError::invalid_field(
                "parameters",
                "is required when there is no body",
            ));
        }
    };
    Ok((name, language, parameters, body))
}

const TEMPLATE_TAKEN: &str = "the inbox already has a template of this name in this language";

#[utoipa::path(
    get,
    path = "/v1/templates",
    tag = "delivery",
    summary = "List message templates",
    description = "The templates agents may send, oldest first; `inbox_id` narrows to one inbox. Requires `reply_to_customer` or `configure_routing`.",
    params(TemplateQuery),
    responses(
        (status = 200, description = "One page.", body = TemplatePage),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role grants neither permission.", body = ErrorEnvelope),
        (status = 422, description = "A bad `limit` or `cursor`, or an unknown parameter.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn list_templates(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<TemplateQuery>,
) -> Result<Json<TemplatePage>, ApiError> {
    may_read(&who)?;
    let limit = page_limit(query.limit)?;
    let cursor = id_cursor(query.cursor.as_deref(), ids::TEMPLATE)?;
    let items = state
        .store
        .list_templates(
            &who.account_id,
            query.inbox_id.as_deref(),
            cursor.as_deref(),
            limit + 1,
        )
        .await?;
    let (data, next_cursor) = cut_page(items, limit, |t| t.id.clone());
    Ok(Json(TemplatePage { data, next_cursor }))
}

#[utoipa::path(
    post,
    path = "/v1/admin/templates",
    tag = "delivery",
    summary = "Register a message template",
    description = "Registers a template approved on the provider's side for one WhatsApp or SMS inbox, so agents can send it and replies are checked against it before anything is queued. Audited as `template.created`. Requires `configure_routing`.",
    request_body = TemplateIn,
    responses(
        (status = 201, description = "Registered.", body = Template),
        (status = 400, description = "The body is not valid JSON or could not be read.", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`.", body = ErrorEnvelope),
        (status = 409, description = "The inbox has this name in this language already.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`.", body = ErrorEnvelope),
        (status = 422, description = "No such WhatsApp or SMS inbox, a name or language of the wrong form, or parameters that disagree with the body (details name the field).", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn create_template(
    State(state): State<AppState>,
    who: Principal,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<Template>), ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let input: TemplateIn = parse_json(&body)?;
    let inbox_id = input
        .inbox_id
        .clone()
        .ok_or_else(|| ApiError::invalid_field("inbox_id", "is required"))?;
    let inbox = state
        .store
        .get_inbox(&who.account_id, &inbox_id)
        .await?
        .filter(|i| matches!(i.channel.as_str(), "whatsapp" | "sms"))
        .ok_or_else(|| {
            ApiError::invalid_field("inbox_id", "is not a WhatsApp or SMS inbox of the account")
        })?;
    let (name, language, parameters, body) = checked_template(input, &inbox.channel)?;
    let now = ids::now_ms();
    let template = Template {
        id: ids::new(ids::TEMPLATE),
        inbox_id,
        name,
        language,
        parameters,
        body,
        created_at_ms: now,
        updated_at_ms: now,
    };
    let record = who.audit("template.created", "template", Some(&template.id));
    match state
        .store
        .create_template(&who.account_id, template, record)
        .await?
    {
        Saved::Done(t) => Ok((StatusCode::CREATED, Json(t))),
        Saved::Taken | Saved::Missing => Err(ApiError::conflict_field("name", TEMPLATE_TAKEN)),
    }
}

#[utoipa::path(
    put,
    path = "/v1/admin/templates/{id}",
    tag = "delivery",
    summary = "Change a message template",
    description = "Replaces its name, language, parameter count and body; the inbox stays. Audited as `template.updated`. Requires `configure_routing`.",
    params(("id" = String, Path, description = "The template's id (`tpl_…`).")),
    request_body = TemplateIn,
    responses(
        (status = 200, description = "Saved.", body = Template),
        (status = 400, description = "The body is not valid JSON or could not be read.", body = ErrorEnvelope),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`.", body = ErrorEnvelope),
        (status = 404, description = "No such template in the account.", body = ErrorEnvelope),
        (status = 409, description = "The inbox has this name in this language already.", body = ErrorEnvelope),
        (status = 413, description = "The body is larger than `server.max_body_bytes`.", body = ErrorEnvelope),
        (status = 422, description = "A name or language of the wrong form, parameters that disagree with the body, or another inbox (details name the field).", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn update_template(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<Template>, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let input: TemplateIn = parse_json(&body)?;
    let current = state
        .store
        .get_template(&who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("template"))?;
    if input
        .inbox_id
        .as_deref()
        .is_some_and(|i| i != current.inbox_id)
    {
        return Err(ApiError::invalid_field(
            "inbox_id",
            "cannot change: register the template for the other inbox instead",
        ));
    }
    let channel = state
        .store
        .get_inbox(&who.account_id, &current.inbox_id)
        .await?
        .map(|i| i.channel)
        .unwrap_or_default();
    let (name, language, parameters, body) = checked_template(input, &channel)?;
    let change = Template {
        name,
        language,
        parameters,
        body,
        updated_at_ms: ids::now_ms(),
        ..current
    };
    let record = who.audit("template.updated", "template", Some(&id));
    match state
        .store
        .update_template(&who.account_id, &id, change, record)
        .await?
    {
        Saved::Done(t) => Ok(Json(t)),
        Saved::Taken => Err(ApiError::conflict_field("name", TEMPLATE_TAKEN)),
        Saved::Missing => Err(ApiError::not_found("template")),
    }
}

#[utoipa::path(
    delete,
    path = "/v1/admin/templates/{id}",
    tag = "delivery",
    summary = "Remove a message template",
    description = "Agents can no longer send it; replies already sent keep their content. Audited as `template.deleted`. Requires `configure_routing`.",
    params(("id" = String, Path, description = "The template's id (`tpl_…`).")),
    responses(
        (status = 204, description = "Removed."),
        (status = 401, description = "Missing, invalid or expired credentials.", body = ErrorEnvelope),
        (status = 403, description = "The caller's role does not grant `configure_routing`.", body = ErrorEnvelope),
        (status = 404, description = "No such template in the account.", body = ErrorEnvelope),
        (status = 429, description = "Too many requests by this caller.", body = ErrorEnvelope, headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = [])),
)]
async fn delete_template(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    who.require(Permission::ConfigureRouting)?;
    let record = who.audit("template.deleted", "template", Some(&id));
    state
        .store
        .delete_template(&who.account_id, &id, record)
        .await?
        .ok_or_else(|| ApiError::not_found("template"))?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::positional;

    #[test]
    fn template_bodies_count_their_parameters() {
        assert_eq!(positional("Order {{1}} ships {{2}}; {{1}} again"), Ok(2));
        assert_eq!(positional("No parameters"), Ok(0));
        assert!(positional("Skips {{2}}").unwrap_err().contains("{{2}}"));
        assert!(
            positional("Named {{order}}")
                .unwrap_err()
                .contains("{{order}}")
        );
        assert!(positional("Open {{1").is_err());
    }
}
