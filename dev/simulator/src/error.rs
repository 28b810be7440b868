//! Error answers, shaped like the provider's so clients exercise their real error parsing.
//!
//! The provider answers most errors with `{"error": {"message", "type", "code"}}` (see the
//! recorded `invalid_model` response) and request validation failures with a FastAPI-style
//! `422 {"detail": [{"loc", "msg", "type"}]}` (the published spec's `HTTPValidationError`).
//! Control endpoints reuse the first shape so one helper reads both.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

/// An error answer of the provider or control API.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
    validation: Option<Value>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            retry_after_secs: None,
            validation: None,
        }
    }

    /// Missing or empty bearer token.
    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
        )
    }

    /// Unknown or expired job, or an unknown route.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A model outside the allow-list, worded like the provider's answer.
    pub(crate) fn invalid_model(model: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_model",
            format!(
                "Invalid model '{model}'. Permitted models: sonar, sonar-pro, \
                 sonar-reasoning-pro, sonar-deep-research."
            ),
        )
    }

    /// A body that is not JSON, or a control request that makes no sense.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// A well-formed JSON body that misses or mistypes a field (FastAPI's 422).
    ///
    /// `loc` is the path to the field, e.g. `["body", "request", "messages", 0, "role"]`.
    pub(crate) fn validation(loc: Value, msg: impl Into<String>, kind: &str) -> Self {
        let msg = msg.into();
        let detail = json!({ "detail": [{ "loc": loc, "msg": msg, "type": kind }] });
        let mut error = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_error", msg);
        error.validation = Some(detail);
        error
    }

    /// An injected HTTP fault: the status the test asked for, with a provider-like body.
    pub(crate) fn injected(status: StatusCode, retry_after_secs: Option<u64>) -> Self {
        let (kind, message) = match status.as_u16() {
            429 => (
                "rate_limit_exceeded",
                "Rate limit exceeded: too many requests for this API key, retry later.",
            ),
            500 => ("internal_server_error", "Internal server error."),
            502 => ("bad_gateway", "Bad gateway."),
            503 => (
                "service_unavailable",
                "The service is temporarily unavailable.",
            ),
            504 => ("gateway_timeout", "Gateway timeout."),
            400..=499 => ("client_error", "Request refused."),
            _ => ("server_error", "Server error."),
        };
        let mut error = Self::new(status, kind, message);
        error.retry_after_secs = retry_after_secs;
        error
    }

    /// The sender could not reach the receiver at all (deliver-now).
    pub(crate) fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "webhook_unreachable", message)
    }

    /// The HTTP status this error answers with.
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.validation {
            Some(detail) => detail,
            None => json!({
                "error": {
                    "message": self.message,
                    "type": self.kind,
                    "code": self.status.as_u16(),
                }
            }),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
