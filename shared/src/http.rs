//! HTTP plumbing shared by the API handlers: problem documents, JSON answers, routing paths,
//! raw bodies and caller identity.
//!
//! Every error answer is an RFC 9457 `application/problem+json` document with a stable `code`
//! for programs and a `detail` for people. Statuses are chosen once, where a boundary's error
//! enum is converted into a [`Problem`]; nothing else writes an error response.

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde_json::json;

/// One failing field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// A JSON pointer-like path to the field, e.g. `/messages/2/content`.
    pub field: String,
    /// What is wrong, in words.
    pub message: String,
}

impl FieldError {
    /// A failing field.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable code; also the last segment of `type`.
    pub code: &'static str,
    /// Short summary that does not change between occurrences.
    pub title: &'static str,
    /// This occurrence, in words safe to show the caller.
    pub detail: String,
    /// The failing fields, for validation errors.
    pub errors: Vec<FieldError>,
    /// Seconds to wait, sent as `Retry-After`.
    pub retry_after: Option<u64>,
    /// RFC 9457 `instance`: the resource this occurrence is about, when there is one (a job the
    /// request created before it failed), so the caller can look at it.
    pub instance: Option<String>,
}

impl Problem {
    /// A problem without field errors.
    pub fn new(
        status: u16,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            title,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
            instance: None,
        }
    }

    /// The document as JSON.
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({
            "type": format!("https://research-relay.dev/problems/{}", self.code),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        });
        if !self.errors.is_empty() {
            body["errors"] = json!(self.errors);
        }
        if let Some(instance) = &self.instance {
            body["instance"] = json!(instance);
        }
        body
    }

    /// The HTTP answer.
    pub fn into_response(self) -> Response<Body> {
        let mut builder = Response::builder()
            .status(self.status)
            .header("content-type", "application/problem+json")
            .header("cache-control", "no-store");
        if let Some(seconds) = self.retry_after {
            builder = builder.header("retry-after", seconds.to_string());
        }
        builder
            .body(Body::Text(self.body().to_string()))
            .unwrap_or_else(|_| Response::new(Body::Empty))
    }
}

/// A JSON answer.
pub fn json_response(status: u16, value: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Body::Text(value.to_string()))
        .unwrap_or_else(|_| Response::new(Body::Empty))
}

/// The request path without a named stage prefix, so `/dev/jobs` on stage `dev` routes like
/// `/jobs` on `$default`. Payload 1.0 and 2.0 events are both handled.
pub fn route_path(request: &Request) -> String {
    let path = request.uri().path();
    let stage = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.stage.clone(),
        Some(RequestContext::ApiGatewayV1(context)) => context.stage.clone(),
        _ => None,
    };
    let trimmed = match stage.as_deref() {
        Some(stage) if stage != "$default" && !stage.is_empty() => {
            let prefix = format!("/{stage}");
            match path.strip_prefix(&prefix) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.to_owned(),
                _ => path.to_owned(),
            }
        }
        _ => path.to_owned(),
    };
    let trimmed = trimmed.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// The raw body bytes. API Gateway's base64 bodies arrive already decoded by `lambda_http`.
pub fn body_bytes(request: &Request) -> &[u8] {
    match request.body() {
        Body::Empty => &[],
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    }
}

/// Who is calling, from the JWT authorizer's claims in the request context. Headers are never
/// consulted: only API Gateway can write the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The `sub` claim: owner of the jobs.
    pub owner: String,
    /// The `email` claim: where reports go.
    pub email: String,
}

/// Reads the caller from the authorizer claims, if both `sub` and `email` are there.
pub fn caller(request: &Request) -> Option<Caller> {
    let claims = match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => {
            let authorizer = context.authorizer.as_ref()?;
            claims_of(authorizer)
        }
        RequestContext::ApiGatewayV1(context) => claims_of(&context.authorizer),
        _ => None,
    }?;
    let owner = claims.0.filter(|owner| !owner.is_empty())?;
    let email = claims.1.filter(|email| email.contains('@'))?;
    Some(Caller { owner, email })
}

fn claims_of(
    authorizer: &aws_lambda_events::apigw::ApiGatewayRequestAuthorizer,
) -> Option<(Option<String>, Option<String>)> {
    if let Some(jwt) = &authorizer.jwt {
        return Some((
            jwt.claims.get("sub").cloned(),
            jwt.claims.get("email").cloned(),
        ));
    }
    let claims = authorizer.fields.get("claims")?;
    let text = |name: &str| claims.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    Some((text("sub"), text("email")))
}

/// A header's value as bytes, looked up case-insensitively.
pub fn header<'a>(request: &'a Request, name: &str) -> Option<&'a [u8]> {
    request.headers().get(name).map(|value| value.as_bytes())
}
