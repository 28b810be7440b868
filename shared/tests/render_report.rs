//! Report rendering: think-block removal (C19), sources (C20), Markdown to HTML and plain text.

use research_relay::provider::{CompletionResponse, SearchResult};
use research_relay::report::{
    ReportMeta, Source, format_cost, format_duration, is_web_url, render_html_body,
    render_html_document, render_markdown_attachment, render_report, render_text_body, sources,
    sources_from, strip_think,
};

fn source(number: usize, url: &str) -> Source {
    Source {
        number,
        title: Some(format!("Source {number}")),
        url: url.to_owned(),
        date: None,
    }
}

fn three_sources() -> Vec<Source> {
    vec![
        source(1, "https://example.org/one"),
        source(2, "https://example.org/two?a=1&b=2"),
        source(3, "http://example.org/three"),
    ]
}

#[test]
fn c19_leading_think_block_is_removed() {
    let content = "<think>\nPlanning searches...\n</think>\n\n# Report\nFindings [1]";

    let stripped = strip_think(content);

    assert_eq!(stripped.answer, "# Report\nFindings [1]");
    assert!(stripped.think_removed);
    assert!(!stripped.is_empty);
    assert_eq!(stripped.reasoning, Some("\nPlanning searches...\n"));
}

#[test]
fn c19_only_think_block_is_flagged_empty() {
    let content = "<think>\nPlanning searches...\nNothing found.\n</think>\n\n  \n";

    let stripped = strip_think(content);

    assert_eq!(stripped.answer, "");
    assert!(stripped.think_removed);
    assert!(stripped.is_empty);
}

#[test]
fn unclosed_think_block_means_everything_is_reasoning() {
    let content = "<think>\nStill planning when the job was cut off. # Report [1]";

    let stripped = strip_think(content);

    assert_eq!(stripped.answer, "");
    assert!(stripped.think_removed);
    assert!(stripped.is_empty);
    assert_eq!(
        stripped.reasoning,
        Some("\nStill planning when the job was cut off. # Report [1]")
    );
}

#[test]
fn think_block_after_leading_whitespace_is_removed() {
    let content = "\n  \t<think>plan</think>\nAnswer";

    let stripped = strip_think(content);

    assert_eq!(stripped.answer, "Answer");
    assert!(stripped.think_removed);
}

#[test]
fn literal_think_tag_later_in_the_report_is_kept() {
    let content = "# Report\nModels wrap reasoning in `<think>` tags.\n<think>not ours</think>";

    let stripped = strip_think(content);

    assert_eq!(stripped.answer, content);
    assert!(!stripped.think_removed);
    assert!(!stripped.is_empty);
    assert_eq!(stripped.reasoning, None);
}

#[test]
fn think_tag_later_in_the_answer_after_a_leading_block_is_kept() {
    let content = "<think>a</think>\n\nThe `<think>` tag and </think> are shown.";

    let stripped = strip_think(content);

    assert_eq!(stripped.answer, "The `<think>` tag and </think> are shown.");
}

#[test]
fn indentation_of_the_first_report_line_is_kept() {
    let content = "<think>x</think>\n\n    indented code\n";

    let stripped = strip_think(content);

    assert_eq!(stripped.answer, "    indented code");
}

#[test]
fn content_without_think_block_is_unchanged_and_blank_content_is_empty() {
    let plain = strip_think("Just an answer [1]");
    let blank = strip_think(" \n\t ");

    assert_eq!(plain.answer, "Just an answer [1]");
    assert!(!plain.think_removed && !plain.is_empty);
    assert!(blank.is_empty && !blank.think_removed);
}

#[test]
fn c20_sources_from_search_results_without_citations() {
    let json = r#"{"choices":[{"message":{"content":"Findings [1] and [2]"}}],
        "search_results":[
            {"title":"First page","url":"https://example.org/1","date":null},
            {"title":"Second page","url":"https://example.org/2","date":null}]}"#;
    let response: CompletionResponse = serde_json::from_str(json).expect("response parses");

    let found = sources(&response);
    let html = render_html_body(response.content().unwrap_or_default(), &found);

    assert_eq!(
        found,
        vec![
            Source {
                number: 1,
                title: Some("First page".into()),
                url: "https://example.org/1".into(),
                date: None,
            },
            Source {
                number: 2,
                title: Some("Second page".into()),
                url: "https://example.org/2".into(),
                date: None,
            },
        ]
    );
    assert!(html.contains(r#"<sup><a href="https://example.org/1">[1]</a></sup>"#));
    assert!(html.contains(r#"<sup><a href="https://example.org/2">[2]</a></sup>"#));
}

#[test]
fn c20_sources_from_citations_only() {
    let json = r#"{"choices":[{"message":{"content":"Findings [2]"}}],
        "citations":["https://example.org/a","https://example.org/b"]}"#;
    let response: CompletionResponse = serde_json::from_str(json).expect("response parses");

    let found = sources(&response);
    let html = render_html_body(response.content().unwrap_or_default(), &found);

    assert_eq!(found.len(), 2);
    assert_eq!(found[1].number, 2);
    assert_eq!(found[1].url, "https://example.org/b");
    assert_eq!(found[1].title, None);
    assert_eq!(found[1].label(), "https://example.org/b");
    assert!(html.contains(r#"<sup><a href="https://example.org/b">[2]</a></sup>"#));
}

#[test]
fn sources_skip_entries_without_url_but_keep_numbering() {
    let results = vec![
        SearchResult {
            title: Some("One".into()),
            url: "https://example.org/1".into(),
            date: Some("2024-01-02".into()),
        },
        SearchResult {
            title: Some("No address".into()),
            url: "  ".into(),
            date: None,
        },
        SearchResult {
            title: Some("  ".into()),
            url: "https://example.org/3".into(),
            date: Some(String::new()),
        },
    ];

    let found = sources_from(Some(&results), None);
    let html = render_html_body("a [1] b [2] c [3]", &found);

    assert_eq!(
        found.iter().map(|s| s.number).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(found[1].title, None);
    assert_eq!(found[1].date, None);
    assert!(html.contains(r#"<sup><a href="https://example.org/3">[3]</a></sup>"#));
    assert!(html.contains(" b [2] c "));
}

#[test]
fn search_results_without_any_url_fall_back_to_citations() {
    let results = vec![SearchResult {
        title: Some("Untitled".into()),
        url: String::new(),
        date: None,
    }];
    let citations = vec!["https://example.org/c".to_owned()];

    let found = sources_from(Some(&results), Some(&citations));

    assert_eq!(
        found,
        vec![Source {
            number: 1,
            title: None,
            url: "https://example.org/c".into(),
            date: None,
        }]
    );
}

#[test]
fn missing_source_lists_give_no_sources() {
    let response = CompletionResponse::default();

    let found = sources(&response);

    assert!(found.is_empty());
}

#[test]
fn markers_link_to_the_nth_source_and_adjacent_markers_each_link() {
    let sources = three_sources();

    let html = render_html_body("Claim [1][3] and [2].", &sources);

    assert!(html.contains(
        r#"<sup><a href="https://example.org/one">[1]</a></sup><sup><a href="http://example.org/three">[3]</a></sup>"#
    ));
    assert!(html.contains(r#"<sup><a href="https://example.org/two?a=1&amp;b=2">[2]</a></sup>"#));
}

#[test]
fn out_of_range_and_zero_markers_stay_text() {
    let sources = three_sources();

    let html = render_html_body("See [4], [0], [12345] and [] and [x].", &sources);

    assert!(html.contains("See [4], [0], [12345] and [] and [x]."));
    assert!(!html.contains("<sup>"));
}

#[test]
fn markers_in_code_and_link_text_are_not_linked() {
    let sources = three_sources();
    let markdown = "Inline `x[1]` here.\n\n```\nlet a = b[2];\n```\n\n\
        [see [3]](https://example.org/page) and ![chart [1]](https://example.org/c.png)\n";

    let html = render_html_body(markdown, &sources);

    assert!(html.contains("x[1]</code>"));
    assert!(html.contains("let a = b[2];"));
    assert!(html.contains(r#"<a href="https://example.org/page">see [3]</a>"#));
    assert!(html.contains(r#"<a href="https://example.org/c.png">chart [1]</a>"#));
    assert!(!html.contains("<sup>"));
    assert!(!html.contains("<img"));
}

#[test]
fn markers_pointing_at_non_web_sources_stay_text() {
    let sources = vec![
        source(1, "javascript:alert(1)"),
        source(2, "ftp://example.org/f"),
    ];

    let html = render_html_body("A [1] B [2]", &sources);

    assert!(html.contains("A [1] B [2]"));
    assert!(!html.contains("javascript:"));
    assert!(!html.contains("href"));
}

#[test]
fn raw_html_in_the_report_is_escaped() {
    let markdown = "<script>alert('x')</script>\n\nText <img src=x onerror=alert(1)> more\n\n\
        <div onclick=\"steal()\">block</div>\n";

    let html = render_html_body(markdown, &[]);

    assert!(!html.contains("<script"));
    assert!(!html.contains("<img"));
    assert!(!html.contains("<div"));
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(html.contains("&lt;div onclick=&quot;steal()&quot;&gt;block&lt;/div&gt;"));
}

#[test]
fn only_web_links_become_anchors() {
    let markdown = "[a](javascript:alert(1)) [b](data:text/html,x) [c](/relative) \
        [d](mailto:x@example.org) [e](HTTPS://example.org/E) <https://example.org/auto>";

    let html = render_html_body(markdown, &[]);

    assert!(!html.contains("javascript:"));
    assert!(!html.contains("data:"));
    assert!(!html.contains("/relative"));
    assert!(!html.contains("mailto:"));
    assert!(html.contains(r#"<a href="HTTPS://example.org/E">e</a>"#));
    assert!(html.contains(r#"<a href="https://example.org/auto">https://example.org/auto</a>"#));
    assert_eq!(html.matches("<a ").count(), 2);
}

#[test]
fn attribute_breaking_characters_in_urls_are_encoded() {
    let sources = vec![source(1, "https://example.org/a\"onmouseover=\"x y<z>")];

    let html = render_html_body("[1]", &sources);

    assert!(html.contains(r#"href="https://example.org/a%22onmouseover=%22x%20y%3Cz%3E""#));
}

#[test]
fn tables_lists_and_strikethrough_render() {
    let markdown = "| Name | Value |\n|:--|--:|\n| a [1] | ~~old~~ new<br>line |\n\n\
        3. third\n4. fourth\n   - nested\n";

    let html = render_html_body(markdown, &three_sources());

    assert!(html.contains("<table"));
    assert!(html.contains("<th style="));
    assert!(html.contains("text-align:right;"));
    assert!(html.contains(r#"a <span style="white-space:nowrap;line-height:0;"><sup>"#));
    assert!(html.contains("<del>old</del> new<br>line"));
    assert!(html.contains("<ol start=\"3\""));
    assert!(html.contains("<ul"));
}

#[test]
fn plain_text_keeps_structure_and_appends_sources() {
    let markdown = "# Title\n\nIntro with [a link](https://example.org/l) and <https://example.org/u> [1].\n\n\
        ## Table\n\n| A | B |\n|---|---|\n| x | y [2] |\n\n- one\n- two\n  1. sub\n\n> quoted\n\n\
        ```\ncode [3]\n```\n";

    let text = render_text_body(markdown, &three_sources());

    let expected = "Title\n=====\n\n\
        Intro with a link (https://example.org/l) and https://example.org/u [1].\n\n\
        Table\n-----\n\n\
        A | B\nx | y [2]\n\n\
        - one\n- two\n  1. sub\n\n\
        > quoted\n\n\
        \u{20}   code [3]\n\n\
        Sources\n-------\n\
        [1] Source 1\n    https://example.org/one\n\
        [2] Source 2\n    https://example.org/two?a=1&b=2\n\
        [3] Source 3\n    http://example.org/three\n";
    assert_eq!(text, expected);
}

#[test]
fn html_document_has_title_sources_and_footer_all_escaped() {
    let meta = ReportMeta {
        question: "Is <b>bold</b> & \"safe\"?",
        job_id: "01JGZ5Q6C7XW3E2N8R4T9YB0KD",
        model: Some("sonar-deep-research"),
        duration: Some(std::time::Duration::from_secs(252)),
        cost_usd: Some(0.41521),
    };
    let sources = vec![
        Source {
            number: 1,
            title: Some("Title with <i>markup</i>".into()),
            url: "https://user@www.example.org:8443/p?q=1".into(),
            date: Some("2024-05-01".into()),
        },
        source(4, "javascript:alert(1)"),
    ];

    let html = render_html_document(&meta, "Body [1] [4]", &sources);

    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<title>Is &lt;b&gt;bold&lt;/b&gt; &amp; &quot;safe&quot;?</title>"));
    assert!(html.contains("max-width:720px"));
    assert!(html.contains(">Sources</h2>"));
    assert!(html.contains("Title with &lt;i&gt;markup&lt;/i&gt;</a>"));
    assert!(html.contains("www.example.org &middot; 2024-05-01"));
    assert!(html.contains("[4]</td>"));
    assert!(!html.contains("href=\"javascript"));
    assert!(html.contains("Job: 01JGZ5Q6C7XW3E2N8R4T9YB0KD"));
    assert!(html.contains("Model: sonar-deep-research"));
    assert!(html.contains("Duration: 4 min 12 s"));
    assert!(html.contains("Cost: $0.42"));
    assert!(!html.contains("<b>") && !html.contains("<i>"));
}

#[test]
fn render_report_matches_the_single_renderers() {
    let meta = ReportMeta {
        question: "Q",
        job_id: "J1",
        ..ReportMeta::default()
    };
    let markdown = "# H\n\nText [1] with a [link](https://example.org).\n";
    let sources = three_sources();

    let both = render_report(&meta, markdown, &sources);

    assert_eq!(both.html, render_html_document(&meta, markdown, &sources));
    let body = render_text_body(markdown, &sources);
    assert!(both.text.starts_with("Q\n===\n\n"));
    assert!(both.text.contains(&body));
    assert!(
        both.text
            .ends_with("-- \nJob: J1\nSent by research-relay.\n")
    );
}

#[test]
fn markdown_attachment_appends_a_sources_section() {
    let sources = vec![
        Source {
            number: 1,
            title: Some("A [bracketed] *title*".into()),
            url: "https://example.org/a b".into(),
            date: Some("2025-01-02".into()),
        },
        source(3, "ftp://example.org/f"),
    ];

    let markdown = render_markdown_attachment("# Report\n\nText [1]\n\n", &sources);

    assert_eq!(
        markdown,
        "# Report\n\nText [1]\n\n## Sources\n\n\
         - [1] [A \\[bracketed\\] \\*title\\*](<https://example.org/a%20b>) (2025-01-02)\n\
         - [3] Source 3\n"
    );
}

#[test]
fn web_url_check_and_formatting_helpers() {
    let cases = [
        ("https://example.org", true),
        ("HTTP://example.org/x", true),
        ("https://", false),
        ("https:///path", false),
        ("javascript:alert(1)", false),
        ("//example.org", false),
        ("example.org", false),
    ];

    for (url, expected) in cases {
        assert_eq!(is_web_url(url), expected, "{url}");
    }
    assert_eq!(format_duration(std::time::Duration::from_secs(42)), "42 s");
    assert_eq!(
        format_duration(std::time::Duration::from_secs(3_780)),
        "1 h 03 min"
    );
    assert_eq!(format_cost(0.00501), "$0.005");
    assert_eq!(format_cost(0.05), "$0.05");
    assert_eq!(format_cost(1.2), "$1.20");
    assert_eq!(format_cost(0.0), "$0.00");
}
