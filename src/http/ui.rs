//! The browser front-ends, embedded in the binary: the agent workspace at `/`, the admin
//! console at `/admin`, the web-chat widget at `/widget.js`, and every file of `web/` at
//! `/ui/<path>`. Plain HTML, CSS and JavaScript modules: nothing to build, nothing to install.
//!
//! Pages carry a strict Content-Security-Policy (no inline scripts or styles, no framing), so an
//! injected message can never run as script in an agent's browser. Files are revalidated with
//! their content hash as the ETag. Release builds serve the copies compiled in; debug builds
//! read `web/` from disk on each request, so front-end work needs no rebuild.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;

use super::AppState;
use crate::error::ApiError;

#[derive(RustEmbed)]
#[folder = "web/"]
struct Assets;

/// What a page may load: only the hub's own scripts, styles and connections (`'self'` covers
/// the hub's own WebSocket), images and media by reference over HTTPS, never framed.
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: https:; media-src 'self' https:; connect-src 'self'; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(workspace))
        .route("/admin", get(admin))
        .route("/admin/", get(admin))
        .route("/widget.js", get(widget))
        .route("/favicon.ico", get(icon))
        .route("/ui/{*path}", get(asset))
}

async fn workspace(headers: HeaderMap) -> Response {
    serve("app/index.html", &headers)
}

async fn admin(headers: HeaderMap) -> Response {
    serve("admin/index.html", &headers)
}

async fn widget(headers: HeaderMap) -> Response {
    serve("widget/widget.js", &headers)
}

async fn icon(headers: HeaderMap) -> Response {
    serve("shared/icon.svg", &headers)
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    // Only plain relative paths: no `..`, no absolute or backslashed names (debug builds read
    // from disk).
    let plain = !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && path
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..");
    if !plain {
        return ApiError::NotFound("no such file".to_owned()).into_response();
    }
    serve(&path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return ApiError::NotFound("no such file".to_owned()).into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let mime = file.metadata.mimetype();
    let is_page = mime.starts_with("text/html");
    let mut out = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = file.data.into_owned().into_response();
        if let Ok(v) = HeaderValue::from_str(mime) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r
    };
    let h = out.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    // Unversioned names: always revalidate (cheap, by ETag), so an upgrade shows at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if is_page {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        );
        h.insert(
            HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
        );
    } else if path.starts_with("widget/") {
        // The widget's script and styles are loaded by businesses' own sites.
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("cross-origin"),
        );
    }
    out
}
