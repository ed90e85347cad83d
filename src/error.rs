//! The one API error type. Every handler returns `Result<_, ApiError>`; every error response,
//! including the framework's own rejections (unknown route, bad JSON, oversized body), has the
//! same envelope:
//!
//! `{"error":{"code":"snake_case","message":"…","details":[…],"correlation_id":"…"}}`
//!
//! Internal failures are logged with their cause and answered with an opaque 500.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::error;

tokio::task_local! {
    /// The current request's correlation id, set by the correlation middleware.
    pub static CORRELATION_ID: String;
}

pub fn correlation_id() -> String {
    CORRELATION_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "none".to_owned())
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        details: Vec<Value>,
    },
    #[error("{message}")]
    Unauthenticated { code: &'static str, message: String },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{message}")]
    Unprocessable {
        message: String,
        details: Vec<Value>,
    },
    /// A well-formed request the hub will not carry out, with its own code (for example
    /// `whatsapp_window_closed`); details say what to do instead.
    #[error("{message}")]
    Refused {
        code: &'static str,
        message: String,
        details: Vec<Value>,
    },
    /// The request clashes with the current state (a duplicate name, a role still in use);
    /// details name the field when there is one.
    #[error("{message}")]
    Conflict {
        message: String,
        details: Vec<Value>,
    },
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64, limit: u32 },
    #[error("a dependency is unavailable")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Unauthenticated {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} was not found"))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::Conflict {
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// A validation failure on one field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::Unprocessable {
            message: format!("{field}: {message}"),
            details: vec![json!({ "field": field, "message": message })],
        }
    }

    /// A uniqueness conflict on one field (409).
    pub fn conflict_field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::Conflict {
            message: format!("{field}: {message}"),
            details: vec![json!({ "field": field, "message": message })],
        }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(cause.to_string())
    }

    /// The envelope's `code`, and a message safe to show (internal causes stay in the log).
    pub fn code_and_message(&self) -> (&'static str, String) {
        let (_, code) = self.status_and_code();
        let message = match self {
            ApiError::Internal(cause) => {
                error!(%cause, "Internal error.");
                "internal error".to_owned()
            }
            ApiError::Unavailable(cause) => {
                error!(%cause, "Dependency unavailable.");
                "a dependency is unavailable; try again".to_owned()
            }
            other => other.to_string(),
        };
        (code, message)
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Unauthenticated { code, .. } => (StatusCode::UNAUTHORIZED, code),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::Unprocessable { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
            }
            ApiError::Refused { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            ApiError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        if e.is_transient() {
            ApiError::Unavailable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// The body of every error response. The same type serializes the response and describes it
/// in the OpenAPI document, so the two cannot drift.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable machine code in snake_case, e.g. `validation_failed`, `missing_credentials`.
    #[schema(example = "validation_failed")]
    pub code: String,
    /// Human-readable explanation; not stable, do not match on it.
    pub message: String,
    /// Structured detail, e.g. `{"field":"limit","message":"…"}` for a validation failure.
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<Value>,
    /// Also sent as the `X-Correlation-Id` response header; quote it when reporting a problem.
    pub correlation_id: String,
}

/// Builds the envelope; also used for responses that do not come from a handler.
pub fn envelope(status: StatusCode, code: &str, message: &str, details: &[Value]) -> Response {
    let body = ErrorEnvelope {
        error: ErrorBody {
            code: code.to_owned(),
            message: message.to_owned(),
            details: details.to_vec(),
            correlation_id: correlation_id(),
        },
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let (message, details) = match &self {
            ApiError::Internal(cause) => {
                error!(%cause, "Internal error.");
                ("internal error".to_owned(), Vec::new())
            }
            ApiError::Unavailable(cause) => {
                error!(%cause, "Dependency unavailable.");
                (
                    "a dependency is unavailable; try again".to_owned(),
                    Vec::new(),
                )
            }
            ApiError::BadRequest { details, .. }
            | ApiError::Unprocessable { details, .. }
            | ApiError::Refused { details, .. }
            | ApiError::Conflict { details, .. } => (self.to_string(), details.clone()),
            _ => (self.to_string(), Vec::new()),
        };
        let mut response = envelope(status, code, &message, &details);
        if let ApiError::Unavailable(_) = self {
            // Busy or briefly unreachable: a client may try again in a moment.
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, 1u32.into());
        }
        if let ApiError::RateLimited {
            retry_after_secs,
            limit,
        } = self
        {
            let headers = response.headers_mut();
            headers.insert(axum::http::header::RETRY_AFTER, retry_after_secs.into());
            headers.insert("x-ratelimit-limit", limit.into());
            headers.insert("x-ratelimit-remaining", 0u32.into());
        }
        response
    }
}
