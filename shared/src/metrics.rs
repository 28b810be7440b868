//! CloudWatch embedded-metric log lines.
//!
//! A JSON line on stdout in the embedded metric format becomes a CloudWatch metric without any
//! API call, so alarms can watch rejected webhooks and reconciler runs at no request cost.

use serde_json::{Map, Value, json};

/// The namespace every metric is published under.
pub const NAMESPACE: &str = "ResearchRelay";

/// Prints one embedded-metric line with count metrics, tagged with the function's name.
pub fn emit(function: &str, counts: &[(&str, f64)], timestamp_ms: i64) {
    println!("{}", render(function, counts, timestamp_ms));
}

/// The line [`emit`] prints; separate so tests can read it.
pub fn render(function: &str, counts: &[(&str, f64)], timestamp_ms: i64) -> String {
    let metrics: Vec<(&str, f64, &str)> = counts
        .iter()
        .map(|(name, value)| (*name, *value, "Count"))
        .collect();
    render_with_units(function, &metrics, timestamp_ms)
}

/// Prints one embedded-metric line whose metrics name their CloudWatch unit (`Count`,
/// `Milliseconds`, ...), for runs that report durations beside counts.
pub fn emit_with_units(function: &str, metrics: &[(&str, f64, &str)], timestamp_ms: i64) {
    println!("{}", render_with_units(function, metrics, timestamp_ms));
}

/// The line [`emit_with_units`] prints.
pub fn render_with_units(
    function: &str,
    metrics: &[(&str, f64, &str)],
    timestamp_ms: i64,
) -> String {
    let definitions: Vec<Value> = metrics
        .iter()
        .map(|(name, _, unit)| json!({"Name": name, "Unit": unit}))
        .collect();
    let mut line = Map::new();
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Function"]],
                "Metrics": definitions,
            }],
        }),
    );
    line.insert("Function".into(), json!(function));
    for (name, value, _) in metrics {
        line.insert((*name).to_owned(), json!(value));
    }
    Value::Object(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_declares_every_metric_it_carries() {
        let line = render("webhook-receiver", &[("WebhookRejected", 1.0)], 1000);

        let parsed: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(parsed["WebhookRejected"], 1.0);
        assert_eq!(
            parsed["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "WebhookRejected"
        );
    }
}
