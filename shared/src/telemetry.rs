//! Logging setup shared by every binary.
//!
//! Level and format follow the Lambda advanced logging settings (`AWS_LAMBDA_LOG_LEVEL`,
//! `AWS_LAMBDA_LOG_FORMAT`), falling back to `RUST_LOG`; JSON in Lambda so fields stay fields.
//! Log lines carry identifiers and states only: never secrets, signatures, addresses or reports.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned())
        .to_lowercase();
    let filter = env_filter(&level);
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT")
        .map(|format| format.eq_ignore_ascii_case("json"))
        .unwrap_or(std::env::var("AWS_LAMBDA_FUNCTION_NAME").is_ok());

    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).without_time().try_init()
    } else {
        builder.try_init()
    };
}

/// Libraries that log whole HTTP exchanges below `info`: the AWS SDK prints response bodies at
/// TRACE and errors with their raw responses at DEBUG, and a DynamoDB item holds the owner's
/// address and the report. They stay at `info` whatever level the function runs at.
const CHATTY_TARGETS: [&str; 8] = [
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http_client",
    "aws_sdk_dynamodb",
    "aws_sdk_sesv2",
    "aws_sdk_secretsmanager",
    "hyper_util",
    "reqwest",
];

/// The filter for a level setting (`info`, `debug`, or `RUST_LOG` directives): the setting for
/// our code, at most `info` for [`CHATTY_TARGETS`].
pub fn env_filter(level: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    for target in CHATTY_TARGETS {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}
