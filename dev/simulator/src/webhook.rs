//! Signed webhook deliveries with retries, the way the provider calls the product back.
//!
//! Each delivery is a JSON body serialized once and sent byte for byte the same on every
//! attempt, with `X-Perplexity-Signature` = lower-case hex HMAC-SHA256 of those bytes keyed
//! with the job's webhook secret. A non-2xx answer (redirects are not followed) or a connection
//! error is retried after `base * 2^(attempt-1)`, capped, measured on the simulator clock so a
//! clock move also releases pending retries. After the configured number of attempts the
//! delivery is given up, as the provider does after about a day.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Header carrying the signature, as the provider names it.
pub const SIGNATURE_HEADER: &str = "X-Perplexity-Signature";

/// Lower-case hex HMAC-SHA256 of `body` keyed with `secret` (its UTF-8 bytes): the value of
/// `X-Perplexity-Signature`.
///
/// Public so that tests of a receiver can sign bodies of their own exactly as the simulator
/// does.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `url` is an http(s) address on this machine; the simulator calls nothing else
/// unless told otherwise.
pub(crate) fn is_loopback_url(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost"),
    }
}

/// Checks a webhook URL given by a caller; the reason is returned for the error answer.
pub(crate) fn check_url(url: &str, loopback_only: bool) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|err| format!("invalid webhook url: {err}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("webhook url must use http or https".to_owned());
    }
    if loopback_only && !is_loopback_url(&parsed) {
        return Err(
            "webhook url must point to this machine (127.0.0.1, [::1] or localhost); \
             the simulator only calls local receivers"
                .to_owned(),
        );
    }
    Ok(parsed)
}

/// Wait before the retry that follows failed attempt number `attempt` (1-based).
pub(crate) fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

/// What a receiver answered.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends one POST; `Err` is a transport failure (refused, reset, timed out).
pub(crate) async fn post(
    client: &reqwest::Client,
    url: &str,
    body: Bytes,
    signature: Option<&str>,
) -> Result<Answer, String> {
    let mut request = client
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(signature) = signature {
        request = request.header(SIGNATURE_HEADER, signature);
    }
    let response = request.send().await.map_err(|err| describe(&err))?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    Ok(Answer { status, body })
}

/// A transport error in a few words, without the chain of wrappers reqwest adds.
fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "connection failed".to_owned()
    } else {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(inner) = source {
            text.push_str(": ");
            text.push_str(&inner.to_string());
            source = inner.source();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_shared_test_vectors() {
        let body = br#"{"job_id":"req_123","status":"COMPLETED"}"#;

        assert_eq!(
            signature("whsec_test_0001", body),
            "115b8374839c440bdf4875e0c1c1d3f478ab337c1ce30023f6701c4b7f2f49e1"
        );
        assert_eq!(
            signature("whsec_test_0002", body),
            "76ed1d818d65389863110155c9a0622e9fcf1d5a5d41082af19c1a5d0443d35a"
        );
    }

    #[test]
    fn only_local_urls_pass_the_loopback_check() {
        let local = [
            "http://127.0.0.1:9000/hook",
            "http://127.5.6.7/x",
            "http://[::1]:8080/x",
            "http://localhost:3000/webhooks/perplexity/01J",
            "https://api.localhost/x",
        ];
        let remote = [
            "http://10.0.0.1/x",
            "http://192.168.1.2/x",
            "https://hooks.example.com/x",
            "http://0.0.0.0:80/x",
        ];

        for url in local {
            assert!(check_url(url, true).is_ok(), "{url} should be accepted");
        }
        for url in remote {
            assert!(check_url(url, true).is_err(), "{url} should be refused");
            assert!(check_url(url, false).is_ok(), "{url} is fine when allowed");
        }
        assert!(check_url("ftp://127.0.0.1/x", false).is_err());
        assert!(check_url("not a url", false).is_err());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(200);
        let max = Duration::from_secs(5);

        let waits: Vec<u128> = (1..=7)
            .map(|attempt| backoff(attempt, base, max).as_millis())
            .collect();

        assert_eq!(waits, [200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff(60, base, max), max);
    }
}
