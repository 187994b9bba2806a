//! Webhooks as gates: what the engine asks and what it is told. The engine never calls
//! anything: a decision lists the calls it waits for (`Decision::asks`), the controller
//! makes them in the background and hands the answers back in the next `World`
//! (`World::hook_answers`), and the engine records each answer in `status.webhooks`
//! before it acts on it. A restart loses only calls in flight; they are asked again.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::spec::{FailurePolicy, Problems, Webhook, WebhookKind, parse_duration};

/// A webhook of the Rollout, validated and defaulted.
#[derive(Clone, Debug, PartialEq)]
pub struct HookPlan {
    pub name: String,
    pub kind: WebhookKind,
    pub url: String,
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts after the first when there is no answer.
    pub retries: u32,
    pub on_failure: FailurePolicy,
    pub metadata: BTreeMap<String, String>,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_RETRIES: u32 = 2;
pub const MAX_RETRIES: u32 = 5;
const MAX_URL: usize = 2048;
const MAX_METADATA: usize = 16;
const MAX_METADATA_BYTES: usize = 4096;

impl WebhookKind {
    /// As written in a Rollout.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookKind::PreRollout => "pre-rollout",
            WebhookKind::ConfirmStep => "confirm-step",
            WebhookKind::ConfirmPromotion => "confirm-promotion",
            WebhookKind::PostRollout => "post-rollout",
            WebhookKind::Rollback => "rollback",
        }
    }

    fn default_policy(self) -> FailurePolicy {
        match self {
            WebhookKind::PreRollout => FailurePolicy::Rollback,
            _ => FailurePolicy::Hold,
        }
    }
}

/// The parts of an `http(s)://host[:port]/path` address that say where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlParts {
    pub scheme: String,
    /// Lower-cased; an IPv6 address keeps its brackets.
    pub host: String,
    pub port: u16,
    /// From the first `/` (or `/` when there is none), query included.
    pub path: String,
}

/// Splits an address into what decides where it goes. Refuses anything but http(s),
/// credentials in the address, and characters a request line cannot carry.
pub fn url_parts(url: &str) -> Result<UrlParts, String> {
    if url.len() > MAX_URL {
        return Err(format!("is {} bytes, at most {MAX_URL} are allowed", url.len()));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters".into());
    }
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// address"))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(format!("{url:?} is not an http:// or https:// address")),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        return Err("must not carry credentials (user@host)".into());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => {
            let port = p.parse::<u16>().map_err(|_| format!("port {p:?} is not a number"))?;
            (h, port)
        }
        _ => (authority, default_port),
    };
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    let path = match path {
        "" => "/".to_string(),
        p if !p.starts_with('/') => format!("/{p}"),
        p => p.to_string(),
    };
    check_path(&path)?;
    Ok(UrlParts {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
        path,
    })
}

/// Refuses a path that an HTTP client or server could read as another one than its text
/// says: dot segments (`..`, `%2e%2e`, `.`), empty segments (`//`), encoded or back
/// slashes. An allow-list entry is a path prefix; each of these would let
/// `/tenant-a/../tenant-b/hook` pass `/tenant-a/` and reach `/tenant-b/hook`. Refused,
/// not normalised: the address weir calls is then exactly the one the Rollout shows.
fn check_path(path_and_query: &str) -> Result<(), String> {
    let path = path_and_query.split(['?', '#']).next().unwrap_or_default();
    let lower = path.to_ascii_lowercase();
    if path.contains('\\') || lower.contains("%2f") || lower.contains("%5c") {
        return Err(format!(
            "path {path:?} holds an encoded slash or a backslash; write the path plainly"
        ));
    }
    let decoded = lower.replace("%2e", ".");
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        if *segment == "." || *segment == ".." {
            return Err(format!(
                "path {path:?} holds a dot segment ({segment}); write the path it means"
            ));
        }
        if segment.is_empty() && i != last {
            return Err(format!(
                "path {path:?} holds an empty segment (//); write the path it means"
            ));
        }
    }
    Ok(())
}

/// Validates the Rollout's webhooks (`field` is their path, `webhooks`).
pub fn plan(field: &str, hooks: &[Webhook], errors: &mut Problems) -> Vec<HookPlan> {
    if hooks.len() > 16 {
        errors.at(field, format!("{} webhooks, at most 16 are allowed", hooks.len()));
    }
    let mut planned = Vec::new();
    for (i, hook) in hooks.iter().enumerate() {
        let at = format!("{field}[{i}]");
        if !crate::spec::is_object_name(&hook.name) {
            errors.at(format!("{at}.name"), format!("{:?} is not a valid name", hook.name));
        }
        if hooks.iter().take(i).any(|h| h.name == hook.name) {
            errors.at(format!("{at}.name"), format!("{:?} appears twice", hook.name));
        }
        if let Err(e) = url_parts(&hook.url) {
            errors.at(format!("{at}.url"), e.to_string());
        }
        let timeout = match hook.timeout.as_deref().map(parse_duration) {
            None => DEFAULT_TIMEOUT,
            Some(Ok(t)) if t > Duration::ZERO && t <= MAX_TIMEOUT => t,
            Some(Ok(_)) => {
                errors.at(format!("{at}.timeout"), "must be above 0s and at most 1m");
                DEFAULT_TIMEOUT
            }
            Some(Err(e)) => {
                errors.at(format!("{at}.timeout"), e.to_string());
                DEFAULT_TIMEOUT
            }
        };
        let retries = hook.retries.unwrap_or(DEFAULT_RETRIES);
        if retries > MAX_RETRIES {
            errors.at(format!("{at}.retries"), format!("{retries} is above {MAX_RETRIES}"));
        }
        let metadata_bytes: usize = hook.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        if hook.metadata.len() > MAX_METADATA || metadata_bytes > MAX_METADATA_BYTES {
            errors.at(
                format!("{at}.metadata"),
                format!("at most {MAX_METADATA} entries and {MAX_METADATA_BYTES} bytes are allowed"),
            );
        }
        if hook.on_failure.is_some() && matches!(hook.kind, WebhookKind::PostRollout | WebhookKind::Rollback) {
            errors.at(
                format!("{at}.onFailure"),
                format!(
                    "a {} webhook cannot hold or roll back on a no; remove it",
                    hook.kind.as_str()
                ),
            );
        }
        planned.push(HookPlan {
            name: hook.name.clone(),
            kind: hook.kind,
            url: hook.url.clone(),
            timeout,
            retries: retries.min(MAX_RETRIES),
            on_failure: hook.on_failure.unwrap_or(hook.kind.default_policy()),
            metadata: hook.metadata.clone(),
        });
    }
    planned
}

impl HookPlan {
    /// The call that asks this webhook the question `key`.
    pub fn call(&self, key: HookKey, outcome: Option<&str>) -> HookCall {
        HookCall {
            key,
            kind: self.kind,
            url: self.url.clone(),
            timeout: self.timeout,
            retries: self.retries,
            metadata: self.metadata.clone(),
            outcome: outcome.map(str::to_string),
        }
    }
}

/// Which question a call answers: one webhook, for one revision at one step, in one
/// round (a hook that said no is asked again in a new round).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HookKey {
    pub hook: String,
    pub revision: String,
    /// 1-based step the question is about; for post-rollout the step the release reached.
    pub step: u32,
    pub round: u32,
}

/// A call the engine waits for.
#[derive(Clone, Debug, PartialEq)]
pub struct HookCall {
    pub key: HookKey,
    pub kind: WebhookKind,
    pub url: String,
    pub timeout: Duration,
    pub retries: u32,
    pub metadata: BTreeMap<String, String>,
    /// Post-rollout: how the release ended (Promoted, RolledBack, Cancelled).
    pub outcome: Option<String>,
}

/// What a call came back with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A 2xx answer.
    Yes,
    /// Any other answer.
    No,
    /// No answer: connection errors, timeouts or 5xx, after every retry.
    NoAnswer,
}

impl Reply {
    pub fn as_str(self) -> &'static str {
        match self {
            Reply::Yes => "Yes",
            Reply::No => "No",
            Reply::NoAnswer => "NoAnswer",
        }
    }
}

/// The controller's report of a finished call.
#[derive(Clone, Debug, PartialEq)]
pub struct HookAnswer {
    pub key: HookKey,
    pub reply: Reply,
    /// The status code and the start of the body, or why there was no answer.
    pub detail: String,
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_where_they_go() {
        let p = url_parts("http://Smoke.Apps.svc:8080/run?x=1").unwrap();
        assert_eq!(
            (p.scheme.as_str(), p.host.as_str(), p.port, p.path.as_str()),
            ("http", "smoke.apps.svc", 8080, "/run?x=1")
        );
        let p = url_parts("https://[::1]/").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("[::1]", 443));
        assert_eq!(url_parts("http://gate.test").unwrap().path, "/");
        assert_eq!(url_parts("http://gate.test?ok").unwrap().path, "/?ok");
        for bad in [
            "ftp://x/",
            "gate.test/",
            "http://user:pw@gate.test/",
            "http:///path",
            "http://x:99999/",
            "http://x/ y",
        ] {
            assert!(url_parts(bad).is_err(), "{bad} accepted");
        }
        for bent in [
            "http://gw.shared.svc/tenant-a/../tenant-b/hook",
            "http://gw.shared.svc/tenant-a/%2e%2E/tenant-b/hook",
            "http://gw.shared.svc/tenant-a/./x",
            "http://gw.shared.svc/tenant-a//x",
            "http://gw.shared.svc/tenant-a/..%2ftenant-b",
            "http://gw.shared.svc/tenant-a/%5C..",
        ] {
            assert!(url_parts(bent).is_err(), "{bent} accepted");
        }
    }
}
