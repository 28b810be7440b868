//! Snapshot tests of rendered report e-mails.
//!
//! Every response fixture in `tests/fixtures/` (written for these tests) is rendered with a fixed
//! date, boundary and Message-ID and compared with the files committed under `tests/snapshots/`:
//! `<name>.html` (HTML part), `<name>.txt` (text part), `<name>.md` (attachment) and `<name>.eml`
//! (the whole message, byte for byte).
//!
//! The recorded provider responses in `../shared/reference/responses` (beside the workspace) are
//! rendered too when that directory is present. Their text is not ours to copy, so their
//! snapshots in `tests/snapshots/recorded/` hold only a SHA-256 digest and a length of each
//! rendering. Without the directory those checks print `skipped: ../shared not present`.
//!
//! After an intended change in rendering, regenerate the snapshots and review the diff:
//!
//! ```text
//! UPDATE_SNAPSHOTS=1 cargo test -p research-relay --test render_snapshots
//! ```

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use research_relay::email::{Envelope, ReportEmail, compose_report};
use research_relay::provider::CompletionResponse;
use research_relay::report::{
    ReportMeta, render_markdown_attachment, render_report, sources, strip_think,
};
use sha2::{Digest, Sha256};

const JOB_ID: &str = "01JGZ5Q6C7XW3E2N8R4T9YB0KD";
const DATE: i64 = 1_767_225_600;
const BOUNDARY: &str = "snapshot0001";
const MESSAGE_ID: &str = "<snapshot.01JGZ5Q6C7XW3E2N8R4T9YB0KD@example.com>";
const DURATION: Duration = Duration::from_secs(252);

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn snapshots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots")
}

fn recorded_dir() -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/reference/responses"
    ))
    .to_path_buf()
}

fn updating() -> bool {
    std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|value| value == "1")
}

/// The question each fixture answers; recorded responses do not carry theirs.
fn question_for(name: &str) -> &'static str {
    match name {
        "deep_research_fr_stockage" => {
            "Quelles solutions de stockage d'énergie pour les réseaux insulaires en 2025 ?"
        }
        "deep_research_ja_citations_only" => "地方鉄道の存続に向けた取り組みをまとめてください",
        "sonar_pro_de_waermepumpe" => "Lohnt sich eine Wärmepumpe im unsanierten Altbau?",
        _ => "What does this recorded research response report?",
    }
}

struct Rendered {
    html: String,
    text: String,
    markdown: String,
    message: Vec<u8>,
}

/// Renders a response the way the mailer does: strip the think block, take the sources, render
/// both parts and compose the message with fixed values.
fn render(name: &str, json: &str) -> Option<Rendered> {
    let response: CompletionResponse = serde_json::from_str(json)
        .unwrap_or_else(|error| panic!("{name} is not a completion: {error}"));
    let content = response.content()?;
    let answer = strip_think(content);
    if answer.is_empty {
        return None;
    }
    let found = sources(&response);
    let cost = response
        .usage
        .as_ref()
        .and_then(|usage| usage.cost.as_ref())
        .and_then(|cost| cost.total_cost);
    let meta = ReportMeta {
        question: question_for(name),
        job_id: JOB_ID,
        model: response.model.as_deref(),
        duration: Some(DURATION),
        cost_usd: cost,
    };
    let rendered = render_report(&meta, answer.answer, &found);
    let markdown = render_markdown_attachment(answer.answer, &found);
    let email = ReportEmail {
        envelope: Envelope {
            from: "Research Relay <reports@example.com>",
            to: "Zoë Exâmple <zoe@example.org>",
            date_unix_secs: DATE,
            message_id: Some(MESSAGE_ID),
            boundary_token: Some(BOUNDARY),
        },
        question: meta.question,
        job_id: JOB_ID,
        model: meta.model,
        duration: meta.duration,
        cost_usd: meta.cost_usd,
        answer_markdown: answer.answer,
        sources: &found,
    };
    let message = compose_report(&email).unwrap_or_else(|error| panic!("{name}: {error}"));
    Some(Rendered {
        html: rendered.html,
        text: rendered.text,
        markdown,
        message,
    })
}

/// Compares `actual` with the snapshot file, or writes it when updating. Returns a description
/// of the mismatch instead of panicking so that one run reports every stale snapshot.
fn check(path: &Path, actual: &[u8]) -> Option<String> {
    if updating() {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create snapshot directory");
        }
        fs::write(path, actual).expect("write snapshot");
        return None;
    }
    match fs::read(path) {
        Ok(expected) if expected == actual => None,
        Ok(expected) => Some(format!(
            "{} differs ({} bytes expected, {} rendered){}",
            path.display(),
            expected.len(),
            actual.len(),
            first_difference(&expected, actual)
        )),
        Err(_) => Some(format!("{} is missing", path.display())),
    }
}

fn first_difference(expected: &[u8], actual: &[u8]) -> String {
    let line = expected
        .split(|&b| b == b'\n')
        .zip(actual.split(|&b| b == b'\n'))
        .position(|(left, right)| left != right);
    match line {
        Some(index) => format!("; first differing line {}", index + 1),
        None => String::new(),
    }
}

fn digest_line(label: &str, bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut line = format!("{label} len={} sha256=", bytes.len());
    for byte in digest.iter() {
        let _ = write!(line, "{byte:02x}");
    }
    line.push('\n');
    line
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|stem| stem.to_str())
        .expect("file name")
        .to_owned()
}

#[test]
fn fixtures_match_their_snapshots() {
    let fixtures = json_files(&fixtures_dir());
    let mut problems = Vec::new();

    for path in &fixtures {
        let name = stem(path);
        let json = fs::read_to_string(path).expect("read fixture");
        let rendered = render(&name, &json).unwrap_or_else(|| panic!("{name} has no report"));
        let base = snapshots_dir();
        problems.extend(check(
            &base.join(format!("{name}.html")),
            rendered.html.as_bytes(),
        ));
        problems.extend(check(
            &base.join(format!("{name}.txt")),
            rendered.text.as_bytes(),
        ));
        problems.extend(check(
            &base.join(format!("{name}.md")),
            rendered.markdown.as_bytes(),
        ));
        problems.extend(check(&base.join(format!("{name}.eml")), &rendered.message));
    }

    assert!(fixtures.len() >= 3, "expected the committed fixtures");
    assert!(
        problems.is_empty(),
        "stale snapshots (rerun with UPDATE_SNAPSHOTS=1 after reviewing the change):\n{}",
        problems.join("\n")
    );
}

#[test]
fn recorded_responses_match_their_digests() {
    let dir = recorded_dir();
    if !dir.is_dir() {
        println!("skipped: ../shared not present ({})", dir.display());
        return;
    }
    let mut problems = Vec::new();
    let mut rendered_count = 0;

    for path in json_files(&dir) {
        let name = stem(&path);
        let json = fs::read_to_string(&path).expect("read recorded response");
        let has_choices = serde_json::from_str::<serde_json::Value>(&json)
            .ok()
            .and_then(|value| {
                value
                    .get("choices")
                    .and_then(|c| c.as_array())
                    .map(|c| !c.is_empty())
            })
            .unwrap_or(false);
        if !has_choices {
            println!("skipped: {name} (no choices)");
            continue;
        }
        let Some(rendered) = render(&name, &json) else {
            println!("skipped: {name} (empty answer)");
            continue;
        };
        rendered_count += 1;
        let mut digests = String::new();
        digests.push_str(&digest_line("html", rendered.html.as_bytes()));
        digests.push_str(&digest_line("text", rendered.text.as_bytes()));
        digests.push_str(&digest_line("markdown", rendered.markdown.as_bytes()));
        digests.push_str(&digest_line("message", &rendered.message));
        let path = snapshots_dir()
            .join("recorded")
            .join(format!("{name}.sha256"));
        problems.extend(check(&path, digests.as_bytes()));
    }

    assert!(
        rendered_count > 0,
        "no recorded response with choices in {}",
        dir.display()
    );
    assert!(
        problems.is_empty(),
        "stale digests (rerun with UPDATE_SNAPSHOTS=1 after reviewing the change):\n{}",
        problems.join("\n")
    );
}

#[test]
fn recorded_deep_research_renders_every_cited_marker_as_a_link() {
    let path = recorded_dir().join("deep_research_medium_pharmasage.json");
    if !path.is_file() {
        println!("skipped: ../shared not present ({})", path.display());
        return;
    }
    let json = fs::read_to_string(&path).expect("read recorded response");
    let response: CompletionResponse = serde_json::from_str(&json).expect("completion");

    let answer = strip_think(response.content().expect("content"));
    let found = sources(&response);
    let meta = ReportMeta {
        question: "Recorded deep research",
        job_id: JOB_ID,
        ..ReportMeta::default()
    };
    let rendered = render_report(&meta, answer.answer, &found);

    assert!(answer.think_removed);
    assert!(!answer.answer.contains("<think>"));
    assert_eq!(found.len(), 20);
    for source in &found {
        let cited = answer.answer.contains(&format!("[{}]", source.number));
        let linked = rendered.html.contains(&format!(
            "<sup><a href=\"{}\">[{}]</a></sup>",
            source.url.replace('&', "&amp;"),
            source.number
        ));
        assert_eq!(cited, linked, "marker {}", source.number);
    }
    assert!(!rendered.html.contains("<think>"));
    assert!(rendered.text.contains("\nSources\n-------\n[1] "));
}
