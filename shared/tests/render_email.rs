//! E-mail composition: subjects, RFC 5322 / MIME wire format, and decoding the messages back
//! with an independent parser (`mail-parser`) to check what a mail client would show.

use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders};
use research_relay::email::{
    ComposeError, Envelope, ExpiredEmail, FailureEmail, ReportEmail, SUBJECT_QUESTION_CHARS,
    compose_expired, compose_failure, compose_report, expired_subject, failure_subject,
    format_date, shorten_question, subject_for,
};
use research_relay::report::Source;

const JOB_ID: &str = "01JGZ5Q6C7XW3E2N8R4T9YB0KD";
const NEW_YEAR_2026: i64 = 1_767_225_600;

fn envelope() -> Envelope<'static> {
    Envelope {
        from: "Research Relay <reports@example.com>",
        to: "Zoë Exâmple <zoe@example.org>",
        date_unix_secs: NEW_YEAR_2026,
        message_id: None,
        boundary_token: Some("test0001"),
    }
}

fn sources() -> Vec<Source> {
    vec![
        Source {
            number: 1,
            title: Some("Étude de cas : les Açores".into()),
            url: "https://example.org/acores".into(),
            date: Some("2023-06-30".into()),
        },
        Source {
            number: 2,
            title: None,
            url: "https://example.org/two".into(),
            date: None,
        },
    ]
}

fn report_email<'a>(markdown: &'a str, sources: &'a [Source]) -> ReportEmail<'a> {
    ReportEmail {
        envelope: envelope(),
        question: "Quelles solutions de stockage pour les îles ? 🔋",
        job_id: JOB_ID,
        model: Some("sonar-deep-research"),
        duration: Some(Duration::from_secs(252)),
        cost_usd: Some(0.41521),
        answer_markdown: markdown,
        sources,
    }
}

/// Checks the rules every message must follow on the wire and returns its lines.
fn assert_wire_format(message: &[u8]) -> Vec<&[u8]> {
    assert!(
        message.is_ascii(),
        "the whole message (headers and base64 bodies) is ASCII"
    );
    assert!(message.ends_with(b"\r\n"), "the message ends with CRLF");
    let body = &message[..message.len() - 2];
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    for (number, line) in lines.iter().enumerate() {
        let is_last = number == lines.len() - 1;
        let content = if is_last {
            line
        } else {
            line.strip_suffix(b"\r")
                .unwrap_or_else(|| panic!("line {number} does not end in CRLF"))
        };
        assert!(!content.contains(&b'\r'), "bare CR in line {number}");
        assert!(
            content.len() <= 998,
            "line {number} has {} octets",
            content.len()
        );
    }
    let header_end = lines
        .iter()
        .position(|line| line.is_empty() || *line == b"\r")
        .expect("a blank line ends the header");
    for line in &lines[..header_end] {
        let text = std::str::from_utf8(line).expect("ASCII header");
        let text = text.trim_end_matches('\r');
        if text.contains("=?") {
            assert!(text.len() <= 76, "encoded-word line too long: {text}");
            for word in text.split(' ').filter(|word| word.starts_with("=?")) {
                assert!(word.len() <= 75, "encoded word too long: {word}");
            }
        }
    }
    lines
}

fn header_block(message: &[u8]) -> String {
    let text = String::from_utf8(message.to_vec()).expect("ASCII message");
    let end = text.find("\r\n\r\n").expect("header end");
    text[..end + 2].to_owned()
}

fn crlf_to_lf(text: &str) -> String {
    text.replace("\r\n", "\n")
}

#[test]
fn subject_keeps_short_questions_and_collapses_whitespace() {
    let question = "  What is\n the\tstate of   solid-state batteries?  ";

    let subject = subject_for(question);

    assert_eq!(
        subject,
        "Research report: What is the state of solid-state batteries?"
    );
}

#[test]
fn subject_cuts_long_questions_at_a_word_boundary() {
    let question = "Compare the total cost of ownership of lithium iron phosphate batteries, \
        pumped hydro storage and green hydrogen for island grids between 2025 and 2035";

    let subject = subject_for(question);

    let short = subject.strip_prefix("Research report: ").expect("prefix");
    assert_eq!(
        short,
        "Compare the total cost of ownership of lithium iron phosphate batteries, pumped…"
    );
    assert!(short.chars().count() <= SUBJECT_QUESTION_CHARS);
}

#[test]
fn subject_cuts_accented_text_between_characters() {
    let question = "Quelles sont les évolutions réglementaires européennes prévues pour \
        l'étiquetage énergétique des bâtiments résidentiels après 2027 ?";

    let short = shorten_question(question, SUBJECT_QUESTION_CHARS);

    assert!(short.chars().count() <= SUBJECT_QUESTION_CHARS);
    assert_eq!(
        short,
        "Quelles sont les évolutions réglementaires européennes prévues pour…"
    );
}

#[test]
fn subject_cuts_cjk_text_without_spaces_by_characters() {
    let question = "日本の地方鉄道における上下分離方式の導入事例と、その財政的な効果および利用者数の変化について、\
        過去十年間のデータを用いて詳しく分析し、今後の課題と政策提言をまとめてください。さらに海外の事例とも比較してください。";

    let short = shorten_question(question, SUBJECT_QUESTION_CHARS);

    assert_eq!(short.chars().count(), SUBJECT_QUESTION_CHARS);
    assert!(short.ends_with('…'));
    assert!(question.starts_with(short.trim_end_matches('…')));
}

#[test]
fn subject_never_splits_an_emoji_sequence() {
    let family = "👩\u{200D}👩\u{200D}👧\u{200D}👦";
    let question = format!("{}{family}{family} and more", "x".repeat(77));

    let short = shorten_question(&question, SUBJECT_QUESTION_CHARS);

    assert_eq!(short, format!("{}…", "x".repeat(77)));
    let thumbs = format!("{}👍🏽 tail words here", "y".repeat(78));
    assert_eq!(
        shorten_question(&thumbs, SUBJECT_QUESTION_CHARS),
        format!("{}…", "y".repeat(78))
    );
}

#[test]
fn failure_and_expired_subjects_use_their_own_prefix() {
    let question = "Why?";

    let failed = failure_subject(question);
    let expired = expired_subject(question);

    assert_eq!(failed, "Research failed: Why?");
    assert_eq!(expired, "Research expired: Why?");
    assert_eq!(subject_for(" \n "), "Research report");
}

#[test]
fn dates_are_rfc_5322_in_utc() {
    let cases = [
        (0, "Thu, 01 Jan 1970 00:00:00 +0000"),
        (NEW_YEAR_2026, "Thu, 01 Jan 2026 00:00:00 +0000"),
        (951_782_400, "Tue, 29 Feb 2000 00:00:00 +0000"),
        (1_796_400_045, "Fri, 04 Dec 2026 16:00:45 +0000"),
        (4_102_444_799, "Thu, 31 Dec 2099 23:59:59 +0000"),
        (-5, "Thu, 01 Jan 1970 00:00:00 +0000"),
    ];

    for (secs, expected) in cases {
        assert_eq!(format_date(secs), expected, "{secs}");
    }
}

#[test]
fn report_message_has_the_expected_headers() {
    let sources = sources();
    let email = report_email("# Rapport\n\nLes batteries dominent [1].", &sources);

    let message = compose_report(&email).expect("composes");

    assert_wire_format(&message);
    let headers = header_block(&message);
    assert!(headers.starts_with("Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"));
    assert!(headers.contains("\r\nFrom: Research Relay <reports@example.com>\r\n"));
    assert!(headers.contains("\r\nTo: =?UTF-8?B?"));
    assert!(headers.contains("?= <zoe@example.org>\r\n"));
    assert!(headers.contains("\r\nSubject: =?UTF-8?B?"));
    assert!(headers.contains(&format!(
        "\r\nMessage-ID: <report.{JOB_ID}@example.com>\r\n"
    )));
    assert!(headers.contains("\r\nMIME-Version: 1.0\r\n"));
    assert!(headers.contains(&format!("\r\nX-Research-Relay-Job: {JOB_ID}\r\n")));
    assert!(
        headers
            .contains("\r\nContent-Type: multipart/mixed;\r\n boundary=\"=_rr_mix_test0001\"\r\n")
    );
}

#[test]
fn report_message_decodes_to_text_html_and_attachment() {
    let sources = sources();
    let markdown =
        "# Rapport\n\nLes batteries dominent [1]. Voir aussi [2].\n\n<script>alert(1)</script>\n";
    let email = report_email(markdown, &sources);

    let message = compose_report(&email).expect("composes");
    let parsed = MessageParser::default().parse(&message).expect("parses");

    assert_eq!(
        parsed.subject(),
        Some("Research report: Quelles solutions de stockage pour les îles ? 🔋")
    );
    let from = parsed.from().and_then(|from| from.first()).expect("from");
    assert_eq!(from.name(), Some("Research Relay"));
    assert_eq!(from.address(), Some("reports@example.com"));
    let to = parsed.to().and_then(|to| to.first()).expect("to");
    assert_eq!(to.name(), Some("Zoë Exâmple"));
    assert_eq!(to.address(), Some("zoe@example.org"));
    assert_eq!(
        parsed.date().map(|date| date.to_timestamp()),
        Some(NEW_YEAR_2026)
    );
    assert_eq!(
        parsed.message_id(),
        Some(format!("report.{JOB_ID}@example.com").as_str())
    );
    assert_eq!(
        parsed
            .header("X-Research-Relay-Job")
            .and_then(|value| value.as_text()),
        Some(JOB_ID)
    );

    let text = crlf_to_lf(&parsed.body_text(0).expect("text part"));
    assert!(text.starts_with("Quelles solutions de stockage pour les îles ? 🔋\n"));
    assert!(text.contains("Les batteries dominent [1]. Voir aussi [2]."));
    assert!(
        text.contains(
            "[1] Étude de cas : les Açores (2023-06-30)\n    https://example.org/acores\n"
        )
    );
    assert!(text.contains("[2] https://example.org/two\n"));
    assert!(text.contains("Cost: $0.42"));

    let html = parsed.body_html(0).expect("html part");
    assert!(html.contains(r#"<sup><a href="https://example.org/acores">[1]</a></sup>"#));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains("<script"));
    assert!(html.contains("Étude de cas : les Açores</a>"));

    assert_eq!(parsed.attachment_count(), 1);
    let attachment = parsed.attachment(0).expect("attachment");
    assert_eq!(
        attachment.attachment_name(),
        Some(format!("report-{JOB_ID}.md").as_str())
    );
    let content_type = attachment.content_type().expect("content type");
    assert_eq!(content_type.ctype(), "text");
    assert_eq!(content_type.subtype(), Some("markdown"));
    let attached = crlf_to_lf(std::str::from_utf8(attachment.contents()).expect("utf-8"));
    assert!(attached.starts_with(markdown.trim_end()));
    assert!(attached.contains("## Sources\n\n- [1] [Étude de cas : les Açores](<https://example.org/acores>) (2023-06-30)\n"));
}

#[test]
fn report_message_parts_are_in_the_expected_order() {
    let sources = sources();
    let email = report_email("Body [1]", &sources);

    let message = String::from_utf8(compose_report(&email).expect("composes")).expect("ASCII");

    let positions: Vec<usize> = [
        "Content-Type: multipart/mixed;",
        "--=_rr_mix_test0001\r\nContent-Type: multipart/alternative;",
        "--=_rr_alt_test0001\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        "--=_rr_alt_test0001\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        "--=_rr_alt_test0001--\r\n",
        "--=_rr_mix_test0001\r\nContent-Type: text/markdown; charset=utf-8; name=\"report-01JGZ5Q6C7XW3E2N8R4T9YB0KD.md\"\r\nContent-Disposition: attachment;",
        "--=_rr_mix_test0001--\r\n",
    ]
    .iter()
    .map(|needle| message.find(needle).unwrap_or_else(|| panic!("missing {needle}")))
    .collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{positions:?}"
    );
    assert!(message.ends_with("--=_rr_mix_test0001--\r\n"));
}

#[test]
fn boundaries_occur_only_on_boundary_lines() {
    let sources = sources();
    let tricky = "--=_rr_alt_test0001\n=_rr_mix_test0001 appears in the report text itself.\n";
    let email = report_email(tricky, &sources);

    let message = String::from_utf8(compose_report(&email).expect("composes")).expect("ASCII");

    for boundary in ["=_rr_alt_test0001", "=_rr_mix_test0001"] {
        for line in message.split("\r\n").filter(|line| line.contains(boundary)) {
            let is_delimiter = line == format!("--{boundary}") || line == format!("--{boundary}--");
            let is_parameter = line == format!(" boundary=\"{boundary}\"");
            assert!(
                is_delimiter || is_parameter,
                "boundary inside content: {line}"
            );
        }
    }
}

#[test]
fn base64_lines_are_76_characters() {
    let sources = sources();
    let markdown = "Long paragraph. ".repeat(400);
    let email = report_email(&markdown, &sources);

    let message = compose_report(&email).expect("composes");
    let lines = assert_wire_format(&message);

    let base64_lines: Vec<&[u8]> = lines
        .iter()
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| {
            line.len() > 40
                && line
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(b))
        })
        .collect();
    assert!(base64_lines.len() > 100);
    assert!(base64_lines.iter().all(|line| line.len() <= 76));
    assert!(base64_lines.iter().filter(|line| line.len() == 76).count() > 100);
}

#[test]
fn ascii_subjects_are_folded_and_long_words_encoded() {
    let sources = sources();
    let mut email = report_email("Body", &sources);
    email.question = "How do municipal utilities in mid-sized European cities finance district heating networks today";

    let message = compose_report(&email).expect("composes");

    assert_wire_format(&message);
    let headers = header_block(&message);
    let subject_start = headers.find("Subject: ").expect("subject");
    let subject_lines: Vec<&str> = headers[subject_start..]
        .split("\r\n")
        .take_while(|line| line.starts_with("Subject") || line.starts_with(' '))
        .collect();
    assert!(subject_lines.len() >= 2, "{subject_lines:?}");
    assert!(subject_lines.iter().all(|line| line.len() <= 78));
    let parsed = MessageParser::default().parse(&message).expect("parses");
    assert_eq!(parsed.subject(), Some(subject_for(email.question).as_str()));

    let one_long_word = "a".repeat(200);
    email.question = &one_long_word;
    let message = compose_report(&email).expect("composes");
    assert_wire_format(&message);
    let parsed = MessageParser::default().parse(&message).expect("parses");
    assert_eq!(parsed.subject(), Some(subject_for(email.question).as_str()));
}

#[test]
fn non_ascii_subjects_roundtrip_in_many_scripts() {
    let sources = sources();
    let questions = [
        "Quelles sont les évolutions réglementaires européennes prévues pour l'étiquetage énergétique ?",
        "日本の地方鉄道における上下分離方式の導入事例と、その財政的な効果および利用者数の変化について詳しく分析してください",
        "Как изменились цены на электроэнергию в странах Балтии после отключения от энергосистемы БРЭЛЛ?",
        "What do 👩\u{200D}👩\u{200D}👧\u{200D}👦 families 🏡 spend on energy 🔋⚡ in 2025? 👍🏽👍🏽👍🏽👍🏽👍🏽👍🏽👍🏽👍🏽",
        "Subject that looks like =?UTF-8?B?SGk=?= an encoded word",
    ];

    for question in questions {
        let mut email = report_email("Body", &sources);
        email.question = question;

        let message = compose_report(&email).expect("composes");

        assert_wire_format(&message);
        let parsed = MessageParser::default().parse(&message).expect("parses");
        assert_eq!(
            parsed.subject(),
            Some(subject_for(question).as_str()),
            "{question}"
        );
    }
}

#[test]
fn display_names_are_quoted_or_encoded() {
    let sources = sources();
    let cases = [
        (
            "Relay, Inc. <a@example.com>",
            "\"Relay, Inc.\" <a@example.com>",
            "Relay, Inc.",
        ),
        (
            "\"Quoted \\\"Name\\\"\" <a@example.com>",
            "\"Quoted \\\"Name\\\"\" <a@example.com>",
            "Quoted \"Name\"",
        ),
        (
            "Zoë <a@example.com>",
            "=?UTF-8?B?Wm/Dqw==?= <a@example.com>",
            "Zoë",
        ),
        ("a@example.com", "a@example.com", ""),
    ];

    for (from, header, name) in cases {
        let mut email = report_email("Body", &sources);
        email.envelope.from = from;

        let message = compose_report(&email).expect("composes");

        assert!(
            header_block(&message).contains(&format!("\r\nFrom: {header}\r\n")),
            "{from}"
        );
        let parsed = MessageParser::default().parse(&message).expect("parses");
        let parsed_from = parsed.from().and_then(|from| from.first()).expect("from");
        assert_eq!(parsed_from.name().unwrap_or_default(), name);
        assert_eq!(parsed_from.address(), Some("a@example.com"));
    }
}

#[test]
fn header_injection_and_bad_inputs_are_refused() {
    let sources = sources();
    let bad_addresses = [
        "reports@example.com\r\nBcc: victim@example.net",
        "Name <reports@example.com>\r\nBcc: victim@example.net",
        "no-at-sign",
        "zoë@example.org",
        "a b@example.org",
        "",
    ];

    for address in bad_addresses {
        let mut email = report_email("Body", &sources);
        email.envelope.to = address;

        let result = compose_report(&email);

        assert_eq!(
            result,
            Err(ComposeError::InvalidAddress { field: "to" }),
            "{address:?}"
        );
    }
    let mut email = report_email("Body", &sources);
    email.job_id = "job\r\nBcc: x@example.net";
    assert_eq!(compose_report(&email), Err(ComposeError::InvalidJobId));
    email.job_id = "../../etc/passwd";
    assert_eq!(compose_report(&email), Err(ComposeError::InvalidJobId));
    let mut email = report_email("Body", &sources);
    email.envelope.message_id = Some("no-at-sign");
    assert_eq!(compose_report(&email), Err(ComposeError::InvalidMessageId));
}

#[test]
fn display_name_line_breaks_are_flattened() {
    let sources = sources();
    let mut email = report_email("Body", &sources);
    email.envelope.from = "Relay\r\nBcc: victim@example.net <reports@example.com>";

    let message = compose_report(&email).expect("composes");

    let headers = header_block(&message);
    assert!(!headers.contains("\r\nBcc:"));
    assert_wire_format(&message);
}

#[test]
fn empty_report_is_refused() {
    let sources = sources();
    let email = report_email(" \n\t", &sources);

    let result = compose_report(&email);

    assert_eq!(result, Err(ComposeError::EmptyReport));
}

#[test]
fn given_message_id_is_used_and_random_boundaries_differ() {
    let sources = sources();
    let mut email = report_email("Body", &sources);
    email.envelope.message_id = Some("<fixed.1@mail.example.com>");
    email.envelope.boundary_token = None;

    let first = compose_report(&email).expect("composes");
    let second = compose_report(&email).expect("composes");

    assert!(header_block(&first).contains("\r\nMessage-ID: <fixed.1@mail.example.com>\r\n"));
    assert_ne!(first, second);
    assert_wire_format(&first);
    let parsed = MessageParser::default().parse(&first).expect("parses");
    assert!(
        parsed
            .body_text(0)
            .is_some_and(|text| text.contains("Body"))
    );
}

#[test]
fn same_inputs_give_the_same_bytes() {
    let sources = sources();
    let email = report_email("Body [1]", &sources);

    let first = compose_report(&email).expect("composes");
    let second = compose_report(&email).expect("composes");

    assert_eq!(first, second);
}

#[test]
fn failure_message_carries_reason_and_job_id() {
    let email = FailureEmail {
        envelope: envelope(),
        question: "Quelles solutions pour les îles ?",
        job_id: JOB_ID,
        reason: Some("Model <overloaded> & \"timed out\" after 30 minutes"),
    };

    let message = compose_failure(&email).expect("composes");

    assert_wire_format(&message);
    let headers = header_block(&message);
    assert!(headers.contains(
        "\r\nContent-Type: multipart/alternative;\r\n boundary=\"=_rr_alt_test0001\"\r\n"
    ));
    assert!(headers.contains(&format!(
        "\r\nMessage-ID: <failed.{JOB_ID}@example.com>\r\n"
    )));
    assert!(!headers.contains("multipart/mixed"));
    let parsed = MessageParser::default().parse(&message).expect("parses");
    assert_eq!(
        parsed.subject(),
        Some("Research failed: Quelles solutions pour les îles ?")
    );
    assert_eq!(parsed.attachment_count(), 0);
    let text = parsed.body_text(0).expect("text");
    assert!(text.contains("Model <overloaded> & \"timed out\" after 30 minutes"));
    assert!(text.contains(JOB_ID));
    let html = parsed.body_html(0).expect("html");
    assert!(html.contains("Model &lt;overloaded&gt; &amp; &quot;timed out&quot; after 30 minutes"));
    assert!(html.contains(JOB_ID));
}

#[test]
fn failure_message_without_reason_says_so() {
    let email = FailureEmail {
        envelope: envelope(),
        question: "Q",
        job_id: JOB_ID,
        reason: Some("   "),
    };

    let message = compose_failure(&email).expect("composes");

    let parsed = MessageParser::default().parse(&message).expect("parses");
    assert!(
        parsed
            .body_text(0)
            .is_some_and(|text| text.contains("The provider gave no reason."))
    );
}

#[test]
fn expired_message_explains_the_retention() {
    let email = ExpiredEmail {
        envelope: envelope(),
        question: "Quelles solutions pour les îles ?",
        job_id: JOB_ID,
    };

    let message = compose_expired(&email).expect("composes");

    assert_wire_format(&message);
    let parsed = MessageParser::default().parse(&message).expect("parses");
    assert_eq!(
        parsed.subject(),
        Some("Research expired: Quelles solutions pour les îles ?")
    );
    assert_eq!(
        parsed.message_id(),
        Some(format!("expired.{JOB_ID}@example.com").as_str())
    );
    assert_eq!(parsed.attachment_count(), 0);
    let text = parsed.body_text(0).expect("text");
    assert!(text.contains("7 days"));
    assert!(text.contains(JOB_ID));
    assert!(
        parsed
            .body_html(0)
            .is_some_and(|html| html.contains("7 days"))
    );
}

/// A report like the one in C15: about 450 KB of Markdown citing 50 sources, with headings,
/// tables, lists and non-ASCII text, and one line far longer than 998 octets.
fn large_report() -> (String, Vec<Source>) {
    let sources: Vec<Source> = (1..=50)
        .map(|number| Source {
            number,
            title: Some(format!("Quelle Nr. {number} – Überblick")),
            url: format!("https://example.org/quelle/{number}"),
            date: Some("2025-03-01".into()),
        })
        .collect();
    let mut markdown = String::with_capacity(460_000);
    markdown.push_str("# Großer Bericht\n\n");
    markdown.push_str(&"Eine sehr lange Zeile ohne Umbruch ".repeat(60));
    markdown.push_str("[50]\n\n");
    let mut section = 0;
    while markdown.len() < 450_000 {
        section += 1;
        let a = section % 50 + 1;
        let b = (section * 7) % 50 + 1;
        markdown.push_str(&format!(
            "## Abschnitt {section}: Ergebnisse\n\n\
             Die Messungen zeigen einen Anstieg um {section} % gegenüber dem Vorjahr[{a}][{b}]. \
             Größere Anlagen profitieren stärker, während kleine Betriebe Förderung benötigen[{b}].\n\n\
             | Kennzahl | Wert | Quelle |\n|---|--:|---|\n| Leistung | {section} kW | [{a}] |\n\
             | Kosten | {} € | [{b}] |\n\n\
             - Punkt eins mit `Code [{a}]`\n- Punkt zwei mit *Betonung*[{a}]\n\n",
            section * 13
        ));
    }
    (markdown, sources)
}

#[test]
fn c15_large_report_with_50_sources_renders_within_line_limits() {
    let (markdown, sources) = large_report();
    let email = report_email(&markdown, &sources);

    let message = compose_report(&email).expect("composes");

    assert!(markdown.len() >= 450_000);
    assert_wire_format(&message);
    let parsed = MessageParser::default().parse(&message).expect("parses");
    let html = parsed.body_html(0).expect("html");
    for source in &sources {
        let marker = format!(
            r#"<sup><a href="{}">[{}]</a></sup>"#,
            source.url, source.number
        );
        assert!(
            html.contains(&marker),
            "marker {} not linked",
            source.number
        );
    }
    assert!(html.contains("Quelle Nr. 50 – Überblick</a>"));
    let text = crlf_to_lf(&parsed.body_text(0).expect("text"));
    assert!(text.contains(
        "[50] Quelle Nr. 50 – Überblick (2025-03-01)\n    https://example.org/quelle/50\n"
    ));
    let last_section = markdown
        .rfind("## Abschnitt ")
        .map(|start| &markdown[start + 3..start + 20])
        .expect("a section");
    assert!(text.contains(last_section));
    let attached = crlf_to_lf(
        std::str::from_utf8(parsed.attachment(0).expect("attachment").contents()).expect("utf-8"),
    );
    assert!(attached.starts_with(markdown.trim_end()));
}
