//! The submit handler's own CPU work for one typical `POST /jobs`, without any network: body
//! validation, the idempotency hash, building the job record and rendering the 202 view.
//!
//! Run with `cargo bench -p submit-api --bench submit`; the figure to read is the time per
//! iteration of `submit_cpu/typical`.

#![allow(missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use research_relay::config::Config;
use research_relay::job::new_job_id;
use research_relay::request::validate;
use research_relay::store::JobRecord;
use research_relay::view::job_view;

fn config() -> Config {
    let vars: HashMap<String, String> = [
        ("TABLE_NAME", "jobs"),
        ("SECRET_ID", "secret"),
        ("PUBLIC_BASE_URL", "https://api.example.com"),
        ("MAIL_FROM", "reports@example.com"),
        (
            "ALLOWED_MODELS",
            "sonar-deep-research,sonar-reasoning-pro,sonar-pro,sonar",
        ),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect();
    Config::from_map(&vars).expect("bench configuration")
}

/// A request a frontend typically sends: a short conversation and a few search options.
const TYPICAL: &str = r#"{
  "messages": [
    {"role": "system", "content": "Answer for a building engineer; cite field studies."},
    {"role": "user", "content": "How well do air-source heat pumps heat homes in cold climates below -20 degrees C? Compare seasonal efficiency in field studies from Canada, Scandinavia and the northern US, and say when backup resistance heating is still needed."}
  ],
  "model": "sonar-deep-research",
  "search_domain_filter": ["energy.gov", "nrcan.gc.ca", "sintef.no", "-example.com"],
  "search_recency_filter": "year",
  "reasoning_effort": "medium",
  "web_search_options": {"search_context_size": "high"}
}"#;

fn submit_cpu(c: &mut Criterion) {
    let config = config();
    let body = TYPICAL.as_bytes();

    c.bench_function("submit_cpu/typical", |b| {
        b.iter(|| {
            let validated =
                validate(black_box(body), "reader@example.com", &config).expect("valid body");
            let hash = validated.body_hash();
            let job = JobRecord::new_queued(
                new_job_id(),
                "owner-sub".to_owned(),
                validated.recipient.clone(),
                validated.question.clone(),
                validated.provider_request.clone(),
                validated.model.clone(),
                1_767_225_600_000,
                Some(hash),
            );
            black_box(job_view(&job, None).to_string())
        })
    });

    c.bench_function("submit_cpu/refused_body", |b| {
        b.iter(|| validate(black_box(br#"{"query":42}"#), "reader@example.com", &config))
    });
}

criterion_group!(benches, submit_cpu);
criterion_main!(benches);
