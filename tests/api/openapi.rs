//! The served OpenAPI document is complete: every route the router declares is documented, every
//! documented operation is routed, authentication is declared exactly where the hub asks for it,
//! and every documented client error is the error envelope.
//!
//! The routes are read from the router's source (`.route("…", get(…).post(…))` in `src/http/`),
//! not from utoipa, so adding a route without documenting it fails here. The scanner refuses
//! router calls it does not understand (`.nest`, `any(…)`, a non-literal path) rather than
//! skipping them. Each route is then probed on the running hub without credentials, which
//! proves the scan matches the real router and tells which operations need the bearer scheme.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::helpers::*;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];
const ENVELOPE_REF: &str = "#/components/schemas/ErrorEnvelope";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_covers_every_route() {
    let site = Site::new(Backend::Embedded);
    let hub = TestHub::start(&site).await;

    // Public, JSON, OpenAPI 3.x.
    let response = hub
        .client
        .get(hub.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let doc: Value = response.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Switchboard");
    assert!(!doc["info"]["version"].as_str().unwrap().is_empty());
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");
    let paths = doc["paths"].as_object().unwrap();

    // Completeness, both ways.
    let routed = router_routes();
    assert!(
        routed.len() >= 15,
        "the scan found too few routes: {routed:?}"
    );
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_string(), path.clone()))
        })
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the OpenAPI document (add #[utoipa::path] and list the handler in \
         its module's OpenApi struct): {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );

    let envelope_keys = error_body_properties(&doc);
    for (method, path) in &routed {
        let operation = &paths[path][method];
        let what = format!("{} {path}", method.to_uppercase());

        // The probe: no credentials, dummy path parameters, no body.
        let url = hub.url(&dummy_params(path));
        let request = hub
            .client
            .request(method.to_uppercase().parse().unwrap(), url);
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(
            !(status == 404 && body["error"]["message"] == "no such route")
                && code != "method_not_allowed",
            "{what}: the scanned route is not in the router ({status} {body})"
        );
        if let Some(error) = body["error"].as_object() {
            let keys: BTreeSet<String> = error.keys().cloned().collect();
            assert_eq!(
                keys, envelope_keys,
                "{what}: the envelope differs from its schema"
            );
        }

        // Authentication declared exactly where the hub asks for API credentials.
        let needs_credentials = status == 401 && code == "missing_credentials";
        let declares_bearer = operation["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
        assert_eq!(
            needs_credentials, declares_bearer,
            "{what}: answered {status} {code:?} without credentials, but declares bearer \
             security: {declares_bearer}"
        );
        let responses = operation["responses"].as_object().unwrap();
        if declares_bearer {
            for status in ["401", "403", "429"] {
                assert!(
                    responses.contains_key(status),
                    "{what}: no {status} documented"
                );
            }
        }

        // Every client error (and every server error but readiness's report) is the envelope.
        for (status, response) in responses {
            let is_error = status.starts_with('4')
                || (status.starts_with('5') && path.as_str() != "/health/ready");
            if is_error {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"], ENVELOPE_REF,
                    "{what}: response {status} is not the ErrorEnvelope"
                );
            }
            assert!(
                response["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{what}: response {status} has no description"
            );
        }
        assert!(
            operation["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{what}: no tag"
        );
    }

    hub.stop().await;
    site.cleanup().await;
}

/// The property names of the envelope's `error` object, as the document describes them.
fn error_body_properties(doc: &Value) -> BTreeSet<String> {
    let schemas = &doc["components"]["schemas"];
    let error = &schemas["ErrorEnvelope"]["properties"]["error"];
    let error = match error["$ref"].as_str() {
        Some(reference) => &schemas[reference.rsplit('/').next().unwrap()],
        None => error,
    };
    let keys: BTreeSet<String> = error["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        keys,
        ["code", "correlation_id", "details", "message"]
            .map(String::from)
            .into(),
    );
    keys
}

/// `/v1/conversations/{id}` → `/v1/conversations/x`.
fn dummy_params(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "x"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every `(method, path)` the router's source declares under `src/http/`.
fn router_routes() -> BTreeSet<(String, String)> {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http"),
        &mut files,
    );
    assert!(!files.is_empty());
    let mut routes = BTreeSet::new();
    for file in files {
        let name = file.display().to_string();
        // The browser pages and their files are not the API (their headers are tested in
        // web.rs).
        if file.ends_with("ui.rs") {
            continue;
        }
        // Comments may mention `.route(` in prose.
        let source: String = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for unsupported in [".nest(", ".nest_service(", ".route_service("] {
            assert!(
                !source.contains(unsupported),
                "{name} uses `{unsupported}`: teach this scanner about it"
            );
        }
        let mut rest = source.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let args = balanced(rest);
            let args = args.trim_start();
            let Some(after_quote) = args.strip_prefix('"') else {
                panic!("{name}: a `.route(` whose path is not a string literal: {args}");
            };
            let end = after_quote.find('"').unwrap();
            let path = &after_quote[..end];
            let methods =
                top_level_calls(after_quote[end + 1..].trim_start_matches([',', ' ', '\n']));
            assert!(!methods.is_empty(), "{name}: {path} has no method");
            for method in methods {
                // CORS preflights, answered by the CORS layer, not by an operation.
                if method == "options" {
                    continue;
                }
                assert!(
                    METHODS.contains(&method.as_str()),
                    "{name}: {path} is routed with `{method}(…)`, which the scanner cannot \
                     map to one OpenAPI method"
                );
                assert!(
                    routes.insert((method.clone(), path.to_owned())),
                    "{name}: {method} {path} is routed twice"
                );
            }
        }
    }
    routes
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text up to the `)` that closes an already opened `(`, skipping string literals.
fn balanced(text: &str) -> &str {
    let mut depth = 1;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[..i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses after `.route(`: {text}");
}

/// The names called at the top level of a method-router expression: `get(a).post(b)` →
/// `["get", "post"]`, `routing::get(a)` → `["get"]`.
fn top_level_calls(expr: &str) -> Vec<String> {
    let mut calls = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        rest = &rest[start..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (ident, after) = rest.split_at(end);
        if let Some(inner) = after.strip_prefix('(') {
            calls.push(ident.to_owned());
            let args = balanced(inner);
            rest = &inner[args.len() + 1..];
        } else {
            rest = after;
        }
    }
    calls
}
