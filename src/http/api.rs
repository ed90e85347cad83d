//! The read API: conversations, messages, contacts and the inbound event log. Every list has
//! the shape `{"data":[…],"next_cursor":…}` with `limit` (1–100, default 25) and `cursor`.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiQuery, AppState};
use crate::access::Principal;
use crate::error::ApiError;
use crate::ids;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/conversations", get(list_conversations))
        .route("/v1/conversations/{id}", get(get_conversation))
        .route("/v1/conversations/{id}/messages", get(list_messages))
        .route("/v1/contacts/{id}", get(get_contact))
        .route("/v1/inbound-events", get(list_events))
}

const DEFAULT_LIMIT: i64 = 25;
const MAX_LIMIT: i64 = 100;

/// The page size of a list: 1–100, default 25.
pub(crate) fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid_field(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    status: Option<String>,
    inbox: Option<String>,
}

impl ListQuery {
    fn limit(&self) -> Result<i64, ApiError> {
        page_limit(self.limit)
    }

    fn reject_filters(&self, allowed: &[&str]) -> Result<(), ApiError> {
        for (name, present) in [
            ("status", self.status.is_some()),
            ("inbox", self.inbox.is_some()),
        ] {
            if present && !allowed.contains(&name) {
                return Err(ApiError::invalid_field(
                    name,
                    "is not a filter of this list",
                ));
            }
        }
        Ok(())
    }
}

/// The list envelope; `items` holds one row more than `limit` when another page exists.
pub(crate) fn page<T: Serialize>(
    mut items: Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> String,
) -> Json<Value> {
    // One extra row was fetched to know whether another page exists.
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next = if more {
        items.last().map(cursor_of)
    } else {
        None
    };
    Json(json!({ "data": items, "next_cursor": next }))
}

fn check_status(status: Option<&str>, allowed: &[&str]) -> Result<(), ApiError> {
    match status {
        Some(s) if !allowed.contains(&s) => Err(ApiError::invalid_field(
            "status",
            format!("must be one of {}", allowed.join(", ")),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn id_cursor(cursor: Option<&str>, prefix: &str) -> Result<Option<String>, ApiError> {
    match cursor {
        Some(c) if !ids::has_prefix(c, prefix) => Err(ApiError::invalid_field(
            "cursor",
            "is not a cursor from this list",
        )),
        other => Ok(other.map(str::to_owned)),
    }
}

async fn list_conversations(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit()?;
    check_status(
        query.status.as_deref(),
        &["open", "pending", "snoozed", "resolved"],
    )?;
    let inbox_id = match &query.inbox {
        Some(inbox) => Some(
            state
                .registry
                .find(inbox)
                .filter(|i| i.account_id == who.account_id)
                .map(|i| i.id.clone())
                .ok_or_else(|| ApiError::invalid_field("inbox", "no such inbox"))?,
        ),
        None => None,
    };
    let cursor = id_cursor(query.cursor.as_deref(), ids::CONVERSATION)?;
    let items = state
        .store
        .list_conversations(
            &who.account_id,
            inbox_id.as_deref(),
            query.status.as_deref(),
            cursor.as_deref(),
            limit + 1,
        )
        .await?;
    Ok(page(items, limit, |c| c.id.clone()))
}

async fn get_conversation(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let conversation = state
        .store
        .get_conversation(&who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("conversation"))?;
    let contact = state
        .store
        .get_contact(&who.account_id, &conversation.contact_id)
        .await?;
    let mut value = serde_json::to_value(&conversation).map_err(ApiError::internal)?;
    value["contact"] = serde_json::to_value(contact).map_err(ApiError::internal)?;
    Ok(Json(value))
}

async fn list_messages(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    query.reject_filters(&[])?;
    let limit = query.limit()?;
    state
        .store
        .get_conversation(&who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("conversation"))?;
    let after =
        match &query.cursor {
            Some(c) => Some(decode_message_cursor(c).ok_or_else(|| {
                ApiError::invalid_field("cursor", "is not a cursor from this list")
            })?),
            None => None,
        };
    let items = state
        .store
        .list_messages(
            &who.account_id,
            &id,
            after.as_ref().map(|(t, i)| (*t, i.as_str())),
            limit + 1,
        )
        .await?;
    Ok(page(items, limit, |m| {
        URL_SAFE_NO_PAD.encode(format!("{}|{}", m.sent_at_ms, m.id))
    }))
}

fn decode_message_cursor(cursor: &str) -> Option<(i64, String)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (ts, id) = raw.split_once('|')?;
    Some((ts.parse().ok()?, id.to_owned()))
}

async fn get_contact(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let contact = state
        .store
        .get_contact(&who.account_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))?;
    Ok(Json(
        serde_json::to_value(contact).map_err(ApiError::internal)?,
    ))
}

async fn list_events(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    query.reject_filters(&["status"])?;
    let limit = query.limit()?;
    check_status(
        query.status.as_deref(),
        &["received", "processed", "unrouted", "quarantined"],
    )?;
    let cursor = id_cursor(query.cursor.as_deref(), ids::INBOUND_EVENT)?;
    let items = state
        .store
        .list_events(
            &who.account_id,
            query.status.as_deref(),
            cursor.as_deref(),
            limit + 1,
        )
        .await?;
    Ok(page(items, limit, |e| e.id.clone()))
}
