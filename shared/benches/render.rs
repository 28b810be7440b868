//! How long it takes to turn a finished provider response into the bytes handed to SES.
//!
//! Each case runs the mailer's whole path on a JSON body: parse the completion, remove the think
//! block, take the sources, render HTML and text, and compose the MIME message with the Markdown
//! attachment. Two inputs: the recorded 20 KB deep-research response (read from
//! `../shared/reference/responses` beside the workspace, skipped when absent) and a synthetic
//! 450 KB report citing 50 sources (the C15 size). Targets: under 0.3 ms and under 3 ms.
//!
//! ```text
//! cargo bench -p research-relay --bench render
//! ```

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use research_relay::email::{Envelope, ReportEmail, compose_report};
use research_relay::provider::CompletionResponse;
use research_relay::report::{ReportMeta, render_report, sources, strip_think};

const RECORDED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/reference/responses/deep_research_medium_pharmasage.json"
);

/// The mailer's path from response body to message bytes.
fn response_to_message(json: &str) -> Vec<u8> {
    let response: CompletionResponse = serde_json::from_str(json).expect("completion JSON");
    let answer = strip_think(response.content().unwrap_or_default());
    let found = sources(&response);
    let email = ReportEmail {
        envelope: Envelope {
            from: "Research Relay <reports@example.com>",
            to: "Zoë Exâmple <zoe@example.org>",
            date_unix_secs: 1_767_225_600,
            message_id: None,
            boundary_token: Some("bench0001"),
        },
        question: "Benchmark question with a few words in it",
        job_id: "01JGZ5Q6C7XW3E2N8R4T9YB0KD",
        model: response.model.as_deref(),
        duration: Some(Duration::from_secs(252)),
        cost_usd: None,
        answer_markdown: answer.answer,
        sources: &found,
    };
    compose_report(&email).expect("composes")
}

/// A deep-research response of about 450 KB shaped like the recorded ones: a think block, then
/// a German report of sections with prose paragraphs citing 50 search results, bullet lists
/// with bold leads, a rule, and a table in every fifth section.
fn synthetic_response() -> String {
    synthetic_response_with(|report, section, a, b| {
        let _ = write!(
            report,
            "## Abschnitt {section}: Wärmenetze im Vergleich\n\n\
             Die Betreiber kommunaler Wärmenetze berichten für das Jahr {year} über einen \
             Anstieg der angeschlossenen Leistung um {section} % gegenüber dem Vorjahr[{a}][{b}]. \
             Größere Anlagen profitieren dabei stärker von Skaleneffekten, während kleine \
             Betriebe auf Förderprogramme angewiesen bleiben, um die Umstellung auf \
             erneuerbare Quellen zu finanzieren[{b}]. Die Auswertung zeigt außerdem, dass \
             Großwärmepumpen und Abwärme aus Rechenzentren an Bedeutung gewinnen[{a}].\n\n\
             Für die Planung ergeben sich daraus drei Schwerpunkte:\n\n\
             - **Investitionen**: Netzausbau und Speicher verlangen langfristige Finanzierung[{a}].\n\
             - **Preisbildung**: transparente Tarife stärken die Akzeptanz der Kunden[{b}].\n\
             - **Fachkräfte**: Montage und Betrieb brauchen qualifiziertes Personal[{a}][{b}].\n\n\
             Weitere Details finden sich im [Jahresbericht](https://example.org/bericht/{section}) \
             und in den Daten der Bundesländer[{b}].\n\n",
            year = 2000 + section % 25,
        );
        if section % 5 == 0 {
            let _ = write!(
                report,
                "| Kennzahl | Wert | Quelle |\n|---|--:|---|\n\
                 | Leistung | {section} MW | [{a}] |\n| Kosten | {} € | [{b}] |\n\n---\n\n",
                section * 13
            );
        }
    })
}

/// A worst case for markup density: a table, a list and markers in every 300 bytes.
fn table_dense_response() -> String {
    synthetic_response_with(|report, section, a, b| {
        let _ = write!(
            report,
            "## Abschnitt {section}: Ergebnisse\n\n\
             Die Messungen zeigen einen Anstieg um {section} % gegenüber dem Vorjahr[{a}][{b}].\n\n\
             | Kennzahl | Wert | Quelle |\n|---|--:|---|\n| Leistung | {section} kW | [{a}] |\n\
             | Kosten | {} € | [{b}] |\n\n\
             - Punkt eins mit `Code [{a}]`\n- Punkt zwei mit *Betonung*[{a}]\n\n",
            section * 13
        );
    })
}

fn synthetic_response_with(
    mut section_text: impl FnMut(&mut String, usize, usize, usize),
) -> String {
    let mut report = String::with_capacity(460_000);
    report.push_str("<think>\nPlanung der Suche nach Quellen zu Wärmenetzen.\n</think>\n\n");
    report.push_str("# Großer Bericht über Wärmenetze\n\n");
    let mut section = 0;
    while report.len() < 450_000 {
        section += 1;
        section_text(
            &mut report,
            section,
            section % 50 + 1,
            (section * 7) % 50 + 1,
        );
    }
    let search_results: Vec<serde_json::Value> = (1..=50)
        .map(|number| {
            serde_json::json!({
                "title": format!("Quelle Nr. {number} – Überblick"),
                "url": format!("https://example.org/quelle/{number}"),
                "date": "2025-03-01",
            })
        })
        .collect();
    serde_json::json!({
        "id": "synthetic-450k",
        "model": "sonar-deep-research",
        "search_results": search_results,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": report}}],
    })
    .to_string()
}

fn bench_render(c: &mut Criterion) {
    let mut group = c.benchmark_group("response_to_message");
    match std::fs::read_to_string(RECORDED) {
        Ok(json) => {
            describe("recorded_20k", &json);
            group.throughput(Throughput::Bytes(json.len() as u64));
            group.bench_function("recorded_20k", |bench| {
                bench.iter(|| response_to_message(black_box(&json)));
            });
        }
        Err(_) => println!("skipped: ../shared not present ({RECORDED})"),
    }
    for (name, json) in [
        ("synthetic_450k_50_sources", synthetic_response()),
        ("table_dense_450k_50_sources", table_dense_response()),
    ] {
        describe(name, &json);
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_function(name, |bench| {
            bench.iter(|| response_to_message(black_box(&json)));
        });
    }
    group.finish();

    let json = synthetic_response();
    let response: CompletionResponse = serde_json::from_str(&json).expect("completion JSON");
    let answer = strip_think(response.content().unwrap_or_default());
    let found = sources(&response);
    let meta = ReportMeta {
        question: "Benchmark",
        job_id: "01JGZ5Q6C7XW3E2N8R4T9YB0KD",
        ..ReportMeta::default()
    };
    c.bench_function("render_report_only/synthetic_450k_50_sources", |bench| {
        bench.iter(|| render_report(black_box(&meta), black_box(answer.answer), &found));
    });
}

/// Prints the sizes behind a case, so the timings can be read against them.
fn describe(name: &str, json: &str) {
    let response: CompletionResponse = serde_json::from_str(json).expect("completion JSON");
    let answer = strip_think(response.content().unwrap_or_default());
    let found = sources(&response);
    let meta = ReportMeta {
        question: "Benchmark",
        job_id: "01JGZ5Q6C7XW3E2N8R4T9YB0KD",
        ..ReportMeta::default()
    };
    let rendered = render_report(&meta, answer.answer, &found);
    println!(
        "{name}: JSON {} B, report {} B, {} sources, HTML {} B, text {} B, message {} B",
        json.len(),
        answer.answer.len(),
        found.len(),
        rendered.html.len(),
        rendered.text.len(),
        response_to_message(json).len()
    );
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_render(&mut criterion);
    criterion.final_summary();
}
