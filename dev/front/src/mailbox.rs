//! Reads what the SES emulator received, for the demo and the tests.
//!
//! moto keeps every raw message it accepted and lists them under `/moto-api/data.json`
//! (`ses.RawMessage`). Each message the product sends carries an `X-Research-Relay-Job` header,
//! which is how a message is tied to its job here.

use mail_parser::{MessageParser, MimeHeaders};
use serde_json::Value;

/// One message SES accepted.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// SES message id.
    pub id: String,
    /// Envelope recipients.
    pub destinations: Vec<String>,
    /// The raw RFC 5322 message.
    pub raw: String,
}

impl ReceivedMail {
    /// The job the message belongs to.
    pub fn job_id(&self) -> Option<String> {
        let parsed = MessageParser::default().parse(self.raw.as_bytes())?;
        parsed
            .header("X-Research-Relay-Job")
            .and_then(|value| value.as_text())
            .map(|value| value.trim().to_owned())
    }

    /// The decoded subject.
    pub fn subject(&self) -> Option<String> {
        MessageParser::default()
            .parse(self.raw.as_bytes())?
            .subject()
            .map(str::to_owned)
    }

    /// The decoded HTML part.
    pub fn html(&self) -> Option<String> {
        let parsed = MessageParser::default().parse(self.raw.as_bytes())?;
        parsed.body_html(0).map(|html| html.into_owned())
    }

    /// The decoded plain-text part.
    pub fn text(&self) -> Option<String> {
        let parsed = MessageParser::default().parse(self.raw.as_bytes())?;
        parsed.body_text(0).map(|text| text.into_owned())
    }

    /// The decoded attachments: (file name, content type, bytes).
    pub fn attachments(&self) -> Vec<(String, String, Vec<u8>)> {
        let Some(parsed) = MessageParser::default().parse(self.raw.as_bytes()) else {
            return Vec::new();
        };
        parsed
            .attachments()
            .map(|part| {
                let name = part.attachment_name().unwrap_or_default().to_owned();
                let kind = part
                    .content_type()
                    .map(|kind| format!("{}/{}", kind.ctype(), kind.subtype().unwrap_or_default()))
                    .unwrap_or_default();
                (name, kind, part.contents().to_vec())
            })
            .collect()
    }
}

/// Every message the emulator at `moto_url` has accepted.
pub async fn received(http: &reqwest::Client, moto_url: &str) -> Result<Vec<ReceivedMail>, String> {
    let data: Value = http
        .get(format!("{moto_url}/moto-api/data.json"))
        .send()
        .await
        .map_err(|error| format!("reading the emulator's messages: {error}"))?
        .json()
        .await
        .map_err(|error| format!("the emulator's data is not JSON: {error}"))?;
    let messages = data
        .pointer("/ses/RawMessage")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok(messages
        .iter()
        .map(|message| ReceivedMail {
            id: message["id"].as_str().unwrap_or_default().to_owned(),
            destinations: message["destinations"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|d| d.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            raw: message["raw_data"].as_str().unwrap_or_default().to_owned(),
        })
        .collect())
}

/// The messages the emulator accepted for one job.
pub async fn received_for_job(
    http: &reqwest::Client,
    moto_url: &str,
    job_id: &str,
) -> Result<Vec<ReceivedMail>, String> {
    Ok(received(http, moto_url)
        .await?
        .into_iter()
        .filter(|mail| mail.job_id().as_deref() == Some(job_id))
        .collect())
}
