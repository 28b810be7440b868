//! Validation of `POST /jobs` bodies.
//!
//! A body is either `{"query": "..."}` or a fuller request with `messages` and a chosen set of
//! the provider's research options. Everything else is refused by name rather than silently
//! dropped, so a frontend learns at once that an option it relies on is not supported. The
//! result is the exact provider request we will send, and its canonical JSON is what an
//! `Idempotency-Key` protects.
//!
//! Choices where the contract is silent:
//! - `null` is not "unset": an option sent as `null` is refused like any other wrong type, so a
//!   frontend bug that loses a value is reported instead of silently running a different search.
//! - The `Content-Type` header is not consulted; the body must parse as a JSON object either
//!   way, which also serves clients that post `text/plain` to avoid a CORS preflight.
//! - Text is trimmed before its length is checked and before it is sent.
//! - The byte limit ([`MAX_BODY_BYTES`]) bounds the stored job item; for non-ASCII text it
//!   binds before the character limits do.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::http::FieldError;

/// Largest accepted body, in bytes.
pub const MAX_BODY_BYTES: usize = 32 * 1024;
/// Most messages in a conversation.
pub const MAX_MESSAGES: usize = 20;
/// Longest single message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 8_000;
/// Longest conversation, in characters.
pub const MAX_TOTAL_CHARS: usize = 24_000;
/// Most entries in `search_domain_filter` (the provider's own limit).
pub const MAX_DOMAINS: usize = 20;

const ALLOWED_FIELDS: [&str; 13] = [
    "query",
    "messages",
    "model",
    "recipient",
    "search_domain_filter",
    "search_recency_filter",
    "search_after_date_filter",
    "search_before_date_filter",
    "last_updated_after_filter",
    "last_updated_before_filter",
    "search_mode",
    "reasoning_effort",
    "web_search_options",
];

/// A request that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedRequest {
    /// The provider request body (`model`, `messages`, options).
    pub provider_request: Value,
    /// The last user message: the question the e-mail is about.
    pub question: String,
    /// The model.
    pub model: String,
    /// Where the report goes.
    pub recipient: String,
}

impl ValidatedRequest {
    /// SHA-256 of the normalised request and recipient: two bodies that mean the same thing hash
    /// the same, whatever their key order, whitespace, or whether they said `query` or the
    /// equivalent one-message `messages`, or left out the default model.
    ///
    /// Keys are sorted here rather than trusting `serde_json`'s map order, which changes when any
    /// crate in the build turns on its `preserve_order` feature; a hash that silently changed
    /// would make every stored `Idempotency-Key` look reused.
    pub fn body_hash(&self) -> String {
        let normalised = json!({"request": self.provider_request, "recipient": self.recipient});
        let mut canonical = String::new();
        write_canonical(&normalised, &mut canonical);
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }
}

/// Writes `value` as compact JSON with object keys in byte order, at every depth.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Why a body was refused before validation of its fields.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestError {
    /// No body.
    Empty,
    /// Over [`MAX_BODY_BYTES`].
    TooLarge(usize),
    /// Not JSON, or not a JSON object.
    Malformed(String),
    /// Fields failed validation.
    Invalid(Vec<FieldError>),
}

/// Validates a body for a caller whose address is `caller_email`.
pub fn validate(
    body: &[u8],
    caller_email: &str,
    config: &Config,
) -> Result<ValidatedRequest, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(RequestError::Empty);
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(RequestError::TooLarge(body.len()));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| RequestError::Malformed(format!("body is not valid JSON: {error}")))?;
    let Value::Object(fields) = value else {
        return Err(RequestError::Malformed("body must be a JSON object".into()));
    };

    let mut errors = Vec::new();
    for name in fields.keys() {
        if !ALLOWED_FIELDS.contains(&name.as_str()) {
            errors.push(FieldError::new(
                format!("/{name}"),
                format!(
                    "unknown field; allowed fields are {}",
                    ALLOWED_FIELDS.join(", ")
                ),
            ));
        }
    }

    let messages = messages(&fields, &mut errors);
    let model = model(&fields, config, &mut errors);
    let recipient = recipient(&fields, caller_email, config, &mut errors);
    let mut request = Map::new();
    options(&fields, &mut request, &mut errors);

    if !errors.is_empty() {
        return Err(RequestError::Invalid(errors));
    }
    let (messages, question) = messages.ok_or_else(|| RequestError::Invalid(Vec::new()))?;

    request.insert("model".into(), Value::String(model.clone()));
    request.insert("messages".into(), messages);
    Ok(ValidatedRequest {
        provider_request: Value::Object(request),
        question,
        model,
        recipient,
    })
}

fn messages(fields: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<(Value, String)> {
    match (fields.get("query"), fields.get("messages")) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                "/query",
                "give either query or messages, not both",
            ));
            None
        }
        (None, None) => {
            errors.push(FieldError::new(
                "/query",
                "required: the research question (or messages)",
            ));
            None
        }
        (Some(query), None) => {
            let text = text_field(query, "/query", errors)?;
            Some((json!([{"role": "user", "content": text}]), text))
        }
        (None, Some(Value::Array(list))) => {
            if list.is_empty() || list.len() > MAX_MESSAGES {
                errors.push(FieldError::new(
                    "/messages",
                    format!("must hold 1 to {MAX_MESSAGES} messages"),
                ));
                return None;
            }
            let mut cleaned = Vec::with_capacity(list.len());
            let mut total = 0;
            let mut roles = Vec::with_capacity(list.len());
            let mut last_text = String::new();
            for (index, message) in list.iter().enumerate() {
                let pointer = format!("/messages/{index}");
                let Value::Object(message) = message else {
                    errors.push(FieldError::new(
                        pointer,
                        "must be an object with role and content",
                    ));
                    continue;
                };
                if let Some(extra) = message
                    .keys()
                    .find(|key| *key != "role" && *key != "content")
                {
                    errors.push(FieldError::new(
                        format!("{pointer}/{extra}"),
                        "unknown field",
                    ));
                }
                let role = match message.get("role").and_then(Value::as_str) {
                    Some(role @ ("system" | "user" | "assistant")) => role,
                    _ => {
                        errors.push(FieldError::new(
                            format!("{pointer}/role"),
                            "must be one of system, user, assistant",
                        ));
                        continue;
                    }
                };
                let Some(content) = message.get("content") else {
                    errors.push(FieldError::new(format!("{pointer}/content"), "required"));
                    continue;
                };
                let Some(text) = text_field(content, &format!("{pointer}/content"), errors) else {
                    continue;
                };
                total += text.chars().count();
                roles.push(role);
                last_text = text.clone();
                cleaned.push(json!({"role": role, "content": text}));
            }
            if total > MAX_TOTAL_CHARS {
                errors.push(FieldError::new(
                    "/messages",
                    format!("conversation is longer than {MAX_TOTAL_CHARS} characters"),
                ));
            }
            if cleaned.len() == list.len() {
                turn_order(&roles, errors);
            }
            errors
                .is_empty()
                .then_some((Value::Array(cleaned), last_text))
        }
        (None, Some(_)) => {
            errors.push(FieldError::new("/messages", "must be an array of messages"));
            None
        }
    }
}

/// The provider's rule for a conversation, checked here so a caller learns it at once instead of
/// through a failed job: system messages only at the start, then turns alternating user,
/// assistant, user, ..., ending with the user's question. Only the first misplaced turn is
/// named, since every later one is usually wrong for the same reason.
fn turn_order(roles: &[&str], errors: &mut Vec<FieldError>) {
    let first_turn = roles.iter().take_while(|role| **role == "system").count();
    for (offset, role) in roles[first_turn..].iter().enumerate() {
        let expected = if offset % 2 == 0 { "user" } else { "assistant" };
        if *role != expected {
            let message = if *role == "system" {
                "system messages may only come before the first user message".to_owned()
            } else {
                format!(
                    "must be {expected}: after any system messages, turns alternate user, assistant, user"
                )
            };
            errors.push(FieldError::new(
                format!("/messages/{}/role", first_turn + offset),
                message,
            ));
            return;
        }
    }
    if roles.last() != Some(&"user") {
        errors.push(FieldError::new(
            format!("/messages/{}/role", roles.len().saturating_sub(1)),
            "the last message must come from the user",
        ));
    }
}

fn text_field(value: &Value, pointer: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    let Some(text) = value.as_str() else {
        errors.push(FieldError::new(pointer, "must be a string"));
        return None;
    };
    let text = text.trim();
    if text.is_empty() {
        errors.push(FieldError::new(pointer, "must not be empty"));
        return None;
    }
    if text.chars().count() > MAX_MESSAGE_CHARS {
        errors.push(FieldError::new(
            pointer,
            format!("must be at most {MAX_MESSAGE_CHARS} characters"),
        ));
        return None;
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        errors.push(FieldError::new(
            pointer,
            "must not contain control characters",
        ));
        return None;
    }
    Some(text.to_owned())
}

fn model(fields: &Map<String, Value>, config: &Config, errors: &mut Vec<FieldError>) -> String {
    match fields.get("model") {
        None => config.default_model.clone(),
        Some(Value::String(model)) if config.allowed_models.contains(model) => model.clone(),
        Some(_) => {
            errors.push(FieldError::new(
                "/model",
                format!("must be one of {}", config.allowed_models.join(", ")),
            ));
            String::new()
        }
    }
}

fn recipient(
    fields: &Map<String, Value>,
    caller_email: &str,
    config: &Config,
    errors: &mut Vec<FieldError>,
) -> String {
    let Some(value) = fields.get("recipient") else {
        return caller_email.to_owned();
    };
    let Some(address) = value.as_str().map(str::trim) else {
        errors.push(FieldError::new("/recipient", "must be an e-mail address"));
        return String::new();
    };
    if address.eq_ignore_ascii_case(caller_email) {
        return caller_email.to_owned();
    }
    let domain = match address.rsplit_once('@') {
        Some((local, domain)) if is_mailbox_local(local) && is_host_name(domain) => {
            domain.to_ascii_lowercase()
        }
        _ => {
            errors.push(FieldError::new(
                "/recipient",
                "must be a plain ASCII e-mail address",
            ));
            return String::new();
        }
    };
    if !config.recipient_domains.contains(&domain) {
        errors.push(FieldError::new(
            "/recipient",
            "reports go to your own address or to an allowed domain only",
        ));
        return String::new();
    }
    address.to_owned()
}

fn is_mailbox_local(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b))
}

/// Whether `name` is a DNS host name: dot-separated labels of letters, digits and inner
/// hyphens, at least two labels, at most 253 characters.
pub fn is_host_name(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_alphabetic()))
}

fn options(
    fields: &Map<String, Value>,
    request: &mut Map<String, Value>,
    errors: &mut Vec<FieldError>,
) {
    if let Some(value) = fields.get("search_domain_filter") {
        match value.as_array() {
            Some(domains) if domains.len() <= MAX_DOMAINS => {
                let mut cleaned = Vec::new();
                for (index, domain) in domains.iter().enumerate() {
                    let host = domain.as_str().map(|d| d.trim().to_ascii_lowercase());
                    match host {
                        Some(host) if is_host_name(host.strip_prefix('-').unwrap_or(&host)) => {
                            cleaned.push(Value::String(host));
                        }
                        _ => errors.push(FieldError::new(
                            format!("/search_domain_filter/{index}"),
                            "must be a host name such as example.com (a leading - excludes it)",
                        )),
                    }
                }
                request.insert("search_domain_filter".into(), Value::Array(cleaned));
            }
            Some(_) => errors.push(FieldError::new(
                "/search_domain_filter",
                format!("must hold at most {MAX_DOMAINS} domains"),
            )),
            None => errors.push(FieldError::new(
                "/search_domain_filter",
                "must be an array of host names",
            )),
        }
    }

    let choices: [(&str, &[&str]); 3] = [
        (
            "search_recency_filter",
            &["hour", "day", "week", "month", "year"],
        ),
        ("search_mode", &["web", "academic", "sec"]),
        ("reasoning_effort", &["minimal", "low", "medium", "high"]),
    ];
    for (name, allowed) in choices {
        if let Some(value) = fields.get(name) {
            match value.as_str() {
                Some(choice) if allowed.contains(&choice) => {
                    request.insert(name.into(), Value::String(choice.to_owned()));
                }
                _ => errors.push(FieldError::new(
                    format!("/{name}"),
                    format!("must be one of {}", allowed.join(", ")),
                )),
            }
        }
    }

    for name in [
        "search_after_date_filter",
        "search_before_date_filter",
        "last_updated_after_filter",
        "last_updated_before_filter",
    ] {
        if let Some(value) = fields.get(name) {
            match value.as_str() {
                Some(date) if is_us_date(date) => {
                    request.insert(name.into(), Value::String(date.to_owned()));
                }
                _ => errors.push(FieldError::new(
                    format!("/{name}"),
                    "must be a date written MM/DD/YYYY",
                )),
            }
        }
    }

    if let Some(value) = fields.get("web_search_options") {
        match value.as_object() {
            Some(options) => {
                let mut cleaned = Map::new();
                for (key, option) in options {
                    match (key.as_str(), option.as_str()) {
                        ("search_context_size", Some(size @ ("low" | "medium" | "high"))) => {
                            cleaned.insert(key.clone(), Value::String(size.to_owned()));
                        }
                        ("search_context_size", _) => errors.push(FieldError::new(
                            "/web_search_options/search_context_size",
                            "must be one of low, medium, high",
                        )),
                        _ => errors.push(FieldError::new(
                            format!("/web_search_options/{key}"),
                            "unknown field; allowed: search_context_size",
                        )),
                    }
                }
                request.insert("web_search_options".into(), Value::Object(cleaned));
            }
            None => errors.push(FieldError::new("/web_search_options", "must be an object")),
        }
    }
}

fn is_us_date(text: &str) -> bool {
    let parts: Vec<&str> = text.split('/').collect();
    let [month, day, year] = parts.as_slice() else {
        return false;
    };
    let number = |part: &str, len: usize| {
        (part.len() == len && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse::<u32>().ok())
            .flatten()
    };
    matches!(
        (number(month, 2), number(day, 2), number(year, 4)),
        (Some(1..=12), Some(1..=31), Some(1900..=2999))
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config() -> Config {
        let vars: HashMap<String, String> = [
            ("TABLE_NAME", "jobs"),
            ("SECRET_ID", "secret"),
            ("PUBLIC_BASE_URL", "https://api.example.com"),
            ("MAIL_FROM", "reports@example.com"),
            ("ALLOWED_MODELS", "sonar-deep-research,sonar-pro"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
        Config::from_map(&vars).expect("test configuration")
    }

    fn fields_of(body: &str) -> Vec<String> {
        match validate(body.as_bytes(), "ada@example.com", &config()) {
            Err(RequestError::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected field errors for {body}, got {other:?}"),
        }
    }

    #[test]
    fn bodies_that_mean_the_same_hash_the_same() {
        let bodies = [
            r#"{"query":"Heat pumps?","search_mode":"web"}"#,
            r#"{ "search_mode" : "web", "query" : "  Heat pumps?  " }"#,
            r#"{"messages":[{"content":"Heat pumps?","role":"user"}],"search_mode":"web"}"#,
            r#"{"query":"Heat pumps?","search_mode":"web","model":"sonar-deep-research"}"#,
        ];

        let hashes: Vec<String> = bodies
            .iter()
            .map(|body| {
                validate(body.as_bytes(), "ada@example.com", &config())
                    .expect("valid")
                    .body_hash()
            })
            .collect();

        assert!(hashes.iter().all(|hash| hash == &hashes[0]), "{hashes:?}");
    }

    #[test]
    fn a_different_option_changes_the_hash() {
        let first = validate(br#"{"query":"q"}"#, "ada@example.com", &config()).expect("valid");
        let second = validate(
            br#"{"query":"q","search_mode":"academic"}"#,
            "ada@example.com",
            &config(),
        )
        .expect("valid");

        assert_ne!(first.body_hash(), second.body_hash());
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let value = json!({"b": [{"z": 1, "a": "x"}], "a": null});
        let mut out = String::new();

        write_canonical(&value, &mut out);

        assert_eq!(out, r#"{"a":null,"b":[{"a":"x","z":1}]}"#);
    }

    #[test]
    fn turns_must_alternate_after_the_system_messages() {
        let cases = [
            (
                r#"[{"role":"system","content":"s"},{"role":"user","content":"u"}]"#,
                vec![],
            ),
            (
                r#"[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}]"#,
                vec![],
            ),
            (
                r#"[{"role":"user","content":"a"},{"role":"user","content":"b"}]"#,
                vec!["/messages/1/role"],
            ),
            (
                r#"[{"role":"assistant","content":"a"},{"role":"user","content":"b"}]"#,
                vec!["/messages/0/role"],
            ),
            (
                r#"[{"role":"user","content":"a"},{"role":"system","content":"b"}]"#,
                vec!["/messages/1/role"],
            ),
            (
                r#"[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]"#,
                vec!["/messages/1/role"],
            ),
            (
                r#"[{"role":"system","content":"s"}]"#,
                vec!["/messages/0/role"],
            ),
        ];

        for (messages, expected) in cases {
            let body = format!(r#"{{"messages":{messages}}}"#);

            let result = validate(body.as_bytes(), "ada@example.com", &config());

            match expected.as_slice() {
                [] => assert!(result.is_ok(), "{messages}: {result:?}"),
                _ => assert_eq!(fields_of(&body), expected, "{messages}"),
            }
        }
    }

    #[test]
    fn the_question_is_the_last_user_message() {
        let body = br#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"First?"},{"role":"assistant","content":"One."},{"role":"user","content":"Second?"}]}"#;

        let validated = validate(body, "ada@example.com", &config()).expect("valid");

        assert_eq!(validated.question, "Second?");
        assert_eq!(
            validated.provider_request["messages"]
                .as_array()
                .map(Vec::len),
            Some(4)
        );
    }
}
