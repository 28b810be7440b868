//! Raw MIME messages for the three e-mails a job can produce: the report, a failure notice and
//! an expiry notice.
//!
//! SES v2 sends these bytes as they are, so everything a mail server checks is settled here:
//! header lines are ASCII (non-ASCII text goes into RFC 2047 encoded words), every line ends in
//! CRLF and stays far below the 998-octet limit (bodies are base64 in 76-character lines), and
//! boundaries cannot collide with content (`=_` never occurs in base64 or in our part headers).
//! Time, Message-ID and boundaries are inputs, so the same job gives the same bytes in tests.
//!
//! The Message-ID derived from the job id is stable: if a crash makes the mailer send a report
//! twice, mail clients that deduplicate on Message-ID show it once.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::report::{self, ReportMeta, Source};

/// Longest question, in characters and including the ellipsis, that a subject carries.
pub const SUBJECT_QUESTION_CHARS: usize = 80;

/// The provider's failure text is shown in full up to this many characters.
const REASON_CHARS: usize = 2000;

/// Line limit for header lines holding encoded words (RFC 2047 section 2).
const ENCODED_LINE: usize = 76;
/// Recommended header line limit (RFC 5322 section 2.1.1).
const PLAIN_LINE: usize = 78;
/// Base64 input per 76-character output line.
const BASE64_LINE_INPUT: usize = 57;

/// Why a message could not be composed. Messages name the field, never its value, because the
/// values are e-mail addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    /// An address is not a plain ASCII `local@domain` (optionally with a display name).
    #[error("the {field} address is not a valid ASCII mailbox")]
    InvalidAddress {
        /// `from` or `to`.
        field: &'static str,
    },
    /// The job id must be 1-128 characters of `A-Z a-z 0-9 . _ -`: it goes into a header, a
    /// Message-ID and a file name.
    #[error("the job id is empty, too long or holds characters other than A-Z a-z 0-9 . _ -")]
    InvalidJobId,
    /// A given Message-ID is not `left@right` in visible ASCII.
    #[error("the message id is not of the form left@right in visible ASCII")]
    InvalidMessageId,
    /// The answer is empty once the think block is removed; send a failure notice instead.
    #[error("the report is empty")]
    EmptyReport,
}

/// Who sends and receives a message, and the values that would otherwise make it random.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// `reports@example.com` or `Research Relay <reports@example.com>`; a non-ASCII display
    /// name is encoded, the address itself must be ASCII.
    pub from: &'a str,
    /// The recipient, in the same forms as `from`.
    pub to: &'a str,
    /// The `Date` header, in seconds since the Unix epoch.
    pub date_unix_secs: i64,
    /// A Message-ID to use (with or without angle brackets); `None` derives one from the job id
    /// and the sender's domain.
    pub message_id: Option<&'a str>,
    /// Letters and digits that make the MIME boundaries unique; `None` draws a random one.
    /// Tests pass a fixed value to get the same bytes every time.
    pub boundary_token: Option<&'a str>,
}

/// The report e-mail: both renderings of the report plus the Markdown as an attachment.
#[derive(Debug, Clone, Copy)]
pub struct ReportEmail<'a> {
    /// Sender, recipient, date and the values that make the message deterministic.
    pub envelope: Envelope<'a>,
    /// The question, used for the subject and the title.
    pub question: &'a str,
    /// Our job id.
    pub job_id: &'a str,
    /// The model that wrote the report, when known.
    pub model: Option<&'a str>,
    /// How long the research ran, when known.
    pub duration: Option<Duration>,
    /// What the provider charged in USD, when it said.
    pub cost_usd: Option<f64>,
    /// The report Markdown with the think block already removed (see
    /// [`report::strip_think`]).
    pub answer_markdown: &'a str,
    /// The sources, numbered as the report's markers count (see [`report::sources`]).
    pub sources: &'a [Source],
}

/// The notice sent when the provider reports that a job failed.
#[derive(Debug, Clone, Copy)]
pub struct FailureEmail<'a> {
    /// Sender, recipient, date and the values that make the message deterministic.
    pub envelope: Envelope<'a>,
    /// The question that could not be answered.
    pub question: &'a str,
    /// Our job id.
    pub job_id: &'a str,
    /// The provider's explanation, when it gave one.
    pub reason: Option<&'a str>,
}

/// The notice sent when a finished result could no longer be fetched: the provider keeps
/// results for 7 days and the job was not collected in time.
#[derive(Debug, Clone, Copy)]
pub struct ExpiredEmail<'a> {
    /// Sender, recipient, date and the values that make the message deterministic.
    pub envelope: Envelope<'a>,
    /// The question whose result was lost.
    pub question: &'a str,
    /// Our job id.
    pub job_id: &'a str,
}

/// The subject of a report e-mail: `Research report: <question>`, shortened so that inbox
/// lists show the question rather than a wrapped fragment.
pub fn subject_for(question: &str) -> String {
    prefixed_subject("Research report", question)
}

/// The subject of a failure notice: `Research failed: <question>`.
pub fn failure_subject(question: &str) -> String {
    prefixed_subject("Research failed", question)
}

/// The subject of an expiry notice: `Research expired: <question>`.
pub fn expired_subject(question: &str) -> String {
    prefixed_subject("Research expired", question)
}

fn prefixed_subject(prefix: &str, question: &str) -> String {
    let short = shorten_question(question, SUBJECT_QUESTION_CHARS);
    if short.is_empty() {
        return prefix.to_owned();
    }
    let mut subject = String::with_capacity(prefix.len() + 2 + short.len());
    subject.push_str(prefix);
    subject.push_str(": ");
    subject.push_str(&short);
    subject
}

/// Collapses whitespace (and drops control characters) and shortens `text` to at most
/// `max_chars` characters including a trailing `…`.
///
/// The cut falls on a word boundary when there is one in the last quarter; text without spaces
/// (Chinese, Japanese, long URLs) is cut between characters, never inside one, and not between
/// an emoji and the joiner or modifier that belongs to it.
pub fn shorten_question(text: &str, max_chars: usize) -> String {
    let mut collapsed = String::with_capacity(text.len().min(4 * max_chars + 8));
    let mut count = 0;
    for word in text.split_whitespace() {
        let mut chars = word.chars().filter(|c| !c.is_control()).peekable();
        if chars.peek().is_none() {
            continue;
        }
        if count > 0 {
            collapsed.push(' ');
            count += 1;
        }
        for c in chars {
            collapsed.push(c);
            count += 1;
        }
        if count > max_chars {
            break;
        }
    }
    if count <= max_chars || max_chars == 0 {
        return if max_chars == 0 {
            String::new()
        } else {
            collapsed
        };
    }
    let keep = max_chars - 1;
    let limit = collapsed
        .char_indices()
        .nth(keep)
        .map_or(collapsed.len(), |(index, _)| index);
    let cut = if collapsed[limit..].starts_with(' ') {
        limit
    } else {
        let head = &collapsed[..limit];
        match head.rfind(' ') {
            Some(space) if head[..space].chars().count() >= keep - keep / 4 => space,
            _ => cluster_safe_cut(&collapsed, limit),
        }
    };
    let head = collapsed[..cut].trim_end_matches([' ', ',', ';', ':', '-', '(', '[']);
    let mut short = String::with_capacity(head.len() + 3);
    short.push_str(head);
    short.push('…');
    short
}

/// Whether a character belongs to the character before it (joiners, variation selectors, skin
/// tone modifiers, combining marks, tag characters), so a cut must not fall right before it.
fn extends_previous(c: char) -> bool {
    matches!(c,
        '\u{200D}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{1F3FB}'..='\u{1F3FF}'
        | '\u{0300}'..='\u{036F}'
        | '\u{1AB0}'..='\u{1AFF}'
        | '\u{20D0}'..='\u{20FF}'
        | '\u{E0020}'..='\u{E007F}')
}

/// Moves a cut at byte `at` back until it does not split a joined character sequence; keeps
/// `at` when the whole prefix is one sequence.
fn cluster_safe_cut(text: &str, at: usize) -> usize {
    let mut cut = at;
    while cut > 0 {
        let next_extends = text[cut..].chars().next().is_some_and(extends_previous);
        let after_joiner = text[..cut].ends_with('\u{200D}');
        if !next_extends && !after_joiner {
            return cut;
        }
        cut = text[..cut]
            .char_indices()
            .next_back()
            .map_or(0, |(index, _)| index);
    }
    at
}

/// Draws a fresh boundary token for a production message.
pub fn new_boundary_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Formats a time as an RFC 5322 date in UTC, e.g. `Fri, 04 Dec 2026 16:20:45 +0000`. Times
/// before 1970 or after 9999 are clamped so the year keeps four digits.
pub fn format_date(unix_secs: i64) -> String {
    const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = unix_secs.clamp(0, 253_402_300_799);
    let days = secs.div_euclid(86_400);
    let second_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = WEEKDAYS[usize::try_from((days + 4).rem_euclid(7)).unwrap_or(0)];
    let month = MONTHS[usize::try_from(month - 1).unwrap_or(0)];
    format!(
        "{weekday}, {day:02} {month} {year:04} {:02}:{:02}:{:02} +0000",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// Year, month (1-12) and day of a day count since 1970-01-01 in the proleptic Gregorian
/// calendar, computed over 400-year eras.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Composes the report e-mail: `multipart/mixed` holding a `multipart/alternative` (plain text,
/// then HTML) and the report as `report-<job id>.md`.
///
/// Refuses an empty report: a job that produced only reasoning gets a failure notice instead.
pub fn compose_report(email: &ReportEmail<'_>) -> Result<Vec<u8>, ComposeError> {
    if email.answer_markdown.trim().is_empty() {
        return Err(ComposeError::EmptyReport);
    }
    let meta = ReportMeta {
        question: email.question,
        job_id: email.job_id,
        model: email.model,
        duration: email.duration,
        cost_usd: email.cost_usd,
    };
    let rendered = report::render_report(&meta, email.answer_markdown, email.sources);
    let attachment = report::render_markdown_attachment(email.answer_markdown, email.sources);
    let parts = Parts {
        text: &rendered.text,
        html: &rendered.html,
        attachment: Some(&attachment),
    };
    compose(
        &email.envelope,
        email.job_id,
        "report",
        &subject_for(email.question),
        &parts,
    )
}

/// Composes the failure notice (`multipart/alternative`) with the provider's reason and the
/// job id, so the owner knows the job ended and support can find it.
pub fn compose_failure(email: &FailureEmail<'_>) -> Result<Vec<u8>, ComposeError> {
    let reason = email
        .reason
        .map(str::trim)
        .filter(|reason| !reason.is_empty())
        .map(|reason| shorten_question(reason, REASON_CHARS));
    let reason = reason.as_deref().unwrap_or("The provider gave no reason.");
    let lead = "The research for this question could not be completed. \
The research provider gave this reason:";
    let advice = "You can submit the question again; a new job starts from scratch.";
    let notice = Notice {
        kicker: "Research failed",
        question: email.question,
        job_id: email.job_id,
        paragraphs: &[lead],
        quote: Some(reason),
        closing: &[advice],
    };
    let (text, html) = notice.render();
    let parts = Parts {
        text: &text,
        html: &html,
        attachment: None,
    };
    compose(
        &email.envelope,
        email.job_id,
        "failed",
        &failure_subject(email.question),
        &parts,
    )
}

/// Composes the expiry notice (`multipart/alternative`): the job finished but its result could
/// not be fetched within the provider's 7-day retention, so there is no report to send.
pub fn compose_expired(email: &ExpiredEmail<'_>) -> Result<Vec<u8>, ComposeError> {
    let lead = "The research for this question finished, but its result could not be fetched \
from the research provider within the 7 days the provider keeps results, so there is no \
report to send.";
    let advice = "Submit the question again to run a new job.";
    let notice = Notice {
        kicker: "Research expired",
        question: email.question,
        job_id: email.job_id,
        paragraphs: &[lead, advice],
        quote: None,
        closing: &[],
    };
    let (text, html) = notice.render();
    let parts = Parts {
        text: &text,
        html: &html,
        attachment: None,
    };
    compose(
        &email.envelope,
        email.job_id,
        "expired",
        &expired_subject(email.question),
        &parts,
    )
}

/// A short notice in the same layout as the report.
struct Notice<'a> {
    kicker: &'a str,
    question: &'a str,
    job_id: &'a str,
    paragraphs: &'a [&'a str],
    quote: Option<&'a str>,
    closing: &'a [&'a str],
}

impl Notice<'_> {
    fn render(&self) -> (String, String) {
        let meta = ReportMeta {
            question: self.question,
            job_id: self.job_id,
            ..ReportMeta::default()
        };

        let mut text = String::with_capacity(1024);
        text.push_str(self.kicker);
        text.push('\n');
        text.push_str(&"=".repeat(self.kicker.chars().count()));
        text.push_str("\n\nQuestion: ");
        push_collapsed(&mut text, self.question);
        text.push_str("\n\n");
        for paragraph in self.paragraphs {
            text.push_str(paragraph);
            text.push_str("\n\n");
        }
        if let Some(quote) = self.quote {
            for line in quote.lines() {
                text.push_str("    ");
                text.push_str(line.trim_end());
                text.push('\n');
            }
            text.push('\n');
        }
        for paragraph in self.closing {
            text.push_str(paragraph);
            text.push_str("\n\n");
        }
        text.truncate(text.trim_end().len());
        text.push('\n');
        report::push_text_footer(&mut text, &meta);

        let mut html = String::with_capacity(4096);
        report::open_document(&mut html, self.kicker, self.question);
        for paragraph in self.paragraphs {
            html.push_str("<p style=\"margin:0 0 14px;\">");
            report::push_escaped(&mut html, paragraph);
            html.push_str("</p>\n");
        }
        if let Some(quote) = self.quote {
            html.push_str(
                "<blockquote style=\"margin:0 0 14px;padding:8px 14px;border-left:4px solid \
#cf222e;background:#fff5f5;white-space:pre-wrap;\">",
            );
            report::push_escaped(&mut html, quote);
            html.push_str("</blockquote>\n");
        }
        for paragraph in self.closing {
            html.push_str("<p style=\"margin:0 0 14px;\">");
            report::push_escaped(&mut html, paragraph);
            html.push_str("</p>\n");
        }
        report::close_report_card(&mut html);
        report::push_html_footer(&mut html, &meta, "Sent by research-relay.");
        report::close_document(&mut html);
        (text, html)
    }
}

fn push_collapsed(out: &mut String, text: &str) {
    for (index, word) in text.split_whitespace().enumerate() {
        if index > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
}

/// The bodies of a message; with an attachment the message is `multipart/mixed`.
struct Parts<'a> {
    text: &'a str,
    html: &'a str,
    attachment: Option<&'a str>,
}

/// A parsed `Name <local@domain>` or bare `local@domain`.
struct Mailbox<'a> {
    name: Option<String>,
    address: &'a str,
}

impl<'a> Mailbox<'a> {
    fn parse(text: &'a str, field: &'static str) -> Result<Self, ComposeError> {
        let invalid = ComposeError::InvalidAddress { field };
        let text = text.trim();
        let (name, address) = match text
            .strip_suffix('>')
            .and_then(|head| head.rsplit_once('<'))
        {
            Some((name, address)) => (Some(name), address.trim()),
            None => (None, text),
        };
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Err(invalid);
        };
        let plain = |part: &str| {
            !part.is_empty()
                && part.bytes().all(|b| {
                    b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'(' | b')' | b',' | b';')
                })
        };
        if address.len() > 254 || !plain(local) || !plain(domain) || domain.contains('@') {
            return Err(invalid);
        }
        let name = name.map(clean_display_name).filter(|name| !name.is_empty());
        Ok(Self { name, address })
    }

    fn domain(&self) -> &'a str {
        self.address
            .rsplit_once('@')
            .map_or("localhost", |(_, domain)| domain)
    }
}

/// A display name with surrounding quotes removed, whitespace collapsed and control characters
/// dropped (so a name can never end a header line).
fn clean_display_name(name: &str) -> String {
    let name = name.trim();
    let name = name
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(name);
    let mut clean = String::with_capacity(name.len());
    let mut escaped = false;
    for word in name.split_whitespace() {
        if !clean.is_empty() {
            clean.push(' ');
        }
        for c in word.chars().filter(|c| !c.is_control()) {
            if c == '\\' && !escaped {
                escaped = true;
                continue;
            }
            escaped = false;
            clean.push(c);
        }
    }
    clean
}

fn validate_job_id(job_id: &str) -> Result<(), ComposeError> {
    let valid = (1..=128).contains(&job_id.len())
        && job_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ComposeError::InvalidJobId)
    }
}

fn message_id(
    given: Option<&str>,
    kind: &str,
    job_id: &str,
    domain: &str,
) -> Result<String, ComposeError> {
    let Some(given) = given else {
        return Ok(format!("<{kind}.{job_id}@{domain}>"));
    };
    let inner = given.trim();
    let inner = inner
        .strip_prefix('<')
        .and_then(|rest| rest.strip_suffix('>'))
        .unwrap_or(inner);
    let valid = inner.len() <= 250
        && inner.split_once('@').is_some_and(|(left, right)| {
            !left.is_empty() && !right.is_empty() && !right.contains('@')
        })
        && inner
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>'));
    if valid {
        Ok(format!("<{inner}>"))
    } else {
        Err(ComposeError::InvalidMessageId)
    }
}

fn boundary_token(given: Option<&str>) -> String {
    let token: String = given
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(40)
        .collect();
    if token.is_empty() {
        new_boundary_token()
    } else {
        token
    }
}

fn compose(
    envelope: &Envelope<'_>,
    job_id: &str,
    kind: &str,
    subject: &str,
    parts: &Parts<'_>,
) -> Result<Vec<u8>, ComposeError> {
    validate_job_id(job_id)?;
    let from = Mailbox::parse(envelope.from, "from")?;
    let to = Mailbox::parse(envelope.to, "to")?;
    let message_id = message_id(envelope.message_id, kind, job_id, from.domain())?;
    let token = boundary_token(envelope.boundary_token);
    let alternative = format!("=_rr_alt_{token}");
    let mixed = format!("=_rr_mix_{token}");

    let body_len = parts.text.len() + parts.html.len() + parts.attachment.map_or(0, str::len);
    let mut head = String::with_capacity(1024);
    push_plain_header(&mut head, "Date", &format_date(envelope.date_unix_secs));
    push_mailbox_header(&mut head, "From", &from);
    push_mailbox_header(&mut head, "To", &to);
    push_text_header(&mut head, "Subject", subject);
    push_plain_header(&mut head, "Message-ID", &message_id);
    push_plain_header(&mut head, "MIME-Version", "1.0");
    push_plain_header(&mut head, "X-Research-Relay-Job", job_id);
    push_plain_header(&mut head, "Auto-Submitted", "auto-generated");

    // Base64 grows each body by 4/3 plus a CRLF per 57 input bytes; CRLF line ends in the
    // bodies add a little more.
    let mut out = Vec::with_capacity(head.len() + body_len / 57 * 78 + body_len / 20 + 2048);
    out.extend_from_slice(head.as_bytes());
    match parts.attachment {
        Some(markdown) => {
            push_multipart_type(&mut out, "mixed", &mixed);
            push_boundary(&mut out, &mixed);
            push_multipart_type(&mut out, "alternative", &alternative);
            push_alternative(&mut out, &alternative, parts);
            push_boundary(&mut out, &mixed);
            let file_name = format!("report-{job_id}.md");
            let part_head = format!(
                "Content-Type: text/markdown; charset=utf-8; name=\"{file_name}\"\r\n\
Content-Disposition: attachment; filename=\"{file_name}\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n"
            );
            out.extend_from_slice(part_head.as_bytes());
            push_base64_text(&mut out, markdown);
            push_closing_boundary(&mut out, &mixed);
        }
        None => {
            push_multipart_type(&mut out, "alternative", &alternative);
            push_alternative(&mut out, &alternative, parts);
        }
    }
    Ok(out)
}

fn push_alternative(out: &mut Vec<u8>, boundary: &str, parts: &Parts<'_>) {
    push_boundary(out, boundary);
    out.extend_from_slice(
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    push_base64_text(out, parts.text);
    push_boundary(out, boundary);
    out.extend_from_slice(
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    push_base64_text(out, parts.html);
    push_closing_boundary(out, boundary);
}

/// The `Content-Type` of a multipart entity and the blank line that ends its header.
fn push_multipart_type(out: &mut Vec<u8>, subtype: &str, boundary: &str) {
    out.extend_from_slice(b"Content-Type: multipart/");
    out.extend_from_slice(subtype.as_bytes());
    out.extend_from_slice(b";\r\n boundary=\"");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"\"\r\n\r\n");
}

fn push_boundary(out: &mut Vec<u8>, boundary: &str) {
    out.extend_from_slice(b"--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn push_closing_boundary(out: &mut Vec<u8>, boundary: &str) {
    out.extend_from_slice(b"--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");
}

/// A header whose value is ASCII we built ourselves and short enough for one line.
fn push_plain_header(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push_str("\r\n");
}

fn push_mailbox_header(out: &mut String, name: &str, mailbox: &Mailbox<'_>) {
    let mut line = HeaderLine::start(out, name);
    if let Some(display) = &mailbox.name {
        if needs_encoding(display) || display.len() > 60 {
            line.encoded_words(display);
        } else if display.bytes().any(|b| {
            matches!(
                b,
                b'(' | b')'
                    | b'<'
                    | b'>'
                    | b'['
                    | b']'
                    | b':'
                    | b';'
                    | b'@'
                    | b'\\'
                    | b','
                    | b'.'
                    | b'"'
            )
        }) {
            let mut quoted = String::with_capacity(display.len() + 4);
            quoted.push('"');
            for c in display.chars() {
                if matches!(c, '"' | '\\') {
                    quoted.push('\\');
                }
                quoted.push(c);
            }
            quoted.push('"');
            line.token(&quoted, ENCODED_LINE);
        } else {
            for word in display.split(' ') {
                line.token(word, ENCODED_LINE);
            }
        }
        let mut address = String::with_capacity(mailbox.address.len() + 2);
        address.push('<');
        address.push_str(mailbox.address);
        address.push('>');
        line.token(&address, ENCODED_LINE);
    } else {
        line.token(mailbox.address, ENCODED_LINE);
    }
    line.end();
}

/// An unstructured header (the subject): folded at spaces when it is plain ASCII, otherwise
/// written as encoded words.
fn push_text_header(out: &mut String, name: &str, text: &str) {
    let mut line = HeaderLine::start(out, name);
    if needs_encoding(text) || text.split(' ').any(|word| word.len() > 60) {
        line.encoded_words(text);
    } else {
        for word in text.split(' ').filter(|word| !word.is_empty()) {
            line.token(word, PLAIN_LINE);
        }
    }
    line.end();
}

/// Whether text cannot go into a header as it is: anything outside printable ASCII, or a
/// sequence a reader would decode as an encoded word.
fn needs_encoding(text: &str) -> bool {
    text.bytes().any(|b| !(b' '..=b'~').contains(&b)) || text.contains("=?")
}

/// One header field being written, folding before a token that would make the line too long.
struct HeaderLine<'o> {
    out: &'o mut String,
    line_len: usize,
    tokens: usize,
}

impl<'o> HeaderLine<'o> {
    fn start(out: &'o mut String, name: &str) -> Self {
        out.push_str(name);
        out.push(':');
        Self {
            out,
            line_len: name.len() + 1,
            tokens: 0,
        }
    }

    /// Appends a space and `token`, or a fold and `token` when the line would pass `limit`.
    fn token(&mut self, token: &str, limit: usize) {
        if self.tokens > 0 && self.line_len + 1 + token.len() > limit {
            self.out.push_str("\r\n");
            self.line_len = 0;
        }
        self.out.push(' ');
        self.out.push_str(token);
        self.line_len += 1 + token.len();
        self.tokens += 1;
    }

    /// Writes `text` as `=?UTF-8?B?...?=` words, each at most 75 characters, on lines of at
    /// most 76, splitting only between characters.
    fn encoded_words(&mut self, text: &str) {
        const OVERHEAD: usize = "=?UTF-8?B??=".len();
        const MAX_WORD: usize = 75;
        let mut rest = text;
        while !rest.is_empty() {
            let mut room = ENCODED_LINE.saturating_sub(self.line_len + 1).min(MAX_WORD);
            if room < OVERHEAD + 8 && self.tokens > 0 {
                self.out.push_str("\r\n");
                self.line_len = 0;
                room = MAX_WORD;
            }
            let max_bytes = (room.saturating_sub(OVERHEAD) / 4 * 3).max(4);
            let cut = encoded_word_cut(rest, max_bytes);
            let (chunk, tail) = rest.split_at(cut);
            let mut word = String::with_capacity(MAX_WORD);
            word.push_str("=?UTF-8?B?");
            STANDARD.encode_string(chunk.as_bytes(), &mut word);
            word.push_str("?=");
            self.token(&word, ENCODED_LINE);
            rest = tail;
        }
    }

    fn end(self) {
        self.out.push_str("\r\n");
    }
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends between characters
/// (and, where possible, not inside a joined emoji); at least one character.
fn encoded_word_cut(text: &str, max_bytes: usize) -> usize {
    if text.len() <= max_bytes {
        return text.len();
    }
    let mut limit = max_bytes;
    while !text.is_char_boundary(limit) {
        limit -= 1;
    }
    if limit == 0 {
        return text.chars().next().map_or(text.len(), char::len_utf8);
    }
    let cut = cluster_safe_cut(text, limit);
    if cut == 0 { limit } else { cut }
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Input bytes gathered before encoding: whole lines at a time, small enough for the stack.
const BASE64_BUFFER: usize = BASE64_LINE_INPUT * 64;

/// Base64 in 76-character lines, streamed: input is gathered in a fixed buffer and encoded a
/// few kilobytes at a time, so no encoded copy of a whole body is made and short input pieces
/// (one line of HTML each) cost a copy, not an encoding step.
struct Base64Lines<'o> {
    out: &'o mut Vec<u8>,
    buffer: [u8; BASE64_BUFFER],
    len: usize,
}

impl<'o> Base64Lines<'o> {
    fn new(out: &'o mut Vec<u8>) -> Self {
        Self {
            out,
            buffer: [0; BASE64_BUFFER],
            len: 0,
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (BASE64_BUFFER - self.len).min(bytes.len());
            self.buffer[self.len..self.len + take].copy_from_slice(&bytes[..take]);
            self.len += take;
            bytes = &bytes[take..];
            if self.len == BASE64_BUFFER {
                self.encode_full_lines();
            }
        }
    }

    /// Encodes every complete 57-byte block and keeps the rest for later.
    fn encode_full_lines(&mut self) {
        let full = self.len / BASE64_LINE_INPUT * BASE64_LINE_INPUT;
        for block in self.buffer[..full].chunks_exact(BASE64_LINE_INPUT) {
            encode_line(self.out, block);
        }
        self.buffer.copy_within(full..self.len, 0);
        self.len -= full;
    }

    fn finish(mut self) {
        self.encode_full_lines();
        if self.len > 0 {
            encode_line(self.out, &self.buffer[..self.len]);
        }
    }
}

/// Encodes up to 57 bytes as one line (RFC 4648 alphabet, `=` padding) followed by CRLF.
fn encode_line(out: &mut Vec<u8>, block: &[u8]) {
    let mut line = [0u8; 78];
    let mut len = 0;
    let mut groups = block.chunks_exact(3);
    for group in &mut groups {
        let bits = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
        line[len] = BASE64_ALPHABET[(bits >> 18) as usize & 63];
        line[len + 1] = BASE64_ALPHABET[(bits >> 12) as usize & 63];
        line[len + 2] = BASE64_ALPHABET[(bits >> 6) as usize & 63];
        line[len + 3] = BASE64_ALPHABET[bits as usize & 63];
        len += 4;
    }
    let rest = groups.remainder();
    if let Some(&first) = rest.first() {
        let second = rest.get(1).copied();
        let bits = u32::from(first) << 16 | u32::from(second.unwrap_or(0)) << 8;
        line[len] = BASE64_ALPHABET[(bits >> 18) as usize & 63];
        line[len + 1] = BASE64_ALPHABET[(bits >> 12) as usize & 63];
        line[len + 2] = match second {
            Some(_) => BASE64_ALPHABET[(bits >> 6) as usize & 63],
            None => b'=',
        };
        line[len + 3] = b'=';
        len += 4;
    }
    line[len] = b'\r';
    line[len + 1] = b'\n';
    out.extend_from_slice(&line[..len + 2]);
}

/// Encodes a text body in its canonical form (CRLF line ends, RFC 2046 section 4.1.1) as base64.
fn push_base64_text(out: &mut Vec<u8>, text: &str) {
    let mut encoder = Base64Lines::new(out);
    for line in text.split_inclusive('\n') {
        match line.strip_suffix('\n') {
            Some(content) => {
                encoder.push(content.strip_suffix('\r').unwrap_or(content).as_bytes());
                encoder.push(b"\r\n");
            }
            None => encoder.push(line.as_bytes()),
        }
    }
    encoder.finish();
}
