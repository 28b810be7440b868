//! Plays API Gateway HTTP API: turns an HTTP request into a payload-2.0 event, runs it through
//! `lambda_http`'s own deserializer (exactly what the Lambda runtime does) and turns the
//! handler's answer back into HTTP.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::jwt::Claims;

/// An incoming request, reduced to what an event carries.
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    /// HTTP method.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Raw query string, without `?`.
    pub query: String,
    /// Headers, lower-case names; repeated headers joined with commas as API Gateway does.
    pub headers: BTreeMap<String, String>,
    /// The body bytes.
    pub body: Vec<u8>,
}

/// The payload-2.0 event for a request. `route_key` is the matched route (`POST /jobs`), and
/// `claims` the authorizer's output when the route is protected.
pub fn http_api_event(
    request: &IncomingRequest,
    route_key: &str,
    path_parameters: &[(&str, &str)],
    claims: Option<&Claims>,
    now_ms: i64,
) -> Value {
    let (body, is_base64) = match std::str::from_utf8(&request.body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (STANDARD.encode(&request.body), true),
    };

    let mut query_parameters = serde_json::Map::new();
    for pair in request.query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name);
        let value = percent_decode(value);
        match query_parameters.get_mut(&name) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                query_parameters.insert(name, Value::String(value));
            }
        }
    }

    let mut context = json!({
        "accountId": "000000000000",
        "apiId": "local",
        "domainName": request.headers.get("host").cloned().unwrap_or_else(|| "127.0.0.1".into()),
        "domainPrefix": "local",
        "http": {
            "method": request.method,
            "path": request.path,
            "protocol": "HTTP/1.1",
            "sourceIp": "127.0.0.1",
            "userAgent": request.headers.get("user-agent").cloned().unwrap_or_default(),
        },
        "requestId": ulid::Ulid::new().to_string(),
        "routeKey": route_key,
        "stage": "$default",
        "time": "",
        "timeEpoch": now_ms,
    });
    if let Some(claims) = claims {
        context["authorizer"] = json!({
            "jwt": {
                "claims": {
                    "sub": claims.sub,
                    "email": claims.email,
                    "iss": claims.iss,
                    "aud": claims.aud,
                    "exp": claims.exp.to_string(),
                    "iat": claims.iat.to_string(),
                },
                "scopes": null,
            }
        });
    }

    let parameters: serde_json::Map<String, Value> = path_parameters
        .iter()
        .map(|(name, value)| ((*name).to_owned(), Value::String((*value).to_owned())))
        .collect();

    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": request.path,
        "rawQueryString": request.query,
        "headers": request.headers,
        "requestContext": context,
        "isBase64Encoded": is_base64,
    });
    if !query_parameters.is_empty() {
        event["queryStringParameters"] = Value::Object(query_parameters);
    }
    if !parameters.is_empty() {
        event["pathParameters"] = Value::Object(parameters);
    }
    if !request.body.is_empty() {
        event["body"] = Value::String(body);
    }
    event
}

/// Decodes `%XX` escapes and `+` in a query component.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => decoded.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[index + 1..index + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                {
                    Some(byte) => {
                        decoded.push(byte);
                        index += 2;
                    }
                    None => decoded.push(b'%'),
                }
            }
            byte => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_components_are_decoded() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn an_event_deserializes_through_lambda_http() {
        let request = IncomingRequest {
            method: "POST".into(),
            path: "/jobs".into(),
            query: "limit=5".into(),
            headers: BTreeMap::from([("content-type".into(), "application/json".into())]),
            body: br#"{"query":"x"}"#.to_vec(),
        };

        let event = http_api_event(&request, "POST /jobs", &[], None, 0);
        let parsed = lambda_http::request::from_str(&event.to_string());

        assert!(parsed.is_ok());
    }
}
