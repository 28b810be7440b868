//! Sending e-mail through SES v2.
//!
//! The product hands SES a finished raw MIME message (see [`crate::email`]), so what the owner
//! receives is exactly what was rendered and tested. [`Mailer`] is the seam: [`SesMailer`] in
//! Lambda and in the local stack (against the emulator), and test wrappers that inject SES faults
//! the emulator cannot produce, such as throttling.

use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, RawMessage};

/// One message ready to send.
#[derive(Debug, Clone)]
pub struct OutgoingMail<'a> {
    /// The envelope sender (a verified identity).
    pub from: &'a str,
    /// The single recipient.
    pub to: &'a str,
    /// The whole RFC 5322 message.
    pub raw: &'a [u8],
}

/// Why SES did not take a message, split by what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// SES refused this message for good (rejected content, unverified identity, suppressed
    /// address). Do not retry; record the reason.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Throttling, quota, a service fault or a network error. Retry later.
    #[error("temporarily unavailable: {0}")]
    Transient(String),
}

/// Something that sends a raw message and returns the provider's message id.
pub trait Mailer: Send + Sync {
    /// Sends one message.
    fn send(
        &self,
        mail: OutgoingMail<'_>,
    ) -> impl Future<Output = Result<String, MailError>> + Send;
}

/// SES v2 `SendEmail` with raw content.
#[derive(Debug, Clone)]
pub struct SesMailer {
    client: Client,
}

impl SesMailer {
    /// A mailer over an SES v2 client.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl Mailer for SesMailer {
    async fn send(&self, mail: OutgoingMail<'_>) -> Result<String, MailError> {
        let content = EmailContent::builder()
            .raw(
                RawMessage::builder()
                    .data(Blob::new(mail.raw.to_vec()))
                    .build()
                    .map_err(|error| MailError::Rejected(error.to_string()))?,
            )
            .build();
        let result = self
            .client
            .send_email()
            .from_email_address(mail.from)
            .destination(Destination::builder().to_addresses(mail.to).build())
            .content(content)
            .send()
            .await;

        match result {
            Ok(output) => Ok(output.message_id().unwrap_or_default().to_owned()),
            Err(error) => Err(classify_ses_error(error)),
        }
    }
}

/// Sorts an SES error into permanent and transient by its error code.
pub fn classify_ses_error<E, R>(error: SdkError<E, R>) -> MailError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let permanent_codes = [
        "MessageRejected",
        "MailFromDomainNotVerifiedException",
        "AccountSuspendedException",
        "SendingPausedException",
        "BadRequestException",
        "NotFoundException",
    ];
    match &error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown").to_owned();
            let message = redact_addresses(service.err().message().unwrap_or(""));
            let reason = if message.is_empty() {
                code.clone()
            } else {
                format!("{code}: {message}")
            };
            if permanent_codes.contains(&code.as_str()) {
                MailError::Rejected(reason)
            } else {
                MailError::Transient(reason)
            }
        }
        _ => MailError::Transient(redact_addresses(
            &aws_sdk_sesv2::error::DisplayErrorContext(&error).to_string(),
        )),
    }
}

/// Replaces every e-mail address in an SES message with `[address]`. SES names the refused
/// sender or recipient in its messages ("Email address is not verified ... x@y"); the reason is
/// logged and stored, and neither may carry an address.
pub fn redact_addresses(text: &str) -> String {
    let is_boundary = |c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '<' | '>' | ',' | ';' | '(' | ')' | '"' | '\'' | '[' | ']' | ':'
            )
    };
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains('@') {
            out.push_str("[address]");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_boundary(c) {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_ses_messages_are_redacted() {
        let cases = [
            (
                "Did not have authority to send from email reports@research-relay.example",
                "Did not have authority to send from email [address]",
            ),
            (
                "Email address is not verified. The following identities failed the check in region US-EAST-1: Zoë <zoe@example.org>, bob@example.com.",
                "Email address is not verified. The following identities failed the check in region US-EAST-1: Zoë <[address]>, [address]",
            ),
            (
                "Maximum sending rate exceeded.",
                "Maximum sending rate exceeded.",
            ),
        ];

        for (message, expected) in cases {
            assert_eq!(redact_addresses(message), expected);
        }
    }
}
