//! What weir's outbound HTTP calls share (notifications, webhook gates): no redirects (an
//! address the admin allowed must not send weir elsewhere), which answers are worth
//! another attempt, and a bounded read of an answer.

use std::time::Duration;

use reqwest::StatusCode;

/// An HTTP client that follows no redirect; `timeout` per request, if any.
pub fn client(timeout: Option<Duration>) -> reqwest::Client {
    let builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    let builder = match timeout {
        Some(t) => builder.timeout(t),
        None => builder,
    };
    builder.build().unwrap_or_default()
}

/// Why one attempt failed, and whether another may succeed.
pub struct Failed {
    pub why: String,
    pub retry: bool,
}

impl Failed {
    pub fn retry(why: String) -> Failed {
        Failed { why, retry: true }
    }
}

/// An answer another attempt may change (408, 425, 429, 5xx) is a retryable failure;
/// any other is an answer. `who` names the other end in the message.
pub fn answered(code: StatusCode, who: &str) -> Result<(), Failed> {
    match code.as_u16() {
        408 | 425 | 429 | 500..=599 => Err(Failed::retry(format!("{who} answered {code}"))),
        _ => Ok(()),
    }
}

/// A failed request in a few words: a timeout says how long weir waited.
pub fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {}", humantime::format_duration(timeout));
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// The first `max` bytes of an answer's body as one line of text; the rest is not read.
pub async fn body_start(mut response: reqwest::Response, max: usize) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(max);
    String::from_utf8_lossy(&bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}
