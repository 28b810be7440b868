//! Keeps `template.yaml` in step with the code it deploys.
//!
//! The table the template declares must be exactly the one the local stack creates
//! (`local_front::schema`): key, attribute types, indexes, projections and TTL, so code tested
//! locally meets the same table in AWS. The functions must be built by cargo-lambda from binaries
//! that exist, every route of the API must reach the right function, the `/jobs` routes must sit
//! behind the JWT authorizer and the webhook route must not, and every variable the
//! configuration requires must be set. Each failure names the difference.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use local_front::schema::{ATTRIBUTES, TTL_ATTRIBUTE, indexes};
use serde_json::{Map, Value, json};

/// Route key, the binary that must answer it, and whether the JWT authorizer guards it.
const ROUTES: [(&str, &str, bool); 5] = [
    ("POST /jobs", "submit-api", true),
    ("GET /jobs", "submit-api", true),
    ("GET /jobs/{id}", "submit-api", true),
    ("DELETE /jobs/{id}", "submit-api", true),
    (
        "POST /webhooks/perplexity/{job_id}",
        "webhook-receiver",
        false,
    ),
];

/// The Lambda binaries of the workspace.
const BINARIES: [&str; 3] = ["submit-api", "webhook-receiver", "reconciler"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `template.yaml` as JSON, with the short-form tags (`!Ref`, `!Sub`, `!GetAtt`, ...) written in
/// their long form (`{"Ref": ...}`, `{"Fn::Sub": ...}`, `{"Fn::GetAtt": [resource, attribute]}`).
fn template() -> Value {
    let path = workspace_root().join("template.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    let yaml: serde_norway::Value = serde_norway::from_str(&text)
        .unwrap_or_else(|error| panic!("template.yaml is not YAML: {error}"));
    long_form(yaml)
}

fn long_form(yaml: serde_norway::Value) -> Value {
    use serde_norway::Value as Yaml;
    match yaml {
        Yaml::Null => Value::Null,
        Yaml::Bool(flag) => Value::Bool(flag),
        Yaml::Number(number) => {
            if let Some(whole) = number.as_i64() {
                json!(whole)
            } else if let Some(whole) = number.as_u64() {
                json!(whole)
            } else {
                json!(number.as_f64())
            }
        }
        Yaml::String(text) => Value::String(text),
        Yaml::Sequence(items) => Value::Array(items.into_iter().map(long_form).collect()),
        Yaml::Mapping(mapping) => Value::Object(
            mapping
                .into_iter()
                .map(|(key, value)| {
                    let key = match long_form(key) {
                        Value::String(text) => text,
                        other => other.to_string(),
                    };
                    (key, long_form(value))
                })
                .collect(),
        ),
        Yaml::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let value = long_form(tagged.value);
            match (name, value) {
                ("Ref", value) => json!({ "Ref": value }),
                ("GetAtt", Value::String(dotted)) => {
                    let (resource, attribute) = dotted
                        .split_once('.')
                        .unwrap_or_else(|| panic!("!GetAtt {dotted} lacks an attribute"));
                    json!({ "Fn::GetAtt": [resource, attribute] })
                }
                (name, value) => json!({ format!("Fn::{name}"): value }),
            }
        }
    }
}

fn resources(template: &Value) -> &Map<String, Value> {
    template["Resources"]
        .as_object()
        .expect("template.yaml has Resources")
}

/// The resources of one type, by logical id.
fn of_type<'a>(template: &'a Value, kind: &str) -> BTreeMap<&'a str, &'a Value> {
    resources(template)
        .iter()
        .filter(|(_, resource)| resource["Type"] == kind)
        .map(|(id, resource)| (id.as_str(), resource))
        .collect()
}

/// The logical id a `{"Ref": id}` or `{"Fn::GetAtt": [id, ...]}` points at.
fn referenced_id(value: &Value) -> Option<&str> {
    value["Ref"]
        .as_str()
        .or_else(|| value["Fn::GetAtt"][0].as_str())
}

/// The one DynamoDB table of the template.
fn table(template: &Value) -> &Value {
    let tables = of_type(template, "AWS::DynamoDB::Table");
    assert_eq!(
        tables.len(),
        1,
        "template.yaml should declare one DynamoDB table, found {:?}",
        tables.keys().collect::<Vec<_>>()
    );
    tables.into_values().next().expect("one table")
}

/// A key schema as (hash, range) attribute names.
fn key_schema(value: &Value) -> (String, Option<String>) {
    let elements = value.as_array().expect("KeySchema is a list");
    let find = |kind: &str| {
        elements
            .iter()
            .find(|element| element["KeyType"] == kind)
            .and_then(|element| element["AttributeName"].as_str())
            .map(str::to_owned)
    };
    (find("HASH").expect("a HASH key"), find("RANGE"))
}

fn sorted_strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_table_is_keyed_like_the_local_one() {
    let template = template();
    let properties = &table(&template)["Properties"];

    // `schema::ensure_table` keys the table by `pk` alone.
    assert_eq!(
        key_schema(&properties["KeySchema"]),
        ("pk".to_owned(), None),
        "table key schema differs from dev/front/src/schema.rs"
    );
    assert_eq!(
        properties["BillingMode"], "PAY_PER_REQUEST",
        "the local table is on-demand"
    );
}

#[test]
fn attribute_definitions_match_the_local_schema() {
    let template = template();
    let declared: BTreeSet<(String, String)> =
        table(&template)["Properties"]["AttributeDefinitions"]
            .as_array()
            .expect("AttributeDefinitions is a list")
            .iter()
            .map(|definition| {
                (
                    definition["AttributeName"]
                        .as_str()
                        .expect("a name")
                        .to_owned(),
                    definition["AttributeType"]
                        .as_str()
                        .expect("a type")
                        .to_owned(),
                )
            })
            .collect();
    let expected: BTreeSet<(String, String)> = ATTRIBUTES
        .iter()
        .map(|(name, kind)| ((*name).to_owned(), (*kind).to_owned()))
        .collect();

    assert_eq!(
        declared,
        expected,
        "attribute definitions differ: only in template.yaml {:?}, only in schema.rs {:?}",
        declared.difference(&expected).collect::<Vec<_>>(),
        expected.difference(&declared).collect::<Vec<_>>()
    );
}

#[test]
fn indexes_match_the_local_schema() {
    let template = template();
    let declared: BTreeMap<String, &Value> =
        table(&template)["Properties"]["GlobalSecondaryIndexes"]
            .as_array()
            .expect("GlobalSecondaryIndexes is a list")
            .iter()
            .map(|index| {
                (
                    index["IndexName"].as_str().expect("a name").to_owned(),
                    index,
                )
            })
            .collect();
    let expected = indexes();

    let declared_names: BTreeSet<&str> = declared.keys().map(String::as_str).collect();
    let expected_names: BTreeSet<&str> = expected.iter().map(|index| index.0).collect();
    assert_eq!(
        declared_names, expected_names,
        "index names differ between template.yaml and schema.rs"
    );

    for (name, hash, range, projection, included) in expected {
        let index = declared[name];
        assert_eq!(
            key_schema(&index["KeySchema"]),
            (hash.to_owned(), Some(range.to_owned())),
            "index {name}: key schema differs from schema.rs"
        );
        assert_eq!(
            index["Projection"]["ProjectionType"], projection,
            "index {name}: projection type differs from schema.rs"
        );
        let declared_attributes = sorted_strings(&index["Projection"]["NonKeyAttributes"]);
        let expected_attributes: BTreeSet<String> =
            included.iter().map(|name| (*name).to_owned()).collect();
        assert_eq!(
            declared_attributes,
            expected_attributes,
            "index {name}: projected attributes differ: only in template.yaml {:?}, only in \
             schema.rs {:?}",
            declared_attributes
                .difference(&expected_attributes)
                .collect::<Vec<_>>(),
            expected_attributes
                .difference(&declared_attributes)
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn ttl_and_protection_match_the_local_schema() {
    let template = template();
    let table = table(&template);
    let properties = &table["Properties"];

    assert_eq!(
        properties["TimeToLiveSpecification"],
        json!({"AttributeName": TTL_ATTRIBUTE, "Enabled": true}),
        "TTL must be on attribute {TTL_ATTRIBUTE:?}, as in schema.rs"
    );
    assert_eq!(
        properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    assert_eq!(properties["SSESpecification"]["SSEEnabled"], true);
    assert_eq!(
        table["DeletionPolicy"], "Retain",
        "the table outlives the stack"
    );
    assert_eq!(
        table["UpdateReplacePolicy"], "Retain",
        "the table survives replacement"
    );
}

/// Logical id of each function, by the binary it is built from.
fn functions_by_binary(template: &Value) -> BTreeMap<String, String> {
    of_type(template, "AWS::Serverless::Function")
        .into_iter()
        .map(|(id, function)| {
            let binary = function["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .unwrap_or_else(|| panic!("function {id} names no BuildProperties.Binary"));
            (binary.to_owned(), id.to_owned())
        })
        .collect()
}

#[test]
fn every_function_is_built_by_cargo_lambda_from_a_workspace_binary() {
    let template = template();

    for (id, function) in of_type(&template, "AWS::Serverless::Function") {
        assert_eq!(
            function["Metadata"]["BuildMethod"], "rust-cargolambda",
            "function {id} must be built with BuildMethod rust-cargolambda"
        );
        assert_eq!(
            function["Properties"]["CodeUri"], ".",
            "function {id} builds from the workspace root"
        );
    }

    let built: BTreeSet<String> = functions_by_binary(&template).into_keys().collect();
    let expected: BTreeSet<String> = BINARIES.iter().map(|name| (*name).to_owned()).collect();
    assert_eq!(built, expected, "functions and workspace binaries differ");
    for binary in BINARIES {
        let main = workspace_root().join(format!("functions/{binary}/src/main.rs"));
        assert!(main.exists(), "binary {binary} has no {}", main.display());
    }
}

#[test]
fn every_route_reaches_its_function_with_the_right_authorization() {
    let template = template();
    let functions = functions_by_binary(&template);
    let integrations = of_type(&template, "AWS::ApiGatewayV2::Integration");
    let authorizers = of_type(&template, "AWS::ApiGatewayV2::Authorizer");
    let routes: BTreeMap<&str, &Value> = of_type(&template, "AWS::ApiGatewayV2::Route")
        .into_values()
        .map(|route| {
            let key = route["Properties"]["RouteKey"]
                .as_str()
                .expect("a RouteKey");
            (key, &route["Properties"])
        })
        .collect();

    let declared: BTreeSet<&str> = routes.keys().copied().collect();
    let expected: BTreeSet<&str> = ROUTES.iter().map(|route| route.0).collect();
    assert_eq!(
        declared, expected,
        "the API's routes differ from the product's"
    );

    for (key, binary, guarded) in ROUTES {
        let route = routes[key];

        let target = route["Target"]["Fn::Sub"].as_str().unwrap_or_default();
        let integration_id = target
            .strip_prefix("integrations/${")
            .and_then(|rest| rest.strip_suffix('}'))
            .unwrap_or_else(|| panic!("route {key}: Target must be !Sub integrations/${{...}}"));
        let Some(integration) = integrations.get(integration_id) else {
            panic!("route {key}: no integration {integration_id}");
        };
        let integration = &integration["Properties"];
        assert_eq!(integration["IntegrationType"], "AWS_PROXY", "route {key}");
        assert_eq!(
            integration["PayloadFormatVersion"], "2.0",
            "route {key}: the handlers are tested with payload format 2.0"
        );
        let function = referenced_id(&integration["IntegrationUri"]);
        assert_eq!(
            function,
            functions.get(binary).map(String::as_str),
            "route {key} must reach the {binary} function"
        );

        if guarded {
            assert_eq!(
                route["AuthorizationType"], "JWT",
                "route {key} must require the JWT authorizer"
            );
            let authorizer = referenced_id(&route["AuthorizerId"])
                .and_then(|id| authorizers.get(id))
                .unwrap_or_else(|| panic!("route {key} names no authorizer of this template"));
            assert_eq!(authorizer["Properties"]["AuthorizerType"], "JWT");
        } else {
            assert_eq!(
                route["AuthorizationType"], "NONE",
                "route {key} is authenticated by signature, not by a token"
            );
            assert!(
                route.get("AuthorizerId").is_none(),
                "route {key} must have no authorizer"
            );
        }
    }
}

#[test]
fn the_jwt_authorizer_checks_issuer_and_audience() {
    let template = template();
    let authorizers = of_type(&template, "AWS::ApiGatewayV2::Authorizer");
    assert_eq!(authorizers.len(), 1, "one JWT authorizer");
    let properties = &authorizers.into_values().next().expect("one")["Properties"];

    assert_eq!(
        properties["JwtConfiguration"]["Issuer"],
        json!({"Ref": "JwtIssuer"})
    );
    assert_eq!(
        properties["JwtConfiguration"]["Audience"],
        json!([{"Ref": "JwtAudience"}])
    );
    assert_eq!(
        properties["IdentitySource"],
        json!(["$request.header.Authorization"])
    );
}

#[test]
fn the_reconciler_runs_on_the_schedule() {
    let template = template();
    let functions = functions_by_binary(&template);
    let reconciler = &resources(&template)[&functions["reconciler"]]["Properties"];

    let schedules: Vec<&Value> = reconciler["Events"]
        .as_object()
        .expect("the reconciler has Events")
        .values()
        .filter(|event| event["Type"] == "Schedule")
        .collect();
    assert_eq!(schedules.len(), 1, "one schedule event");
    assert_eq!(
        schedules[0]["Properties"]["Schedule"],
        json!({"Ref": "ReconcileSchedule"})
    );
    assert_eq!(reconciler["Timeout"], 300);
}

#[test]
fn every_function_gets_the_configuration_it_requires() {
    let template = template();
    let parameters = template["Parameters"].as_object().expect("Parameters");
    let globals = template["Globals"]["Function"]["Environment"]["Variables"]
        .as_object()
        .cloned()
        .unwrap_or_default();

    for (id, function) in of_type(&template, "AWS::Serverless::Function") {
        let mut variables = globals.clone();
        if let Some(own) = function["Properties"]["Environment"]["Variables"].as_object() {
            variables.extend(own.clone());
        }
        // A value CloudFormation fills in at deploy time stands in as its parameter's default,
        // or as a placeholder that every variable accepts.
        let resolved: HashMap<String, String> = variables
            .iter()
            .map(|(name, value)| {
                let text = match value {
                    Value::String(text) => text.clone(),
                    Value::Number(number) => number.to_string(),
                    other => referenced_id(other)
                        .and_then(|id| parameters.get(id))
                        .and_then(|parameter| match &parameter["Default"] {
                            Value::String(text) => Some(text.clone()),
                            Value::Number(number) => Some(number.to_string()),
                            _ => None,
                        })
                        .unwrap_or_else(|| "1".to_owned()),
                };
                (name.clone(), text)
            })
            .collect();

        if let Err(error) = research_relay::config::Config::from_map(&resolved) {
            panic!("function {id} would not start: {error}");
        }
    }
}
