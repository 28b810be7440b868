//! CPU cost of one COMPLETED delivery in the webhook receiver, without the network: verify the
//! signature over the raw body (two signing keys active, the current one matching), parse the
//! delivery, take the usable result out of it, prepare it for the table (gzip, and parts when it
//! is too large for the job item), and render the e-mail the owner gets. Each step is also
//! measured alone. Two inputs: the recorded 20 KB deep-research response wrapped as a delivery
//! (read from `../shared/reference/responses` beside the workspace; skipped when absent) and a
//! synthetic 450 KB report citing 50 sources (the C15 size). Targets: 0.3 ms and 3 ms.
//!
//! ```text
//! cargo bench -p research-relay --bench webhook
//! ```

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use research_relay::email::{Envelope, ReportEmail, compose_report};
use research_relay::finish::usable_result;
use research_relay::provider::{CompletionResponse, ProviderJob};
use research_relay::report::{sources, strip_think};
use research_relay::secrets::{SecretString, SigningKeys};
use research_relay::signature::{derive_job_secret, sign, verify_delivery};
use research_relay::store::{PreparedResult, prepare_result};

const RECORDED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/reference/responses/deep_research_medium_pharmasage.json"
);

const JOB_ID: &str = "01JH0000000000000000000000";

/// A signed delivery as the receiver gets it.
struct Delivery {
    body: Vec<u8>,
    signature: String,
}

impl Delivery {
    fn completed(keys: &SigningKeys, response: serde_json::Value) -> Self {
        let body = serde_json::to_vec(&serde_json::json!({
            "job_id": "3f7c1d2e-5a6b-4c8d-9e0f-1a2b3c4d5e6f",
            "status": "COMPLETED",
            "response": response,
        }))
        .expect("JSON");
        let signature = sign(&derive_job_secret(keys.current.expose(), JOB_ID), &body);
        Self { body, signature }
    }
}

/// What the receiver does with a delivery before and after its two table writes.
fn receive(keys: &SigningKeys, delivery: &Delivery) -> (PreparedResult, Vec<u8>) {
    verify_delivery(
        keys,
        JOB_ID,
        &delivery.body,
        Some(delivery.signature.as_bytes()),
    )
    .expect("verifies");
    let job: ProviderJob = serde_json::from_slice(&delivery.body).expect("a delivery");
    let (completion, stored) = usable_result(&job).expect("a usable result");
    let prepared = prepare_result(&stored).expect("storable");

    let message = render(&completion);
    (prepared, message)
}

/// The owner's e-mail for a completion, as the mailer composes it.
fn render(completion: &CompletionResponse) -> Vec<u8> {
    let answer = strip_think(completion.content().unwrap_or_default());
    let found = sources(completion);
    compose_report(&ReportEmail {
        envelope: Envelope {
            from: "Research Relay <reports@example.com>",
            to: "owner@example.org",
            date_unix_secs: 1_767_225_600,
            message_id: None,
            boundary_token: Some("bench"),
        },
        question: "What does the benchmark measure?",
        job_id: JOB_ID,
        model: completion.model.as_deref(),
        duration: Some(Duration::from_secs(200)),
        cost_usd: Some(0.42),
        answer_markdown: answer.answer,
        sources: &found,
    })
    .expect("composes")
}

/// Words the synthetic report is written in.
const VOCABULARY: &str = "heat network operators utility municipal district supply demand \
    temperature return flow pipe insulation loss efficiency pump compressor electricity grid \
    tariff price cost investment subsidy regulation carbon emission fossil biomass waste solar \
    geothermal storage tank season winter summer peak load capacity customer household building \
    retrofit renovation standard survey report analysis data trend growth decline region city \
    country policy target plan programme operator contract risk benefit reliability outage \
    maintenance network length connection share percent average median annual quarterly study \
    model scenario forecast estimate measurement evidence source finding result comparison \
    the of and in to a for with on by from at as is was were are has have that which";

/// A deep-research completion of about 450 KB: a think block, then sections of paragraphs,
/// lists and tables citing the 50 search results. The words are drawn at random from
/// [`VOCABULARY`], so the text compresses about as well as prose does (the printed sizes
/// show the ratio), not as well as a repeated template would.
fn synthetic_completion() -> serde_json::Value {
    let words: Vec<&str> = VOCABULARY.split_whitespace().collect();
    let mut state = 0x2545_f491_u32;
    let mut next = move |bound: usize| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as usize % bound
    };
    let mut content = String::from(
        "<think>\nSplit the question into sub-questions, search each, compare the sources.\n\
         </think>\n\n# District heating in northern Europe\n\n",
    );
    let mut section = 0;
    while content.len() < 450_000 {
        section += 1;
        let _ = write!(content, "## Finding {section}\n\n");
        for _ in 0..4 {
            for _ in 0..5 {
                let length = 8 + next(12);
                for index in 0..length {
                    let word = words[next(words.len())];
                    if index == 0 {
                        let mut letters = word.chars();
                        if let Some(first) = letters.next() {
                            content.extend(first.to_uppercase());
                            content.push_str(letters.as_str());
                        }
                    } else {
                        content.push(' ');
                        content.push_str(word);
                    }
                }
                let _ = write!(
                    content,
                    " {}.{} % [{}]. ",
                    next(100),
                    next(10),
                    next(50) + 1
                );
            }
            content.push_str("\n\n");
        }
        let _ = write!(
            content,
            "- **{}:** {} {} [{}]\n- **{}:** {} {}\n\n| {} | {} |\n|---|---|\n| {} | {} |\n\n",
            words[next(words.len())],
            words[next(words.len())],
            words[next(words.len())],
            next(50) + 1,
            words[next(words.len())],
            words[next(words.len())],
            words[next(words.len())],
            words[next(words.len())],
            words[next(words.len())],
            next(1000),
            next(1000),
        );
    }
    let results: Vec<serde_json::Value> = (1..=50)
        .map(|n| {
            serde_json::json!({
                "title": format!("Annual report of utility {n}"),
                "url": format!("https://utility{n}.example.org/reports/2025"),
                "date": if n % 3 == 0 { serde_json::Value::Null } else { "2025-03-01".into() },
            })
        })
        .collect();
    serde_json::json!({
        "id": "synthetic",
        "model": "sonar-deep-research",
        "created": 1_767_225_600,
        "usage": {"prompt_tokens": 40, "completion_tokens": 90_000, "total_tokens": 90_040},
        "citations": results.iter().map(|r| r["url"].clone()).collect::<Vec<_>>(),
        "search_results": results,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
    })
}

fn bench_webhook(c: &mut Criterion) {
    let keys = SigningKeys {
        current: SecretString::new("bench-signing-key-current"),
        previous: Some(SecretString::new("bench-signing-key-previous")),
    };
    let mut cases = Vec::new();
    match std::fs::read_to_string(RECORDED) {
        Ok(text) => {
            let response = serde_json::from_str(&text).expect("recorded JSON");
            cases.push(("recorded_20k", Delivery::completed(&keys, response)));
        }
        Err(_) => println!("skipped: the recorded response is not at {RECORDED}"),
    }
    cases.push((
        "synthetic_450k_50_sources",
        Delivery::completed(&keys, synthetic_completion()),
    ));

    let mut group = c.benchmark_group("webhook_receive");
    for (name, delivery) in &cases {
        let (prepared, message) = receive(&keys, delivery);
        let stored = match &prepared {
            PreparedResult::Inline(bytes) => format!("inline, {} B gzip", bytes.len()),
            PreparedResult::Parts(parts) => format!(
                "in {} parts, {} B gzip",
                parts.len(),
                parts.iter().map(Vec::len).sum::<usize>()
            ),
        };
        println!(
            "{name}: body {} B, stored {stored}, message {} B",
            delivery.body.len(),
            message.len()
        );
        group.throughput(Throughput::Bytes(delivery.body.len() as u64));
        group.bench_function(*name, |bench| {
            bench.iter(|| receive(black_box(&keys), black_box(delivery)));
        });
    }
    group.finish();

    // The steps alone, to see where the time goes.
    for (name, delivery) in &cases {
        bench_steps(c, &keys, name, delivery);
    }
}

fn bench_steps(c: &mut Criterion, keys: &SigningKeys, name: &str, delivery: &Delivery) {
    let mut group = c.benchmark_group(format!("webhook_steps/{name}"));
    group.bench_function("verify", |bench| {
        bench.iter(|| {
            verify_delivery(
                black_box(keys),
                JOB_ID,
                black_box(&delivery.body),
                Some(delivery.signature.as_bytes()),
            )
        });
    });
    group.bench_function("parse", |bench| {
        bench.iter(|| serde_json::from_slice::<ProviderJob>(black_box(&delivery.body)));
    });
    let job: ProviderJob = serde_json::from_slice(&delivery.body).expect("a delivery");
    group.bench_function("usable_result", |bench| {
        bench.iter(|| usable_result(black_box(&job)));
    });
    let (completion, stored) = usable_result(&job).expect("a usable result");
    group.bench_function("prepare_result", |bench| {
        bench.iter(|| prepare_result(black_box(&stored)));
    });
    group.bench_function("render", |bench| {
        bench.iter(|| render(black_box(&completion)));
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_webhook(&mut criterion);
    criterion.final_summary();
}
