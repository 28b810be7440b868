//! Checks real answers against `openapi.yaml`: the operation, the status, the content type, the
//! required headers and the body's schema. Included by the API tests with `#[path]`, so every
//! answer those tests see is held to the published document.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Value, json};

/// The parsed document, read once per test binary.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi.yaml");
        let text = std::fs::read_to_string(path).expect("openapi.yaml at the repository root");
        serde_norway::from_str(&text).expect("openapi.yaml is YAML")
    })
}

/// One answer as a test saw it.
#[derive(Debug, Clone)]
pub struct Observed {
    /// HTTP method, upper case.
    pub method: String,
    /// The path as requested (a query string is ignored).
    pub path: String,
    /// HTTP status.
    pub status: u16,
    /// Headers, lower-case names.
    pub headers: HashMap<String, String>,
    /// The body as JSON (`Null` when empty).
    pub body: Value,
}

/// The documented path template a concrete path falls under, preferring literal segments.
pub fn template_for(path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let paths = document()["paths"].as_object()?;
    let mut best: Option<(usize, &String)> = None;
    for template in paths.keys() {
        let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let mut literal = 0;
        let fits = parts.iter().zip(&segments).all(|(part, segment)| {
            if part.starts_with('{') && part.ends_with('}') {
                !segment.is_empty()
            } else {
                literal += 1;
                part == segment
            }
        });
        if fits && best.is_none_or(|(count, _)| literal > count) {
            best = Some((literal, template));
        }
    }
    best.map(|(_, template)| template.clone())
}

/// Follows a local `$ref` in the document.
fn resolve(value: &Value) -> &Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.trim_start_matches('#');
            resolve(document().pointer(pointer).unwrap_or(&Value::Null))
        }
        None => value,
    }
}

/// The documented methods of a path template, upper case.
pub fn methods_of(template: &str) -> Vec<String> {
    let item = &document()["paths"][template];
    ["get", "put", "post", "delete", "patch", "head", "options"]
        .into_iter()
        .filter(|method| item.get(*method).is_some())
        .map(str::to_uppercase)
        .collect()
}

/// Whether `answer` is what the document promises; the error says what differs.
pub fn check(answer: &Observed) -> Result<(), String> {
    let where_ = format!("{} {} -> {}", answer.method, answer.path, answer.status);
    let template =
        template_for(&answer.path).ok_or_else(|| format!("{where_}: path not documented"))?;
    let item = &document()["paths"][&template];
    let Some(operation) = item.get(answer.method.to_lowercase()) else {
        if answer.status == 405 {
            // A method the API does not offer: the answer must list exactly the ones it does.
            let documented = methods_of(&template).join(", ");
            return match answer.headers.get("allow") {
                Some(allow) if *allow == documented => Ok(()),
                Some(allow) => Err(format!(
                    "{where_}: Allow says {allow:?}, the document {documented:?}"
                )),
                None if template.starts_with("/webhooks/") => Ok(()),
                None => Err(format!("{where_}: no Allow header")),
            };
        }
        return Err(format!("{where_}: method not documented for {template}"));
    };
    let response = operation["responses"]
        .get(answer.status.to_string())
        .map(resolve)
        .ok_or_else(|| format!("{where_}: status not documented for {template}"))?;

    if let Some(headers) = response.get("headers").and_then(Value::as_object) {
        for (name, header) in headers {
            let header = resolve(header);
            let required = header["required"].as_bool().unwrap_or(false);
            match answer.headers.get(&name.to_lowercase()) {
                None if required => {
                    return Err(format!("{where_}: required header {name} missing"));
                }
                Some(value) => check_header(&where_, name, value, &header["schema"])?,
                None => {}
            }
        }
    }

    let media_type = answer.headers.get("content-type").map(|value| {
        value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    });
    let content = response.get("content").and_then(Value::as_object);
    match (content, media_type) {
        (None, None) => Ok(()),
        (None, Some(media_type)) => Err(format!(
            "{where_}: answered {media_type}, the document promises no body"
        )),
        (Some(_), None) => Err(format!("{where_}: no content type")),
        (Some(content), Some(media_type)) => {
            let media = content.get(&media_type).ok_or_else(|| {
                format!(
                    "{where_}: content type {media_type} not documented (documented: {:?})",
                    content.keys().collect::<Vec<_>>()
                )
            })?;
            check_schema(&where_, &media["schema"], &answer.body)?;
            if media_type == "application/problem+json" {
                check_problem(&where_, answer)?;
            }
            Ok(())
        }
    }
}

fn check_header(where_: &str, name: &str, value: &str, schema: &Value) -> Result<(), String> {
    let as_json = match schema["type"].as_str() {
        Some("integer") => match value.trim().parse::<i64>() {
            Ok(number) => json!(number),
            Err(_) => {
                return Err(format!(
                    "{where_}: header {name} {value:?} is not an integer"
                ));
            }
        },
        _ => json!(value),
    };
    check_schema(&format!("{where_} header {name}"), schema, &as_json)
}

/// A problem document agrees with its own answer.
fn check_problem(where_: &str, answer: &Observed) -> Result<(), String> {
    let body = &answer.body;
    if body["status"] != json!(answer.status) {
        return Err(format!(
            "{where_}: problem status {} differs",
            body["status"]
        ));
    }
    let code = body["code"].as_str().unwrap_or_default();
    let kind = body["type"].as_str().unwrap_or_default();
    if !kind.ends_with(&format!("/{code}")) {
        return Err(format!("{where_}: type {kind} does not end in code {code}"));
    }
    Ok(())
}

/// Validates `instance` against a schema of the document, its `$ref`s resolved in the document.
pub fn check_schema(where_: &str, schema: &Value, instance: &Value) -> Result<(), String> {
    let mut root = schema.clone();
    if let Value::Object(map) = &mut root {
        map.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        map.insert("components".into(), document()["components"].clone());
    } else {
        return Err(format!("{where_}: schema is not an object"));
    }
    let validator = jsonschema::draft202012::new(&root)
        .map_err(|error| format!("{where_}: schema does not compile: {error}"))?;
    let problems: Vec<String> = validator
        .iter_errors(instance)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{where_}: body {instance} breaks the schema: {problems:?}"
        ))
    }
}

/// Asserts that every answer is documented; names all that are not.
pub fn assert_all_documented(answers: &[Observed]) {
    let failures: Vec<String> = answers
        .iter()
        .filter_map(|answer| check(answer).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} answers differ from openapi.yaml:\n{}",
        failures.len(),
        answers.len(),
        failures.join("\n")
    );
}
