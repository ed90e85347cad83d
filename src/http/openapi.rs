//! The OpenAPI 3.1 description of the HTTP API, served at `GET /v1/openapi.json`.
//!
//! Each handler module owns its part: a `#[derive(utoipa::OpenApi)]` struct next to its routes
//! listing its `#[utoipa::path]` handlers. [`document`] puts the shared parts (info, tags,
//! security schemes, the error envelope) around them. `tests/api/openapi.rs` checks the served
//! document against the router's `.route(…)` calls, so an undocumented route fails the build.

use std::sync::OnceLock;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    AppState, admin, agents, alerts, api, audit, auth, dead_letters, health, inboxes, reports,
    routing, routing_rules, saved_replies, setup, sla, webchat, webhooks, webhooks_out, ws,
};
use crate::error::{ApiError, ErrorEnvelope};

/// The name of the security scheme of every route that takes an access token or API key.
pub const BEARER: &str = "bearer";
/// The name of the security scheme of the visitor's web-chat routes.
pub const VISITOR_TOKEN: &str = "visitor_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard",
        version = env!("CARGO_PKG_VERSION"),
        description = "Real-time omnichannel messaging hub: WhatsApp, SMS and web chat into routed conversations.\n\n\
            Authenticate with `Authorization: Bearer <token>`, where the token is a user's access JWT or an API key (`sbk_…`). \
            A record outside the caller's scope answers 404; a permission the caller's role lacks answers 403.\n\n\
            Every error, on every route, has one shape: `{\"error\":{\"code\",\"message\",\"details\",\"correlation_id\"}}` \
            (see `ErrorEnvelope`); `code` is stable snake_case. Any route may also answer 500 `internal_error`. \
            Lists answer `{\"data\":[…],\"next_cursor\":…}` and take `limit` (1–100, default 25) and `cursor`.",
        license(name = "AGPL-3.0-only", identifier = "AGPL-3.0-only"),
    ),
    paths(openapi_json),
    components(schemas(ErrorEnvelope)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "conversations", description = "Conversations, their messages, replies and assignment."),
        (name = "contacts", description = "The customers behind conversations, and data-subject erasure."),
        (name = "inbound-events", description = "The raw inbound event log: every signed provider request as received."),
        (name = "reports", description = "SLA reports over the caller's scope."),
        (name = "delivery", description = "Outbound delivery: canned responses and message templates to reply with, replies given up on, and replaying them."),
        (name = "webhooks", description = "Provider webhooks (WhatsApp Cloud API, Twilio), authenticated by the provider's signature over the raw body."),
        (name = "webchat", description = "The web-chat widget's visitor API."),
        (name = "live", description = "Live consoles over WebSocket; the protocol is docs/LIVE.md."),
        (name = "health", description = "Liveness, readiness and metrics, for load balancers and monitoring."),
        (name = "auth", description = "Sign-in: access tokens, refresh-token rotation, logout, TOTP second factor."),
        (name = "admin", description = "Users, teams, branches, custom roles and API keys (manage_users)."),
        (name = "inboxes", description = "Inboxes and their provider credentials (configure_routing)."),
        (name = "agents", description = "Agents as routable resources: the skill catalogue and routing profiles (configure_routing), and the signed-in agent's own presence and heartbeats."),
        (name = "routing-rules", description = "Routing rules of the assignment engine: create, order, validate and simulate (configure_routing)."),
        (name = "routing", description = "The assignment engine at work: offers to accept or decline, live queue statistics."),
        (name = "alerts", description = "Alert history: episodes fired and resolved, and the notices sent to Slack and PagerDuty (configure_routing)."),
        (name = "webhook-endpoints", description = "Signed outbound webhooks to the account's own systems (Standard Webhooks): endpoints, secrets, deliveries, replays and test events (configure_routing)."),
        (name = "sla", description = "SLA policies (configure_routing) and each conversation's SLA clocks."),
        (name = "audit", description = "The append-only audit log (view_audit_log)."),
        (name = "meta", description = "This document."),
    ),
)]
struct SwitchboardApi;

/// Adds the security schemes that the handlers' `security(…)` requirements name.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or sbk_ API key")
                    .description(Some(
                        "A user's access token (JWT) or an API key (`sbk_…`) as `Authorization: Bearer <token>`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            VISITOR_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("vst_ visitor token")
                    .description(Some(
                        "The `visitor_token` from `POST /v1/webchat/{inbox}/sessions`, as `Authorization: Bearer <token>`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every module's part of the document, in the order they are merged.
fn parts() -> Vec<utoipa::openapi::OpenApi> {
    vec![
        api::ConversationsApi::openapi(),
        reports::ReportsApi::openapi(),
        webhooks::WebhooksApi::openapi(),
        webchat::WebchatApi::openapi(),
        health::HealthApi::openapi(),
        auth::AuthApi::openapi(),
        setup::SetupApi::openapi(),
        admin::AdminApi::openapi(),
        audit::AuditApi::openapi(),
        inboxes::InboxesApi::openapi(),
        agents::AgentsApi::openapi(),
        routing_rules::RoutingRulesApi::openapi(),
        dead_letters::DeadLettersApi::openapi(),
        saved_replies::SavedRepliesApi::openapi(),
        alerts::AlertsApi::openapi(),
        sla::SlaApi::openapi(),
        webhooks_out::WebhooksOutApi::openapi(),
        routing::RoutingApi::openapi(),
        ws::WsApi::openapi(),
    ]
}

/// The whole document. `merge` keeps the first of two operations on the same path and method,
/// or two schemas of the same name; the unit tests below refuse such collisions.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = SwitchboardApi::openapi();
    for part in parts() {
        doc.merge(part);
    }
    doc
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/openapi.json", get(openapi_json))
}

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    summary = "This OpenAPI document",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json", body = Object)),
)]
async fn openapi_json() -> Result<Response, ApiError> {
    // Built once per process: the document is static.
    static JSON: OnceLock<Result<Bytes, String>> = OnceLock::new();
    let json = JSON.get_or_init(|| {
        serde_json::to_vec(&document())
            .map(Bytes::from)
            .map_err(|e| format!("the OpenAPI document does not serialize: {e}"))
    });
    match json {
        Ok(bytes) => {
            Ok(([(header::CONTENT_TYPE, "application/json")], bytes.clone()).into_response())
        }
        Err(cause) => Err(ApiError::internal(cause)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use super::*;

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn json(doc: &utoipa::openapi::OpenApi) -> serde_json::Value {
        serde_json::to_value(doc).unwrap()
    }

    #[test]
    fn is_openapi_3_1_with_the_crate_version() {
        let doc = json(&document());
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(doc["info"]["title"], "Switchboard");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let scheme = &doc["components"]["securitySchemes"][BEARER];
        assert_eq!(scheme["scheme"], "bearer");
        assert_eq!(scheme["bearerFormat"], "JWT or sbk_ API key");
        assert!(doc["components"]["schemas"]["ErrorEnvelope"].is_object());
    }

    /// `merge` silently keeps the first of two colliding items: two parts must not document the
    /// same operation, nor define different schemas under one name.
    #[test]
    fn parts_do_not_collide() {
        let mut operations = BTreeMap::new();
        let mut schemas: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        for (index, part) in parts().iter().enumerate() {
            let part = json(part);
            for (path, item) in part["paths"].as_object().unwrap() {
                for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
                    if let Some(first) =
                        operations.insert((method.to_string(), path.clone()), index)
                    {
                        panic!("{method} {path} is documented by parts {first} and {index}");
                    }
                }
            }
            let empty = serde_json::Map::new();
            let part_schemas = part["components"]["schemas"].as_object().unwrap_or(&empty);
            for (name, schema) in part_schemas {
                if let Some(other) = schemas.insert(name.clone(), schema.clone()) {
                    assert_eq!(&other, schema, "two different schemas are named {name}");
                }
            }
        }
    }

    /// Every operation is tagged with a declared tag and has a unique operation id.
    #[test]
    fn operations_are_tagged_and_named() {
        let doc = json(&document());
        let tags: Vec<&str> = doc["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        let mut ids = BTreeMap::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
                let operation = &item[*method];
                let tag = operation["tags"][0].as_str().unwrap_or_default();
                assert!(
                    tags.contains(&tag),
                    "{method} {path}: tag {tag:?} is not declared"
                );
                let id = operation["operationId"].as_str().unwrap().to_owned();
                if let Some(other) = ids.insert(id.clone(), format!("{method} {path}")) {
                    panic!("operationId {id} is used by {other} and {method} {path}");
                }
            }
        }
    }
}
