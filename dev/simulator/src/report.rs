//! Generated completions shaped like the provider's recorded deep-research responses.
//!
//! A report has what the product has to cope with in real output: a leading `<think>` block
//! (for the reasoning and deep-research models), Markdown with headings, a list, a numbered
//! list, a table, bold text and `[n]` markers pointing into `citations` / `search_results`,
//! non-ASCII text (accents, CJK, an em dash, the euro sign) and, on request, a great deal of it.
//! Sources live on example.org / example.com / example.net hosts only, so nothing a test renders
//! or follows ever leads to a real site.
//!
//! Generation is deterministic for a seed (the simulator seeds it from the job id), so a
//! failing test sees the same report when it is run again.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::job::format_uuid;

/// Models whose answers open with a `<think>` block, as the real ones do.
const THINKING_MODELS: [&str; 2] = ["sonar-deep-research", "sonar-reasoning-pro"];

const HOSTS: [&str; 10] = [
    "www.example.org",
    "research.example.com",
    "news.example.net",
    "docs.example.org",
    "data.example.com",
    "blog.example.net",
    "policy.example.org",
    "journal.example.com",
    "stats.example.net",
    "www.example.com",
];

const SECTIONS: [&str; 8] = [
    "reports", "articles", "insights", "papers", "news", "analysis", "briefs", "data",
];

/// Title patterns; `{}` is the topic.
const TITLES: [&str; 10] = [
    "{} — market overview and outlook",
    "A 2025 review: {}",
    "Annual report 2024 | {}",
    "Survey results from Zürich and Geneva: {}",
    "FAQ: {}",
    "Working paper — {}",
    "{}: costs, benefits and open questions",
    "東京 case study: {}",
    "Policy brief: {}",
    "Indicators 2019–2025: {}",
];

/// Sentences for padding paragraphs; `{t}` is the topic, `{m}` a source marker.
const SENTENCES: [&str; 15] = [
    "Across the reviewed material, the question is framed less as a single decision than as a sequence of smaller commitments{m}.",
    "Several case studies report that the first twelve months are dominated by integration work rather than by the headline technology{m}.",
    "Estimates of the benefit vary by a factor of three, largely because studies define the baseline differently{m}.",
    "A survey of 1,240 organisations found that 41 % had moved beyond a pilot, up from 27 % two years earlier{m}.",
    "Practitioners in Zürich and Genève stress procurement rules as a hidden source of delay{m}.",
    "In 東京, municipal reports emphasise reliability and long service lives over up-front price{m}.",
    "The naïve reading of these figures — that costs will keep falling at the same pace — is not supported by the longer time series{m}.",
    "Independent reviewers caution that vendor-reported numbers in this area are rarely audited{m}.",
    "Where outcomes were measured carefully, the gains were smaller but more durable than early announcements suggested{m}.",
    "Smaller organisations tend to benefit most from shared services, while large ones favour building internal capability{m}.",
    "Data on long-term maintenance costs remain sparse, which makes life-cycle comparisons uncertain{m}.",
    "Policy makers increasingly tie public funding to transparent reporting of results{m}.",
    "The trade-off between speed and control reappears in almost every account reviewed here{m}.",
    "Consumer-facing deployments attract more scrutiny, and with it more detailed public evidence{m}.",
    "Taken together, the sources on “{t}” agree more on direction than on magnitude{m}.",
];

const SNIPPETS: [&str; 5] = [
    "Figures for 2021–2025 with notes on method and coverage.",
    "Interviews with 38 practitioners; summary of recurring obstacles.",
    "Regional breakdown (Europe, Asia, Latin America) — preliminary data.",
    "Cost comparison in € and US$, adjusted for inflation.",
    "Review of published evaluations; several rely on naïve baselines.",
];

const ASPECTS: [&str; 10] = [
    "Market structure",
    "Cost drivers",
    "Implementation experience",
    "Regulatory outlook",
    "Measurement issues",
    "Regional contrasts",
    "Technology choices",
    "Workforce and skills",
    "Financing",
    "Long-term scenarios",
];

/// What to generate.
#[derive(Debug, Clone)]
pub(crate) struct ReportSpec<'a> {
    /// The model the job asked for (decides the think block and the prices).
    pub model: &'a str,
    /// The last user message: the report is about it.
    pub question: &'a str,
    /// Number of sources.
    pub sources: usize,
    /// Pad the content to about this many bytes.
    pub report_bytes: Option<usize>,
    /// `created` of the completion (Unix seconds).
    pub created_secs: i64,
    /// Seed for every random choice.
    pub seed: u64,
}

/// One generated search result.
#[derive(Debug, Clone)]
struct Source {
    title: String,
    url: String,
    date: Option<String>,
    last_updated: Option<String>,
    snippet: String,
}

/// Builds the `response` object of a completed job (the spec's `CompletionResponse`).
pub(crate) fn completion(spec: &ReportSpec<'_>) -> Value {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let topic = topic_of(spec.question);
    let sources = make_sources(&topic, spec.sources, &mut rng);
    let thinks = THINKING_MODELS.contains(&spec.model);

    let think = if thinks {
        think_block(&topic, &sources)
    } else {
        String::new()
    };
    let mut body = report_body(&topic, sources.len());
    if let Some(target) = spec.report_bytes {
        let wanted = target.saturating_sub(think.len() + body.len());
        pad(&mut body, &topic, sources.len(), wanted, &mut rng);
    }
    let content = format!("{think}{body}");

    let usage = usage(spec.model, spec.question, &think, &content, sources.len());
    let id: [u8; 16] = rng.random();
    json!({
        "id": format_uuid(id),
        "model": spec.model,
        "created": spec.created_secs,
        "usage": usage,
        "citations": sources.iter().map(|s| s.url.as_str()).collect::<Vec<_>>(),
        "search_results": sources.iter().map(|s| json!({
            "title": s.title,
            "url": s.url,
            "date": s.date,
            "last_updated": s.last_updated,
            "snippet": s.snippet,
            "source": "web",
        })).collect::<Vec<_>>(),
        "object": "chat.completion",
        "choices": [{
            "index": 0,
            "finish_reason": "stop",
            "message": { "role": "assistant", "content": content },
            "delta": { "role": "assistant", "content": "" },
        }],
    })
}

/// A short topic phrase from the question: its first words, whitespace collapsed, no
/// trailing punctuation, at most 70 characters.
fn topic_of(question: &str) -> String {
    let words: Vec<&str> = question.split_whitespace().take(10).collect();
    let mut topic = String::new();
    for word in words {
        if topic.chars().count() + word.chars().count() + 1 > 70 {
            break;
        }
        if !topic.is_empty() {
            topic.push(' ');
        }
        topic.push_str(word);
    }
    let topic = topic
        .trim_end_matches(['?', '.', '!', ':', ';', ','])
        .trim();
    if topic.is_empty() {
        "the requested topic".to_owned()
    } else {
        topic.to_owned()
    }
}

/// The topic with its first letter in upper case, for headings.
fn capitalised(topic: &str) -> String {
    let mut chars = topic.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// An ASCII slug for URLs, from the topic's first words.
fn slug_of(topic: &str) -> String {
    let words: Vec<String> = topic
        .split_whitespace()
        .map(|word| {
            word.chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_lowercase())
                .collect::<String>()
        })
        .filter(|word| !word.is_empty())
        .take(6)
        .collect();
    if words.is_empty() {
        "topic".to_owned()
    } else {
        words.join("-")
    }
}

fn make_sources(topic: &str, count: usize, rng: &mut StdRng) -> Vec<Source> {
    let slug = slug_of(topic);
    (1..=count)
        .map(|n| {
            let host = HOSTS[(n - 1) % HOSTS.len()];
            let section = SECTIONS[rng.random_range(0..SECTIONS.len())];
            let title = TITLES[(n - 1) % TITLES.len()].replace("{}", topic);
            let date = (n % 3 != 0).then(|| random_date(rng));
            let last_updated = (n % 2 == 0).then(|| random_date(rng));
            Source {
                title,
                url: format!("https://{host}/{section}/{slug}-{n}"),
                date,
                last_updated,
                snippet: SNIPPETS[(n - 1) % SNIPPETS.len()].to_owned(),
            }
        })
        .collect()
}

fn random_date(rng: &mut StdRng) -> String {
    let year = rng.random_range(2023..=2025);
    let month = rng.random_range(1..=12);
    let day = rng.random_range(1..=28);
    format!("{year}-{month:02}-{day:02}")
}

/// `[k]` for the k-th marker slot, cycling through the available sources; empty without any.
fn marker(slot: usize, sources: usize) -> String {
    if sources == 0 {
        String::new()
    } else {
        format!("[{}]", (slot.saturating_sub(1) % sources) + 1)
    }
}

fn host_of(url: &str) -> &str {
    url.trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or(url)
}

fn think_block(topic: &str, sources: &[Source]) -> String {
    let mut think = format!(
        "<think>\nOkay, the user asks: “{topic}”. Before writing anything I should check what \
         the search results actually say.\n\n"
    );
    if sources.is_empty() {
        think.push_str(
            "There are no usable search results, so I have to rely on general knowledge and \
             say so clearly.\n\n",
        );
    }
    for (index, source) in sources.iter().take(4).enumerate() {
        think.push_str(&format!(
            "Result {} ({}) — \"{}\": useful for {}.\n",
            index + 1,
            host_of(&source.url),
            source.title,
            [
                "the overall picture",
                "recent figures",
                "regional detail",
                "the risks"
            ][index]
        ));
    }
    think.push_str(
        "\nThe sources do not fully agree, so a naïve average would mislead; better to show the \
         range and say where the evidence is thin. A comparison table will help, and regional \
         notes (Zürich, 東京, São Paulo) cover the differences.\n\nStructure: summary, key \
         findings, comparison, regional perspectives, risks, conclusion. Every claim tied to a \
         numbered source.\n</think>\n\n",
    );
    think
}

fn report_body(topic: &str, sources: usize) -> String {
    let m = |slot: usize| marker(slot, sources);
    let title = capitalised(topic);
    let basis = match sources {
        0 => "general background knowledge (no sources were retrieved)".to_owned(),
        1 => "one source".to_owned(),
        n => format!("{n} sources"),
    };
    let mut body = format!(
        "# Research Report: {title}\n\n\
         ## Executive Summary\n\
         This report addresses **“{topic}”** on the basis of {basis}. The evidence points to three \
         recurring themes: adoption is uneven across regions, costs have fallen steadily since \
         2021, and governance lags behind practice{m1}{m2}. Estimates differ from source to \
         source — the spread is shown rather than averaged, because a naïve mean would hide real \
         differences{m3}.\n\n\
         ## Key Findings\n\
         - **Adoption** — early adopters report measurable gains within 12–18 months, while late \
         adopters mostly cite integration effort as the main obstacle{m1}.\n\
         - **Cost** — median unit costs fell by roughly 18 % between 2021 and 2024, with the \
         steepest drop in the last year{m2}.\n\
         - **Regulation** — rules remain fragmented; two of the reviewed jurisdictions published \
         draft guidance in 2025{m3}.\n\
         - **Skills** — practitioners consistently name a shortage of experienced staff as the \
         binding constraint{m4}.\n\n\
         ## Comparison of Approaches\n\
         | Approach | Main strength | Main risk | Typical cost | Evidence |\n\
         |---|---|---|---|---|\n\
         | Incremental rollout | Low disruption | Slow payback | € 40k–120k | {m1} |\n\
         | Platform consolidation | Lower unit cost (≈ 18 %) | Vendor lock-in | € 150k+ | {m2}{m3} |\n\
         | In-house build | Full control | Scarce skills | varies widely | {m4} |\n\n\
         ## Regional Perspectives\n\
         ### Europe\n\
         In **Zürich**, pilot programmes moved to production faster where procurement was \
         centralised; teams in München and Île-de-France describe similar effects{m5}.\n\n\
         ### Asia\n\
         In 東京 (Tokyo), municipal reports (東京都の調査) put reliability and service life ahead \
         of price, which favours conservative designs{m6}.\n\n\
         ### Latin America\n\
         In São Paulo, financing rather than technology is the limiting factor; several projects \
         stalled between approval and funding{m7}.\n\n\
         ## Risks and Caveats\n\
         1. **Survivorship bias** — most published case studies describe projects that \
         succeeded{m2}.\n\
         2. **Naïve extrapolation** — recent cost declines need not continue at the same \
         pace{m3}.\n\
         3. **Data gaps** — long-term operating data are scarce outside a few large \
         programmes{m5}.\n\n",
        m1 = m(1),
        m2 = m(2),
        m3 = m(3),
        m4 = m(4),
        m5 = m(5),
        m6 = m(6),
        m7 = m(7),
    );
    if sources > 7 {
        body.push_str("## Further Evidence\n");
        let rest: Vec<usize> = (8..=sources).collect();
        for group in rest.chunks(4) {
            let markers: String = group.iter().map(|n| format!("[{n}]")).collect();
            body.push_str(&format!(
                "Additional material corroborates these patterns, with similar magnitudes \
                 and the same caveats{markers}. "
            ));
        }
        body.push_str("\n\n");
    }
    body.push_str(&conclusion(topic, sources));
    body
}

fn conclusion(topic: &str, sources: usize) -> String {
    format!(
        "## Conclusion\n\
         On **“{}”**, the evidence favours a step-by-step approach: start where the evidence \
         is strongest, measure outcomes honestly, and revisit the plan as better data \
         arrive{}{}.\n",
        topic,
        marker(1, sources),
        marker(2, sources),
    )
}

/// Inserts realistic paragraphs before the conclusion until `wanted` more bytes are added.
fn pad(body: &mut String, topic: &str, sources: usize, wanted: usize, rng: &mut StdRng) {
    if wanted == 0 {
        return;
    }
    let mut padding = String::from("## Detailed Analysis\n\n");
    let mut paragraph_no = 0usize;
    let mut slot = 1usize;
    while padding.len() < wanted {
        if paragraph_no.is_multiple_of(3) {
            let aspect = ASPECTS[(paragraph_no / 3) % ASPECTS.len()];
            padding.push_str(&format!("### {}. {aspect}\n", paragraph_no / 3 + 1));
        }
        let sentences = rng.random_range(4..=6);
        for index in 0..sentences {
            let template = SENTENCES[rng.random_range(0..SENTENCES.len())];
            if index > 0 {
                padding.push(' ');
            }
            padding.push_str(
                &template
                    .replace("{t}", topic)
                    .replace("{m}", &marker(slot, sources)),
            );
            slot += 1;
        }
        padding.push_str("\n\n");
        paragraph_no += 1;
    }
    match body.find("## Conclusion\n") {
        Some(at) => body.insert_str(at, &padding),
        None => body.push_str(&padding),
    }
}

/// Rough token count: about four characters a token, as for English text.
fn tokens(text: &str) -> u64 {
    u64::try_from(text.chars().count() / 4).unwrap_or(u64::MAX)
}

fn round_usd(value: f64) -> f64 {
    (value * 100_000.0).round() / 100_000.0
}

fn per_million(tokens: u64, usd: f64) -> f64 {
    tokens as f64 * usd / 1_000_000.0
}

/// Token counts and a cost breakdown priced like the provider's published rates.
fn usage(model: &str, question: &str, think: &str, content: &str, sources: usize) -> Value {
    let sources = u64::try_from(sources).unwrap_or(u64::MAX);
    let prompt_tokens = tokens(question) + 12;
    let completion_tokens = tokens(content).max(1);
    let total_tokens = prompt_tokens + completion_tokens;
    if model == "sonar-deep-research" {
        let reasoning_tokens = tokens(think) * 40 + sources * 1_500;
        let citation_tokens = sources * 480;
        let num_search_queries = (sources + sources / 2).max(1);
        let input = per_million(prompt_tokens, 2.0);
        let output = per_million(completion_tokens, 8.0);
        let reasoning = per_million(reasoning_tokens, 3.0);
        let citation = per_million(citation_tokens, 2.0);
        let request = num_search_queries as f64 * 0.005;
        json!({
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": total_tokens,
            "citation_tokens": citation_tokens,
            "num_search_queries": num_search_queries,
            "reasoning_tokens": reasoning_tokens,
            "search_context_size": "high",
            "cost": {
                "input_tokens_cost": round_usd(input),
                "output_tokens_cost": round_usd(output),
                "reasoning_tokens_cost": round_usd(reasoning),
                "citation_tokens_cost": round_usd(citation),
                "request_cost": round_usd(request),
                "total_cost": round_usd(input + output + reasoning + citation + request),
            },
        })
    } else {
        let (input_price, output_price, request) = match model {
            "sonar-pro" => (3.0, 15.0, 0.006),
            "sonar-reasoning-pro" => (2.0, 8.0, 0.006),
            _ => (1.0, 1.0, 0.005),
        };
        let input = per_million(prompt_tokens, input_price);
        let output = per_million(completion_tokens, output_price);
        let mut usage = json!({
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": total_tokens,
            "num_search_queries": 1,
            "search_context_size": "low",
            "cost": {
                "input_tokens_cost": round_usd(input),
                "output_tokens_cost": round_usd(output),
                "request_cost": request,
                "total_cost": round_usd(input + output + request),
            },
        });
        if !think.is_empty() {
            usage["reasoning_tokens"] = json!(tokens(think));
        }
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(model: &str, sources: usize, report_bytes: Option<usize>) -> ReportSpec<'_> {
        ReportSpec {
            model,
            question: "What are the best battery chemistries for grid storage in 2025?",
            sources,
            report_bytes,
            created_secs: 1_760_000_000,
            seed: 7,
        }
    }

    fn content(response: &Value) -> &str {
        response["choices"][0]["message"]["content"]
            .as_str()
            .expect("content should be a string")
    }

    #[test]
    fn deep_research_opens_with_a_think_block_then_markdown() {
        let response = completion(&spec("sonar-deep-research", 8, None));
        let text = content(&response);

        assert!(text.starts_with("<think>\n"));
        let report = text
            .split_once("</think>\n\n")
            .map(|(_, report)| report)
            .expect("think block should be closed");
        assert!(report.starts_with("# Research Report: What are the best battery chemistries"));
        for needle in ["## ", "- **", "|---|", "**", "Zürich", "naïve", "東京", "—"] {
            assert!(report.contains(needle), "report should contain {needle:?}");
        }
    }

    #[test]
    fn every_source_is_cited_and_no_marker_points_past_the_sources() {
        for sources in [1, 3, 8, 20] {
            let response = completion(&spec("sonar-deep-research", sources, None));
            let text = content(&response);

            for n in 1..=sources {
                assert!(
                    text.contains(&format!("[{n}]")),
                    "[{n}] missing of {sources}"
                );
            }
            assert!(!text.contains(&format!("[{}]", sources + 1)));
            assert_eq!(
                response["citations"].as_array().map(Vec::len),
                Some(sources)
            );
            assert_eq!(
                response["search_results"].as_array().map(Vec::len),
                Some(sources)
            );
        }
    }

    #[test]
    fn sources_use_example_hosts_only_and_some_dates_are_null() {
        let response = completion(&spec("sonar-deep-research", 12, None));
        let results = response["search_results"]
            .as_array()
            .expect("search_results should be an array");

        for result in results {
            let url = result["url"].as_str().expect("url should be a string");
            let host = host_of(url);
            assert!(
                host.ends_with("example.org")
                    || host.ends_with("example.com")
                    || host.ends_with("example.net"),
                "{url} is not an example host"
            );
        }
        assert!(results.iter().any(|r| r["date"].is_null()));
        assert!(results.iter().any(|r| r["date"].is_string()));
    }

    #[test]
    fn without_sources_there_are_no_markers() {
        let response = completion(&spec("sonar-deep-research", 0, None));

        assert!(!content(&response).contains("[1]"));
        assert_eq!(response["citations"], json!([]));
    }

    #[test]
    fn padding_reaches_about_the_requested_size_on_char_boundaries() {
        let response = completion(&spec("sonar-deep-research", 50, Some(450_000)));
        let text = content(&response);

        assert!(text.len() >= 450_000);
        assert!(text.len() < 452_000, "overshoot too large: {}", text.len());
        assert!(text.contains("## Detailed Analysis"));
        assert!(
            text.trim_end().ends_with('.'),
            "conclusion should stay last"
        );
    }

    #[test]
    fn usage_has_tokens_and_a_consistent_cost() {
        let response = completion(&spec("sonar-deep-research", 10, None));
        let usage = &response["usage"];
        let cost = &usage["cost"];
        let parts: f64 = [
            "input_tokens_cost",
            "output_tokens_cost",
            "reasoning_tokens_cost",
            "citation_tokens_cost",
            "request_cost",
        ]
        .iter()
        .map(|key| cost[*key].as_f64().expect("cost parts should be numbers"))
        .sum();

        assert_eq!(
            usage["total_tokens"].as_u64(),
            Some(
                usage["prompt_tokens"].as_u64().unwrap_or(0)
                    + usage["completion_tokens"].as_u64().unwrap_or(0)
            )
        );
        assert!(usage["reasoning_tokens"].as_u64().unwrap_or(0) > 0);
        assert!(usage["num_search_queries"].as_u64().unwrap_or(0) > 0);
        let total = cost["total_cost"]
            .as_f64()
            .expect("total should be a number");
        assert!((total - parts).abs() < 0.0001, "{total} vs {parts}");
    }

    #[test]
    fn plain_sonar_has_no_think_block() {
        let response = completion(&spec("sonar", 3, None));

        assert!(content(&response).starts_with("# "));
        assert!(response["usage"]["reasoning_tokens"].is_null());
    }

    #[test]
    fn the_same_seed_gives_the_same_report() {
        let first = completion(&spec("sonar-deep-research", 5, Some(20_000)));
        let second = completion(&spec("sonar-deep-research", 5, Some(20_000)));

        assert_eq!(first, second);
    }

    #[test]
    fn topics_are_cut_and_cleaned() {
        assert_eq!(topic_of("  Rents in   Zürich?  "), "Rents in Zürich");
        assert_eq!(topic_of("???"), "the requested topic");
        assert_eq!(slug_of("東京 housing, 2025"), "housing-2025");
        assert_eq!(slug_of("東京"), "topic");
        assert!(topic_of(&"word ".repeat(50)).chars().count() <= 70);
    }
}
