//! Turning a finished research answer into what a reader receives.
//!
//! A deep-research answer arrives as one string: a `<think>` block with the model's reasoning,
//! then a Markdown report whose `[n]` markers point into the provider's source list. This module
//! removes the reasoning ([`strip_think`]), numbers the sources ([`sources`]) and renders the
//! report as an HTML fragment, a complete HTML e-mail document, plain text and a Markdown
//! attachment. Everything here is pure, so the mailer, the job view and the benchmark share it.
//!
//! Nothing the provider wrote is trusted as markup: raw HTML in the report is shown as text, only
//! `http`/`https` addresses become links, and every provider string is escaped before it reaches
//! an HTML document. The Markdown is parsed once per rendering and written straight into the
//! output buffers, so a 450 KB report costs a few milliseconds, not a few allocations per line.

use std::fmt::Write as _;
use std::time::Duration;

use pulldown_cmark::{Alignment, CowStr, Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use serde::{Deserialize, Serialize};

use crate::provider::types::{CompletionResponse, SearchResult};

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

/// The answer left once the model's leading reasoning is removed.
///
/// The raw content stays with the job; this view is what is mailed and shown. `is_empty` exists
/// because a job can finish with nothing but reasoning, and mailing an empty "report" would look
/// like a success to the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrippedAnswer<'a> {
    /// The report Markdown, without the think block and the blank lines after it.
    pub answer: &'a str,
    /// The removed reasoning (without its tags), kept for diagnostics.
    pub reasoning: Option<&'a str>,
    /// Whether a leading think block was found and removed.
    pub think_removed: bool,
    /// Whether nothing but whitespace is left to show: the caller must not mail it as a report.
    pub is_empty: bool,
}

/// Removes a leading `<think>...</think>` block from a provider answer.
///
/// Only a block at the very start (after optional whitespace) is reasoning; the same tag later in
/// the text is part of the report and is left alone. An unclosed block means the model never got
/// past reasoning, so the whole content is reasoning and the answer is empty. Content without a
/// leading block is returned unchanged.
pub fn strip_think(content: &str) -> StrippedAnswer<'_> {
    let Some(after_open) = content.trim_start().strip_prefix(THINK_OPEN) else {
        return StrippedAnswer {
            answer: content,
            reasoning: None,
            think_removed: false,
            is_empty: content.trim().is_empty(),
        };
    };
    match after_open.find(THINK_CLOSE) {
        Some(close) => {
            let answer = trim_blank_lines(&after_open[close + THINK_CLOSE.len()..]);
            StrippedAnswer {
                answer,
                reasoning: Some(&after_open[..close]),
                think_removed: true,
                is_empty: answer.is_empty(),
            }
        }
        None => StrippedAnswer {
            answer: "",
            reasoning: Some(after_open),
            think_removed: true,
            is_empty: true,
        },
    }
}

/// Drops whole blank lines at the start (keeping the first line's indentation, which Markdown
/// reads as meaning) and whitespace at the end.
fn trim_blank_lines(text: &str) -> &str {
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        if !line.trim().is_empty() {
            break;
        }
        start += line.len();
    }
    text[start..].trim_end()
}

/// One source a report cites, numbered as the report's `[n]` markers count.
///
/// `number` is the position in the provider's list (1-based), not in this list: entries without
/// an address are skipped, and the markers must still point at the right page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The marker number that cites this source (`[number]`).
    pub number: usize,
    /// The page title, when the provider gave one.
    pub title: Option<String>,
    /// The page address as the provider gave it; only `http`/`https` ones are ever linked.
    pub url: String,
    /// Publication date as the provider wrote it, when known.
    pub date: Option<String>,
}

impl Source {
    /// The text to show for this source: its title, or its address when it has none.
    pub fn label(&self) -> &str {
        self.title.as_deref().unwrap_or(&self.url)
    }

    /// Whether the address may become a link (only `http` and `https` are safe to follow).
    pub fn is_linkable(&self) -> bool {
        is_web_url(&self.url)
    }

    /// The host part of the address, shown next to the title so a reader sees where a link
    /// leads before following it.
    pub fn host(&self) -> Option<&str> {
        url_host(&self.url)
    }
}

/// The sources of a completion, in marker order.
///
/// `search_results` carry titles and dates, so they are preferred; answers that only list
/// `citations` (or whose `search_results` hold no address) fall back to those. Either list may be
/// missing altogether, which gives no sources.
pub fn sources(response: &CompletionResponse) -> Vec<Source> {
    sources_from(
        response.search_results.as_deref(),
        response.citations.as_deref(),
    )
}

/// [`sources`] for callers that keep the two provider lists apart from a completion, such as a
/// stored job.
pub fn sources_from(
    search_results: Option<&[SearchResult]>,
    citations: Option<&[String]>,
) -> Vec<Source> {
    if let Some(results) = search_results
        && results.iter().any(|result| !result.url.trim().is_empty())
    {
        return results
            .iter()
            .enumerate()
            .filter_map(|(index, result)| {
                let url = result.url.trim();
                (!url.is_empty()).then(|| Source {
                    number: index + 1,
                    title: non_empty(result.title.as_deref()),
                    url: url.to_owned(),
                    date: non_empty(result.date.as_deref()),
                })
            })
            .collect();
    }
    citations
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(index, url)| {
            let url = url.trim();
            (!url.is_empty()).then(|| Source {
                number: index + 1,
                title: None,
                url: url.to_owned(),
                date: None,
            })
        })
        .collect()
}

fn non_empty(text: Option<&str>) -> Option<String> {
    text.map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

/// Whether `url` is an absolute `http` or `https` address with a host.
///
/// Anything else (`javascript:`, `data:`, relative paths, `mailto:`) is shown as text, because a
/// report is provider output and a link in an e-mail is followed with one click.
pub fn is_web_url(url: &str) -> bool {
    url_host(url).is_some()
}

/// The host of an `http`/`https` address, without user info or port.
fn url_host(url: &str) -> Option<&str> {
    let rest = strip_prefix_ignore_case(url, "https://")
        .or_else(|| strip_prefix_ignore_case(url, "http://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if host_port.starts_with('[') {
        host_port.split_inclusive(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '<' | '>' | '"'));
    valid.then_some(host)
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Markers have at most this many digits; larger numbers are not markers.
const MAX_MARKER: usize = 9999;

/// The address each marker number links to, indexed by `number - 1`, so that a report with
/// thousands of markers checks each source's address once.
fn marker_urls(sources: &[Source]) -> Vec<Option<&str>> {
    let highest = sources
        .iter()
        .map(|source| source.number)
        .filter(|number| (1..=MAX_MARKER).contains(number))
        .max()
        .unwrap_or(0);
    let mut urls = vec![None; highest];
    for source in sources {
        if (1..=highest).contains(&source.number) && source.is_linkable() {
            urls[source.number - 1] = Some(source.url.as_str());
        }
    }
    urls
}

/// What the reader sees around the report: the question as title and a footer that lets them
/// (and support) tie the e-mail to a job.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReportMeta<'a> {
    /// The question the research answered, shown as the title.
    pub question: &'a str,
    /// Our job id.
    pub job_id: &'a str,
    /// The model that wrote the report, when known.
    pub model: Option<&'a str>,
    /// How long the research ran, when known.
    pub duration: Option<Duration>,
    /// What the provider charged in USD, when it said.
    pub cost_usd: Option<f64>,
}

/// A report rendered for both parts of an e-mail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderedReport {
    /// The `text/html` part.
    pub html: String,
    /// The `text/plain` part.
    pub text: String,
}

/// Renders the report Markdown as an HTML fragment (no document around it).
///
/// Tables and strikethrough are understood; raw HTML in the report is escaped and shown as text;
/// `[n]` markers become superscript links to the n-th source, except in code and in link text;
/// a marker without a linkable source stays plain text.
pub fn render_html_body(markdown: &str, sources: &[Source]) -> String {
    let mut html = HtmlWriter::new(String::with_capacity(html_capacity(markdown, 0)), sources);
    drive(markdown, &mut html);
    html.finish()
}

/// Renders the report Markdown as plain text followed by the numbered source list.
///
/// Meant for the `text/plain` part that some readers prefer and that spam filters compare with
/// the HTML: headings stay on their own lines, lists keep bullets, table cells are joined with
/// ` | `, links read `text (url)` and markers stay `[n]` so they match the list at the end.
pub fn render_text_body(markdown: &str, sources: &[Source]) -> String {
    let mut text = TextWriter::new(String::with_capacity(text_capacity(
        markdown,
        sources.len(),
    )));
    drive(markdown, &mut text);
    let mut out = text.finish();
    push_text_sources(&mut out, sources);
    out
}

/// Renders both e-mail parts of a report with a single pass over the Markdown.
///
/// The HTML is a complete document (see [`render_html_document`]); the text is the plain
/// counterpart with the question on top and the same footer.
pub fn render_report(meta: &ReportMeta<'_>, markdown: &str, sources: &[Source]) -> RenderedReport {
    let mut html = String::with_capacity(html_capacity(markdown, sources.len()));
    open_document(&mut html, "Research report", meta.question);
    let mut text = String::with_capacity(text_capacity(markdown, sources.len()));
    push_text_title(&mut text, meta.question);

    let mut writers = (HtmlWriter::new(html, sources), TextWriter::new(text));
    drive(markdown, &mut writers);
    let (html, text) = writers;

    let mut html = html.finish();
    close_report_card(&mut html);
    push_html_sources(&mut html, sources);
    push_html_footer(&mut html, meta, REPORT_NOTE);
    close_document(&mut html);

    let mut text = text.finish();
    push_text_sources(&mut text, sources);
    push_text_footer(&mut text, meta);
    RenderedReport { html, text }
}

/// Renders a complete HTML document for the e-mail: the question as title, the report, the
/// numbered sources with their hosts, and a footer with job id, model, duration and cost.
///
/// Mail clients drop `<style>` blocks and external stylesheets, so every style is inline and the
/// layout is a single centred column at most 720 pixels wide in the system font.
pub fn render_html_document(meta: &ReportMeta<'_>, markdown: &str, sources: &[Source]) -> String {
    let mut out = String::with_capacity(html_capacity(markdown, sources.len()));
    open_document(&mut out, "Research report", meta.question);
    let mut html = HtmlWriter::new(out, sources);
    drive(markdown, &mut html);
    let mut out = html.finish();
    close_report_card(&mut out);
    push_html_sources(&mut out, sources);
    push_html_footer(&mut out, meta, REPORT_NOTE);
    close_document(&mut out);
    out
}

/// The Markdown attachment: the report as written (think block removed) followed by a
/// `Sources` section, so the reader keeps a file that still makes sense without the e-mail.
pub fn render_markdown_attachment(markdown: &str, sources: &[Source]) -> String {
    let mut out = String::with_capacity(markdown.len() + 2 + sources.len() * 160 + 16);
    out.push_str(markdown.trim_end());
    if sources.is_empty() {
        out.push('\n');
        return out;
    }
    out.push_str("\n\n## Sources\n\n");
    for source in sources {
        let _ = write!(out, "- [{}] ", source.number);
        if source.is_linkable() {
            out.push('[');
            push_markdown_escaped(&mut out, source.label());
            out.push_str("](<");
            push_markdown_url(&mut out, &source.url);
            out.push_str(">)");
        } else {
            push_markdown_escaped(&mut out, source.label());
        }
        if let Some(date) = &source.date {
            out.push_str(" (");
            push_markdown_escaped(&mut out, date);
            out.push(')');
        }
        out.push('\n');
    }
    out
}

/// Inline styles and marker links make the HTML two to three times the Markdown. Reserving
/// generously costs nothing until the memory is written; growing costs a copy of everything so
/// far.
fn html_capacity(markdown: &str, source_count: usize) -> usize {
    markdown.len() * 3 + source_count * 400 + 4096
}

/// Plain text is about the Markdown's size; underlines and link addresses add a little.
fn text_capacity(markdown: &str, source_count: usize) -> usize {
    markdown.len() + markdown.len() / 4 + source_count * 240 + 1024
}

fn parser_options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH
}

/// Something that consumes the Markdown event stream. Adjacent text events are merged before
/// they reach [`Sink::text`], so a marker split by the parser (`[`, `1`, `]`) is seen whole.
trait Sink {
    fn text(&mut self, text: &str);
    fn event(&mut self, event: &Event<'_>);
}

impl<A: Sink, B: Sink> Sink for (A, B) {
    fn text(&mut self, text: &str) {
        self.0.text(text);
        self.1.text(text);
    }

    fn event(&mut self, event: &Event<'_>) {
        self.0.event(event);
        self.1.event(event);
    }
}

fn drive(markdown: &str, sink: &mut impl Sink) {
    let mut pending = String::new();
    let mut single: Option<CowStr<'_>> = None;
    for event in Parser::new_ext(markdown, parser_options()) {
        if let Event::Text(text) = event {
            match single.take() {
                None if pending.is_empty() => single = Some(text),
                None => pending.push_str(&text),
                Some(first) => {
                    pending.push_str(&first);
                    pending.push_str(&text);
                }
            }
            continue;
        }
        flush_text(sink, &mut single, &mut pending);
        sink.event(&event);
    }
    flush_text(sink, &mut single, &mut pending);
}

fn flush_text(sink: &mut impl Sink, single: &mut Option<CowStr<'_>>, pending: &mut String) {
    if let Some(text) = single.take() {
        sink.text(&text);
    } else if !pending.is_empty() {
        sink.text(pending);
        pending.clear();
    }
}

// ---------------------------------------------------------------------------------------------
// HTML

const FONT_STACK: &str =
    "-apple-system,BlinkMacSystemFont,'Segoe UI',Roboto,Helvetica,Arial,sans-serif";
const BORDER: &str = "#d0d7de";
const MUTED: &str = "#57606a";

const STYLE_P: &str = "margin:0 0 14px;";
const STYLE_LIST: &str = "margin:0 0 14px;padding-left:26px;";
const STYLE_NESTED_LIST: &str = "margin:4px 0 0;padding-left:22px;";
const STYLE_LI: &str = "margin:4px 0;";
const STYLE_QUOTE: &str =
    "margin:0 0 14px;padding:2px 14px;border-left:4px solid #d0d7de;color:#57606a;";
const STYLE_PRE: &str = "margin:0 0 14px;padding:12px;background:#f6f8fa;border-radius:6px;\
font-family:ui-monospace,Menlo,Consolas,monospace;\
font-size:13px;line-height:1.45;white-space:pre-wrap;word-wrap:break-word;";
const STYLE_CODE: &str = "padding:1px 4px;background:#eff1f3;border-radius:4px;\
font-family:ui-monospace,Menlo,Consolas,monospace;\
font-size:0.9em;";
const STYLE_RAW_HTML: &str = "margin:0 0 14px;white-space:pre-wrap;";
/// A wide table scrolls inside its own box instead of widening the whole message on a phone.
const STYLE_TABLE_BOX: &str = "margin:0 0 16px;overflow-x:auto;";
const STYLE_TABLE: &str = "border-collapse:collapse;font-size:14px;";
const STYLE_TH: &str = "border:1px solid #d0d7de;padding:6px 10px;background:#f6f8fa;\
font-weight:600;vertical-align:bottom;";
const STYLE_TD: &str = "border:1px solid #d0d7de;padding:6px 10px;vertical-align:top;";
const STYLE_HR: &str = "border:0;border-top:1px solid #d0d7de;margin:22px 0;";

fn heading_style(level: HeadingLevel) -> (&'static str, &'static str) {
    match level {
        HeadingLevel::H1 => ("h1", "margin:26px 0 12px;font-size:24px;line-height:1.3;"),
        HeadingLevel::H2 => (
            "h2",
            "margin:26px 0 12px;padding-bottom:6px;border-bottom:1px solid #d8dee4;\
font-size:20px;line-height:1.3;",
        ),
        HeadingLevel::H3 => ("h3", "margin:22px 0 10px;font-size:17px;line-height:1.35;"),
        HeadingLevel::H4 => ("h4", "margin:18px 0 8px;font-size:16px;line-height:1.4;"),
        HeadingLevel::H5 => ("h5", "margin:16px 0 8px;font-size:15px;line-height:1.4;"),
        HeadingLevel::H6 => (
            "h6",
            "margin:16px 0 8px;font-size:14px;line-height:1.4;color:#57606a;",
        ),
    }
}

/// Header cells centre by default, body cells align left: only what differs is written.
fn alignment_style(alignment: Alignment, header: bool) -> &'static str {
    match alignment {
        Alignment::None | Alignment::Left if header => "text-align:left;",
        Alignment::None | Alignment::Left => "",
        Alignment::Center => "text-align:center;",
        Alignment::Right => "text-align:right;",
    }
}

/// Writes the HTML of the report from Markdown events, with inline styles.
struct HtmlWriter<'s> {
    out: String,
    /// Where the report starts in `out` (a document head may come before it).
    body_start: usize,
    /// The address each marker number links to (index `n - 1`), `None` where it stays text.
    marker_urls: Vec<Option<&'s str>>,
    /// Inside a fenced or indented code block: text is verbatim, markers stay text.
    in_code_block: bool,
    /// Inside the text of a link or image: markers stay text (no link in a link).
    link_depth: usize,
    /// For each open link or image, whether an `<a>` was opened for it.
    open_anchors: Vec<bool>,
    alignments: Vec<Alignment>,
    in_table_head: bool,
    cell_index: usize,
    list_depth: usize,
}

impl<'s> HtmlWriter<'s> {
    fn new(out: String, sources: &'s [Source]) -> Self {
        Self {
            body_start: out.len(),
            out,
            marker_urls: marker_urls(sources),
            in_code_block: false,
            link_depth: 0,
            open_anchors: Vec::new(),
            alignments: Vec::new(),
            in_table_head: false,
            cell_index: 0,
            list_depth: 0,
        }
    }

    fn finish(self) -> String {
        self.out
    }

    fn open(&mut self, tag: &str, style: &str) {
        let first = self.out.len() == self.body_start;
        let out = &mut self.out;
        out.push('<');
        out.push_str(tag);
        out.push_str(" style=\"");
        out.push_str(style);
        if first {
            // The card around the report has its own padding; a heading's top margin on top of
            // it leaves a gap.
            out.push_str("margin-top:0;");
        }
        out.push_str("\">");
    }

    fn close(&mut self, tag: &str, newline: bool) {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
        if newline {
            self.out.push('\n');
        }
    }

    /// A list inside a list item sits close to the item's text instead of ending a paragraph.
    fn list_style(&self) -> &'static str {
        if self.list_depth > 0 {
            STYLE_NESTED_LIST
        } else {
            STYLE_LIST
        }
    }

    fn open_link(&mut self, dest_url: &str, title: &str) {
        self.link_depth += 1;
        let linked = is_web_url(dest_url);
        if linked {
            self.out.push_str("<a href=\"");
            push_attr_url(&mut self.out, dest_url);
            self.out.push('"');
            if !title.is_empty() {
                self.out.push_str(" title=\"");
                push_escaped(&mut self.out, title);
                self.out.push('"');
            }
            self.out.push('>');
        }
        self.open_anchors.push(linked);
    }

    fn close_link(&mut self) {
        self.link_depth = self.link_depth.saturating_sub(1);
        if self.open_anchors.pop().unwrap_or(false) {
            self.out.push_str("</a>");
        }
    }

    fn open_cell(&mut self) {
        let alignment = self
            .alignments
            .get(self.cell_index)
            .copied()
            .unwrap_or(Alignment::None);
        let (tag, style) = if self.in_table_head {
            ("th", STYLE_TH)
        } else {
            ("td", STYLE_TD)
        };
        let out = &mut self.out;
        out.push('<');
        out.push_str(tag);
        out.push_str(" style=\"");
        out.push_str(style);
        out.push_str(alignment_style(alignment, self.in_table_head));
        out.push_str("\">");
        self.cell_index += 1;
    }

    fn start(&mut self, tag: &Tag<'_>) {
        match tag {
            Tag::Paragraph => self.open("p", STYLE_P),
            Tag::Heading { level, .. } => {
                let (name, style) = heading_style(*level);
                self.open(name, style);
            }
            Tag::BlockQuote(_) => {
                self.open("blockquote", STYLE_QUOTE);
                self.out.push('\n');
            }
            Tag::CodeBlock(_) => {
                self.in_code_block = true;
                self.open("pre", STYLE_PRE);
                self.out.push_str("<code>");
            }
            Tag::HtmlBlock => self.open("p", STYLE_RAW_HTML),
            Tag::List(Some(first)) => {
                self.out.push_str("<ol");
                if *first != 1 {
                    let _ = write!(self.out, " start=\"{first}\"");
                }
                self.out.push_str(" style=\"");
                self.out.push_str(self.list_style());
                self.out.push_str("\">\n");
                self.list_depth += 1;
            }
            Tag::List(None) => {
                self.open("ul", self.list_style());
                self.out.push('\n');
                self.list_depth += 1;
            }
            Tag::Item => self.open("li", STYLE_LI),
            Tag::Table(alignments) => {
                self.alignments.clear();
                self.alignments.extend_from_slice(alignments);
                self.open("div", STYLE_TABLE_BOX);
                self.open("table", STYLE_TABLE);
                self.out.push('\n');
            }
            Tag::TableHead => {
                self.in_table_head = true;
                self.cell_index = 0;
                self.out.push_str("<thead><tr>");
            }
            Tag::TableRow => {
                self.cell_index = 0;
                self.out.push_str("<tr>");
            }
            Tag::TableCell => self.open_cell(),
            Tag::Emphasis => self.out.push_str("<em>"),
            Tag::Strong => self.out.push_str("<strong>"),
            Tag::Strikethrough => self.out.push_str("<del>"),
            Tag::Superscript => self.out.push_str("<sup>"),
            Tag::Subscript => self.out.push_str("<sub>"),
            // An image becomes a link to it: remote images in mail are blocked or track the
            // reader, and the alt text says what it shows.
            Tag::Link {
                dest_url, title, ..
            }
            | Tag::Image {
                dest_url, title, ..
            } => self.open_link(dest_url, title),
            Tag::FootnoteDefinition(_)
            | Tag::DefinitionList
            | Tag::DefinitionListTitle
            | Tag::DefinitionListDefinition
            | Tag::MetadataBlock(_) => {}
        }
    }

    fn end(&mut self, tag: &TagEnd) {
        match tag {
            TagEnd::Paragraph | TagEnd::HtmlBlock => self.close("p", true),
            TagEnd::Heading(level) => {
                let (name, _) = heading_style(*level);
                self.close(name, true);
            }
            TagEnd::BlockQuote(_) => self.close("blockquote", true),
            TagEnd::CodeBlock => {
                self.in_code_block = false;
                self.out.push_str("</code></pre>\n");
            }
            TagEnd::List(ordered) => {
                self.list_depth = self.list_depth.saturating_sub(1);
                self.close(if *ordered { "ol" } else { "ul" }, true);
            }
            TagEnd::Item => self.close("li", true),
            TagEnd::Table => self.out.push_str("</tbody></table></div>\n"),
            TagEnd::TableHead => {
                self.in_table_head = false;
                self.out.push_str("</tr></thead>\n<tbody>");
            }
            TagEnd::TableRow => self.out.push_str("</tr>\n"),
            TagEnd::TableCell => {
                let tag = if self.in_table_head { "th" } else { "td" };
                self.close(tag, false);
            }
            TagEnd::Emphasis => self.out.push_str("</em>"),
            TagEnd::Strong => self.out.push_str("</strong>"),
            TagEnd::Strikethrough => self.out.push_str("</del>"),
            TagEnd::Superscript => self.out.push_str("</sup>"),
            TagEnd::Subscript => self.out.push_str("</sub>"),
            TagEnd::Link | TagEnd::Image => self.close_link(),
            TagEnd::FootnoteDefinition
            | TagEnd::DefinitionList
            | TagEnd::DefinitionListTitle
            | TagEnd::DefinitionListDefinition
            | TagEnd::MetadataBlock(_) => {}
        }
    }

    /// Raw HTML from the report is shown, not interpreted. The one exception is a bare line
    /// break tag, which reports use inside table cells and which carries no attributes.
    fn raw_html(&mut self, html: &str) {
        if is_line_break_tag(html) {
            self.out.push_str("<br>");
        } else {
            push_escaped(&mut self.out, html);
        }
    }
}

impl Sink for HtmlWriter<'_> {
    fn text(&mut self, text: &str) {
        if self.in_code_block || self.link_depth > 0 || self.marker_urls.is_empty() {
            push_escaped(&mut self.out, text);
        } else {
            push_linked_markers(&mut self.out, text, &self.marker_urls);
        }
    }

    fn event(&mut self, event: &Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) => Sink::text(self, text),
            Event::Code(code) => {
                self.open("code", STYLE_CODE);
                push_escaped(&mut self.out, code);
                self.out.push_str("</code>");
            }
            Event::Html(html) | Event::InlineHtml(html) => self.raw_html(html),
            Event::InlineMath(text) | Event::DisplayMath(text) | Event::FootnoteReference(text) => {
                push_escaped(&mut self.out, text)
            }
            Event::SoftBreak => self.out.push('\n'),
            Event::HardBreak => self.out.push_str("<br>\n"),
            Event::Rule => {
                self.out.push_str("<hr style=\"");
                self.out.push_str(STYLE_HR);
                self.out.push_str("\">\n");
            }
            Event::TaskListMarker(done) => {
                self.out.push_str(if *done { "[x] " } else { "[ ] " });
            }
        }
    }
}

fn is_line_break_tag(html: &str) -> bool {
    let inner = html.trim();
    let Some(inner) = inner
        .strip_prefix('<')
        .and_then(|rest| rest.strip_suffix('>'))
    else {
        return false;
    };
    let inner = inner.trim_end_matches('/').trim_end();
    inner.eq_ignore_ascii_case("br")
}

/// Wraps a run of adjacent markers (`[1][5]`) so that it never breaks across lines, and so that
/// the raised superscripts do not push the line apart (`line-height` is inherited).
const MARKER_RUN_OPEN: &str = "<span style=\"white-space:nowrap;line-height:0;\">";
const MARKER_RUN_CLOSE: &str = "</span>";

/// Escapes `text` for HTML and turns `[n]` markers with a linkable source into superscript
/// links. Scans bytes: `[`, digits and `]` are ASCII, so every cut is on a character boundary.
fn push_linked_markers(out: &mut String, text: &str, marker_urls: &[Option<&str>]) {
    let bytes = text.as_bytes();
    let mut copied = 0;
    let mut index = 0;
    let mut in_run = false;
    while let Some(offset) = bytes[index..].iter().position(|&b| b == b'[') {
        let open = index + offset;
        let digits_end = bytes[open + 1..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .map_or(bytes.len(), |end| open + 1 + end);
        let digit_count = digits_end - open - 1;
        let closed = bytes.get(digits_end) == Some(&b']');
        if closed && (1..=4).contains(&digit_count) {
            let number = text[open + 1..digits_end].parse::<usize>().unwrap_or(0);
            let url = number
                .checked_sub(1)
                .and_then(|index| marker_urls.get(index).copied().flatten());
            if let Some(url) = url {
                let run_continues = in_run && open == copied;
                if !run_continues {
                    if in_run {
                        out.push_str(MARKER_RUN_CLOSE);
                    }
                    push_escaped(out, &text[copied..open]);
                    out.push_str(MARKER_RUN_OPEN);
                    in_run = true;
                }
                out.push_str("<sup><a href=\"");
                push_attr_url(out, url);
                out.push_str("\">");
                out.push_str(&text[open..=digits_end]);
                out.push_str("</a></sup>");
                copied = digits_end + 1;
            }
            index = digits_end + 1;
        } else {
            index = open + 1;
        }
    }
    if in_run {
        out.push_str(MARKER_RUN_CLOSE);
    }
    push_escaped(out, &text[copied..]);
}

/// Appends `text` with the five HTML-significant characters escaped, copying runs of ordinary
/// text in one go.
pub(crate) fn push_escaped(out: &mut String, text: &str) {
    let mut copied = 0;
    for (index, byte) in text.bytes().enumerate() {
        let entity = match byte {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#39;",
            _ => continue,
        };
        out.push_str(&text[copied..index]);
        out.push_str(entity);
        copied = index + 1;
    }
    out.push_str(&text[copied..]);
}

/// Appends a URL for a double-quoted `href`: characters that may not appear in a URL (spaces,
/// controls, quotes, angle brackets) are percent-encoded and `&` becomes `&amp;`.
fn push_attr_url(out: &mut String, url: &str) {
    let mut copied = 0;
    for (index, byte) in url.bytes().enumerate() {
        let needs_encoding =
            byte <= b' ' || matches!(byte, b'"' | b'<' | b'>' | b'\'' | b'`') || byte == 0x7f;
        if byte != b'&' && !needs_encoding {
            continue;
        }
        out.push_str(&url[copied..index]);
        if byte == b'&' {
            out.push_str("&amp;");
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
        copied = index + 1;
    }
    out.push_str(&url[copied..]);
}

fn push_markdown_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' | '[' | ']' | '*' | '_' | '`' | '<' | '>' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' | '\t' => out.push(' '),
            _ => out.push(c),
        }
    }
}

fn push_markdown_url(out: &mut String, url: &str) {
    for c in url.chars() {
        match c {
            '<' | '>' | ' ' | '\r' | '\n' | '\t' => {
                let _ = write!(out, "%{:02X}", c as u32);
            }
            _ => out.push(c),
        }
    }
}

/// Starts the e-mail document and opens the card that holds the body. The caller writes the
/// body, then [`close_report_card`], the extras and [`close_document`].
pub(crate) fn open_document(out: &mut String, kicker: &str, title: &str) {
    out.push_str(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<meta name=\"color-scheme\" content=\"light\">\n<title>",
    );
    push_collapsed_escaped(out, title);
    out.push_str("</title>\n</head>\n<body style=\"margin:0;padding:0;background:#f3f4f6;\">\n");
    let _ = write!(
        out,
        "<div style=\"max-width:720px;margin:0 auto;padding:28px 16px 36px;\
font-family:{FONT_STACK};font-size:16px;line-height:1.6;color:#1f2328;\
word-wrap:break-word;\">\n\
<p style=\"margin:0 0 6px;font-size:12px;font-weight:600;letter-spacing:0.06em;\
text-transform:uppercase;color:{MUTED};\">"
    );
    push_escaped(out, kicker);
    out.push_str(
        "</p>\n<h1 style=\"margin:0 0 20px;font-size:26px;line-height:1.3;font-weight:700;\
color:#1f2328;\">",
    );
    push_collapsed_escaped(out, title);
    let _ = write!(
        out,
        "</h1>\n<div style=\"background:#ffffff;border:1px solid {BORDER};border-radius:8px;\
padding:24px 28px 10px;\">\n"
    );
}

/// Closes the card opened by [`open_document`].
pub(crate) fn close_report_card(out: &mut String) {
    out.push_str("</div>\n");
}

/// Closes the document opened by [`open_document`].
pub(crate) fn close_document(out: &mut String) {
    out.push_str("</div>\n</body>\n</html>\n");
}

/// Escapes a one-line value whose line breaks and runs of spaces mean nothing (a question).
fn push_collapsed_escaped(out: &mut String, text: &str) {
    for (index, word) in text.split_whitespace().enumerate() {
        if index > 0 {
            out.push(' ');
        }
        push_escaped(out, word);
    }
}

fn push_html_sources(out: &mut String, sources: &[Source]) {
    if sources.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<h2 style=\"margin:28px 0 12px;font-size:18px;line-height:1.3;\">Sources</h2>\n\
<table role=\"presentation\" style=\"border-collapse:collapse;width:100%;font-size:14px;\
line-height:1.45;\">\n"
    );
    for source in sources {
        let _ = write!(
            out,
            "<tr><td style=\"width:1%;padding:0 10px 10px 0;vertical-align:top;white-space:nowrap;\
color:{MUTED};\">[{}]</td><td style=\"padding:0 0 10px;vertical-align:top;\
word-break:break-word;\">",
            source.number
        );
        if source.is_linkable() {
            out.push_str("<a href=\"");
            push_attr_url(out, &source.url);
            out.push_str("\" style=\"color:#0969da;\">");
            push_escaped(out, source.label());
            out.push_str("</a>");
        } else {
            push_escaped(out, source.label());
        }
        let host = source.host();
        if host.is_some() || source.date.is_some() {
            let _ = write!(out, "<br><span style=\"font-size:13px;color:{MUTED};\">");
            if let Some(host) = host {
                push_escaped(out, host);
            }
            if let Some(date) = &source.date {
                if host.is_some() {
                    out.push_str(" &middot; ");
                }
                push_escaped(out, date);
            }
            out.push_str("</span>");
        }
        out.push_str("</td></tr>\n");
    }
    out.push_str("</table>\n");
}

/// The footer facts in display order; each is a label and a value.
fn footer_facts(meta: &ReportMeta<'_>, mut each: impl FnMut(&str, &str)) {
    if !meta.job_id.is_empty() {
        each("Job", meta.job_id);
    }
    if let Some(model) = meta.model.filter(|model| !model.is_empty()) {
        each("Model", model);
    }
    if let Some(duration) = meta.duration {
        each("Duration", &format_duration(duration));
    }
    if let Some(cost) = meta
        .cost_usd
        .filter(|cost| cost.is_finite() && *cost >= 0.0)
    {
        each("Cost", &format_cost(cost));
    }
}

/// The footer line under a report: it says who sent it and that the sources are the model's.
const REPORT_NOTE: &str = "Sent by research-relay. The sources were chosen by the research \
model; check them before relying on the report.";

/// Writes the footer: the job facts, then `note`.
pub(crate) fn push_html_footer(out: &mut String, meta: &ReportMeta<'_>, note: &str) {
    let _ = write!(
        out,
        "<p style=\"margin:24px 0 0;padding-top:12px;border-top:1px solid {BORDER};\
font-size:12px;line-height:1.6;color:{MUTED};\">"
    );
    let mut first = true;
    footer_facts(meta, |label, value| {
        if !first {
            out.push_str(" &middot; ");
        }
        first = false;
        out.push_str(label);
        out.push_str(": ");
        push_escaped(out, value);
    });
    if !first {
        out.push_str("<br>");
    }
    push_escaped(out, note);
    out.push_str("</p>\n");
}

/// `4 min 12 s`, `1 h 03 min`, `42 s`: precise enough to compare runs, short enough to read.
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs >= 3600 {
        format!("{} h {:02} min", secs / 3600, (secs % 3600) / 60)
    } else if secs >= 60 {
        format!("{} min {} s", secs / 60, secs % 60)
    } else {
        format!("{secs} s")
    }
}

/// US dollars with two decimals, or up to four for amounts under ten cents, so a request that
/// cost half a cent does not read as free.
pub fn format_cost(cost_usd: f64) -> String {
    if cost_usd >= 0.1 || cost_usd == 0.0 {
        return format!("${cost_usd:.2}");
    }
    let mut text = format!("${cost_usd:.4}");
    while text.ends_with('0') && text.len() > "$0.00".len() {
        text.pop();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Plain text

#[derive(Debug, Clone, Copy)]
enum Container {
    Quote,
    Item { indent: usize },
}

/// Writes readable plain text from Markdown events. Lines are built lazily so that quote and
/// list prefixes are written only in front of real content.
struct TextWriter {
    out: String,
    containers: Vec<Container>,
    /// Next number of each open list; `None` for bullet lists.
    lists: Vec<Option<u64>>,
    at_line_start: bool,
    pending_blank: bool,
    /// A quote or list item has just opened: its first block follows without a blank line (for an
    /// item, on the bullet's line).
    container_fresh: bool,
    in_code_block: bool,
    in_table: bool,
    cell_index: usize,
    heading: Option<(HeadingLevel, usize)>,
    links: Vec<(String, usize)>,
}

impl TextWriter {
    fn new(out: String) -> Self {
        Self {
            out,
            containers: Vec::new(),
            lists: Vec::new(),
            at_line_start: true,
            pending_blank: false,
            container_fresh: false,
            in_code_block: false,
            in_table: false,
            cell_index: 0,
            heading: None,
            links: Vec::new(),
        }
    }

    fn finish(mut self) -> String {
        let trimmed = self.out.trim_end().len();
        self.out.truncate(trimmed);
        if !self.out.is_empty() {
            self.out.push('\n');
        }
        self.out
    }

    fn push_prefix(&mut self, blank_line: bool) {
        let start = self.out.len();
        for container in &self.containers {
            match container {
                Container::Quote => self.out.push_str("> "),
                Container::Item { indent } => {
                    self.out.extend(std::iter::repeat_n(' ', *indent));
                }
            }
        }
        if blank_line {
            let trimmed = self.out[start..].trim_end().len();
            self.out.truncate(start + trimmed);
        }
    }

    /// Makes sure the next write starts a line with its prefix (after a blank line if one is
    /// pending).
    fn start_line(&mut self) {
        self.end_line();
        self.flush_gap();
        self.push_prefix(false);
        self.at_line_start = false;
    }

    /// Writes a pending blank line now, with the prefixes open at this point (a container about
    /// to open must not put its marker on the line that separates it from what came before).
    fn flush_gap(&mut self) {
        if self.pending_blank {
            self.pending_blank = false;
            if !self.out.is_empty() {
                self.push_prefix(true);
                self.out.push('\n');
            }
        }
    }

    fn end_line(&mut self) {
        if !self.at_line_start {
            self.out.push('\n');
            self.at_line_start = true;
        }
    }

    /// Asks for a blank line before the next block, unless a container has just opened.
    fn block_gap(&mut self) {
        if self.container_fresh {
            return;
        }
        self.end_line();
        self.pending_blank = true;
    }

    fn write(&mut self, text: &str) {
        for (index, line) in text.split('\n').enumerate() {
            if index > 0 {
                self.end_line();
            }
            if line.is_empty() {
                continue;
            }
            if self.at_line_start {
                self.start_line();
                if self.in_code_block {
                    self.out.push_str("    ");
                }
            }
            self.container_fresh = false;
            self.out.push_str(line);
        }
    }

    fn ensure_started(&mut self) {
        if self.at_line_start {
            self.start_line();
        }
    }

    fn start(&mut self, tag: &Tag<'_>) {
        match tag {
            Tag::Paragraph | Tag::HtmlBlock => self.block_gap(),
            Tag::Heading { level, .. } => {
                self.block_gap();
                self.container_fresh = false;
                self.start_line();
                self.heading = Some((*level, self.out.len()));
            }
            Tag::BlockQuote(_) => {
                self.block_gap();
                self.flush_gap();
                self.containers.push(Container::Quote);
                self.container_fresh = true;
            }
            Tag::CodeBlock(_) => {
                self.block_gap();
                self.in_code_block = true;
            }
            Tag::List(first) => {
                let nested = self
                    .containers
                    .iter()
                    .any(|container| matches!(container, Container::Item { .. }));
                if nested {
                    self.container_fresh = false;
                    self.end_line();
                } else {
                    self.block_gap();
                }
                self.lists.push(*first);
            }
            Tag::Item => {
                self.container_fresh = false;
                self.end_line();
                self.start_line();
                let bullet_start = self.out.len();
                match self.lists.last_mut() {
                    Some(Some(number)) => {
                        let _ = write!(self.out, "{number}. ");
                        *number += 1;
                    }
                    _ => self.out.push_str("- "),
                }
                let indent = self.out.len() - bullet_start;
                self.containers.push(Container::Item { indent });
                self.container_fresh = true;
            }
            Tag::Table(_) => {
                self.block_gap();
                self.in_table = true;
            }
            Tag::TableHead | Tag::TableRow => {
                self.end_line();
                self.start_line();
                self.cell_index = 0;
            }
            Tag::TableCell => {
                if self.cell_index > 0 {
                    self.out.push_str(" | ");
                }
                self.cell_index += 1;
            }
            Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. } => {
                self.ensure_started();
                self.links.push((dest_url.to_string(), self.out.len()));
            }
            // Struck-out text often says the opposite of what follows it; keep the marks.
            Tag::Strikethrough => {
                self.ensure_started();
                self.container_fresh = false;
                self.out.push_str("~~");
            }
            Tag::Emphasis
            | Tag::Strong
            | Tag::Superscript
            | Tag::Subscript
            | Tag::FootnoteDefinition(_)
            | Tag::DefinitionList
            | Tag::DefinitionListTitle
            | Tag::DefinitionListDefinition
            | Tag::MetadataBlock(_) => {}
        }
    }

    fn end(&mut self, tag: &TagEnd) {
        match tag {
            TagEnd::Paragraph | TagEnd::HtmlBlock => self.block_gap(),
            TagEnd::Heading(_) => {
                if let Some((level, start)) = self.heading.take() {
                    let underline = match level {
                        HeadingLevel::H1 => Some('='),
                        HeadingLevel::H2 => Some('-'),
                        _ => None,
                    };
                    if let Some(underline) = underline {
                        let width = display_width(&self.out[start..]).max(3);
                        self.end_line();
                        self.start_line();
                        self.out.extend(std::iter::repeat_n(underline, width));
                    }
                }
                self.block_gap();
            }
            TagEnd::BlockQuote(_) => {
                self.end_line();
                self.containers.pop();
                self.block_gap();
            }
            TagEnd::CodeBlock => {
                self.in_code_block = false;
                self.block_gap();
            }
            TagEnd::List(_) => {
                self.lists.pop();
                let nested = self
                    .containers
                    .iter()
                    .any(|container| matches!(container, Container::Item { .. }));
                if nested {
                    self.end_line();
                } else {
                    self.block_gap();
                }
            }
            TagEnd::Item => {
                self.container_fresh = false;
                self.end_line();
                self.containers.pop();
            }
            TagEnd::Table => {
                self.in_table = false;
                self.block_gap();
            }
            TagEnd::TableHead | TagEnd::TableRow => self.end_line(),
            TagEnd::Link | TagEnd::Image => {
                if let Some((url, start)) = self.links.pop() {
                    let shown = self.out.get(start..).unwrap_or_default();
                    if is_web_url(&url) && shown.trim() != url {
                        if shown.is_empty() {
                            self.out.push_str(&url);
                        } else {
                            self.out.push_str(" (");
                            self.out.push_str(&url);
                            self.out.push(')');
                        }
                    }
                }
            }
            TagEnd::Strikethrough => self.out.push_str("~~"),
            TagEnd::TableCell
            | TagEnd::Emphasis
            | TagEnd::Strong
            | TagEnd::Superscript
            | TagEnd::Subscript
            | TagEnd::FootnoteDefinition
            | TagEnd::DefinitionList
            | TagEnd::DefinitionListTitle
            | TagEnd::DefinitionListDefinition
            | TagEnd::MetadataBlock(_) => {}
        }
    }
}

impl Sink for TextWriter {
    fn text(&mut self, text: &str) {
        if self.in_table {
            self.ensure_started();
            self.container_fresh = false;
            for (index, part) in text.split('\n').enumerate() {
                if index > 0 {
                    self.out.push(' ');
                }
                self.out.push_str(part);
            }
        } else {
            self.write(text);
        }
    }

    fn event(&mut self, event: &Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text)
            | Event::Code(text)
            | Event::InlineMath(text)
            | Event::DisplayMath(text)
            | Event::FootnoteReference(text) => Sink::text(self, text),
            Event::Html(html) | Event::InlineHtml(html) => {
                if is_line_break_tag(html) {
                    Sink::text(self, if self.in_table { " " } else { "\n" });
                } else {
                    Sink::text(self, html);
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                Sink::text(self, if self.in_table { " " } else { "\n" });
            }
            Event::Rule => {
                self.block_gap();
                self.start_line();
                self.out
                    .push_str("----------------------------------------");
                self.block_gap();
            }
            Event::TaskListMarker(done) => Sink::text(self, if *done { "[x] " } else { "[ ] " }),
        }
    }
}

fn push_text_title(out: &mut String, question: &str) {
    let start = out.len();
    for (index, word) in question.split_whitespace().enumerate() {
        if index > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
    let width = display_width(&out[start..]).clamp(3, 72);
    out.push('\n');
    out.extend(std::iter::repeat_n('=', width));
    out.push('\n');
}

/// Columns a line takes in a monospaced font, so that underlines match the text above them:
/// East Asian wide characters and most emoji take two, joiners and combining marks none.
fn display_width(text: &str) -> usize {
    text.chars()
        .map(|c| match u32::from(c) {
            0x0300..=0x036F | 0x200B..=0x200F | 0xFE00..=0xFE0F | 0x1F3FB..=0x1F3FF => 0,
            0x1100..=0x115F
            | 0x2E80..=0x303E
            | 0x3041..=0x33FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xA000..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x1F300..=0x1F64F
            | 0x1F900..=0x1F9FF
            | 0x20000..=0x3FFFD => 2,
            _ => 1,
        })
        .sum()
}

fn push_text_sources(out: &mut String, sources: &[Source]) {
    if sources.is_empty() {
        return;
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str("Sources\n-------\n");
    for source in sources {
        let _ = write!(out, "[{}] ", source.number);
        for (index, word) in source.label().split_whitespace().enumerate() {
            if index > 0 {
                out.push(' ');
            }
            out.push_str(word);
        }
        if let Some(date) = &source.date {
            out.push_str(" (");
            out.push_str(date);
            out.push(')');
        }
        if source.title.is_some() {
            out.push_str("\n    ");
            out.push_str(&source.url);
        }
        out.push('\n');
    }
}

pub(crate) fn push_text_footer(out: &mut String, meta: &ReportMeta<'_>) {
    out.push_str("\n-- \n");
    footer_facts(meta, |label, value| {
        out.push_str(label);
        out.push_str(": ");
        out.push_str(value);
        out.push('\n');
    });
    out.push_str("Sent by research-relay.\n");
}
