//! The metrics provider: builds one PromQL query per metric per look and reads the
//! answer of Prometheus's HTTP API (`/api/v1/query`) into a `judge::Reading`.
//!
//! Built-in metrics come back per version in one result (grouped by
//! `destination_workload`): the stable Deployment keeps its name, the canary runs as
//! `<name>-canary`, so Istio's own telemetry tells the two apart without new labels.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde::Deserialize;

use crate::api::Counts;
use crate::judge::Reading;
use crate::plan::{MetricKind, MetricPlan};

/// Who the queries are about. Every field is a validated Kubernetes name, so substituting
/// it into PromQL cannot change the query's structure.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryScope {
    pub namespace: String,
    pub stable: String,
    pub canary: String,
}

/// Prometheus duration for a window: whole seconds, at least one.
pub fn promql_duration(d: Duration) -> String {
    format!("{}s", d.as_secs_f64().ceil().max(1.0) as u64)
}

fn selector(scope: &QueryScope) -> String {
    format!(
        r#"reporter="destination",destination_workload_namespace="{}",destination_workload=~"{}|{}""#,
        scope.namespace,
        regex_literal(&scope.stable),
        regex_literal(&scope.canary)
    )
}

/// An object name as a literal inside a PromQL regex (`=~"..."`): the only metacharacter
/// a Kubernetes name can hold is `.`, which must not match any character (`api.v2` is
/// not `apixv2`). The backslash is doubled for the PromQL string.
fn regex_literal(name: &str) -> String {
    name.replace('.', r"\\.")
}

/// The largest answer read from Prometheus: a look needs a few series, not megabytes.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Label value Prometheus gives a bucket bound: `500` from Istio, `500.0` once
/// Prometheus 3 normalizes it; the regex accepts both.
fn le_regex(max_ms: f64) -> String {
    let whole = if max_ms.fract() == 0.0 {
        format!("{}", max_ms as u64)
    } else {
        format!("{max_ms}")
    };
    let escaped = whole.replace('.', r"\\.");
    format!(r#"{escaped}(\\.0)?"#)
}

/// The query for one metric. `window`: the counters' range; `interval`: the threshold
/// judge's window and a custom template's `{{interval}}`.
pub fn query_for(metric: &MetricPlan, scope: &QueryScope, window: Duration, interval: Duration) -> String {
    let sel = selector(scope);
    let w = promql_duration(window);
    match &metric.kind {
        // 5xx and all requests per version, in one vector: label_replace marks the 5xx.
        MetricKind::SuccessRate { .. } => format!(
            r#"sum by (destination_workload, weir_class) (label_replace(increase(istio_requests_total{{{sel}}}[{w}]), "weir_class", "error", "response_code", "5.."))"#
        ),
        // The quantile per version (for people and the threshold judge) `or` the requests
        // at and under the bound and in total (for the count tests): one query, both shapes.
        MetricKind::Duration { quantile, max_ms } => {
            let le = le_regex(*max_ms);
            format!(
                r#"label_replace(histogram_quantile({quantile}, sum by (destination_workload, le) (rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{w}]))), "weir_stat", "quantile", "", "") or label_replace(sum by (destination_workload, le) (increase(istio_request_duration_milliseconds_bucket{{{sel},le=~"{le}|\\+Inf"}}[{w}])), "weir_stat", "count", "", "")"#
            )
        }
        // Only admitted PromQL (`admin::templates`) is run; `read` refuses the rest.
        MetricKind::Custom { query, .. } => render_template(query.admitted().unwrap_or_default(), scope, interval),
    }
}

/// A built-in metric's bad-request ratio per version (`destination_workload`) in each
/// `window` (the dashboard's interval, so each point covers its interval and no other):
/// 5xx of all requests, or requests slower than the latency bound. A version without
/// any bad request reads 0; one that served nothing in the window reads nothing.
pub fn bad_ratio_query(kind: &MetricKind, scope: &QueryScope, window: Duration) -> Option<String> {
    let sel = selector(scope);
    let w = promql_duration(window);
    let (bad, all) = match kind {
        MetricKind::SuccessRate { .. } => (
            format!(r#"istio_requests_total{{{sel},response_code=~"5.."}}"#),
            format!("istio_requests_total{{{sel}}}"),
        ),
        MetricKind::Duration { max_ms, .. } => {
            let le = le_regex(*max_ms);
            let all = format!(r#"istio_request_duration_milliseconds_bucket{{{sel},le="+Inf"}}"#);
            let within = format!(r#"istio_request_duration_milliseconds_bucket{{{sel},le=~"{le}"}}"#);
            let rate = |s: &str| format!("sum by (destination_workload) (increase({s}[{w}]))");
            return Some(format!("1 - {} / ({} > 0)", rate(&within), rate(&all)));
        }
        MetricKind::Custom { .. } => return None,
    };
    let rate = |s: &str| format!("sum by (destination_workload) (increase({s}[{w}]))");
    Some(format!("({} or {} * 0) / ({} > 0)", rate(&bad), rate(&all), rate(&all)))
}

/// The canary's share of the requests served to both versions in each `window`, in
/// percent (0 in a window where only stable served).
pub fn served_share_query(scope: &QueryScope, window: Duration) -> String {
    let sel = selector(scope);
    let canary = regex_literal(&scope.canary);
    let w = promql_duration(window);
    format!(
        r#"(sum(increase(istio_requests_total{{{sel},destination_workload=~"{canary}"}}[{w}])) or vector(0)) / (sum(increase(istio_requests_total{{{sel}}}[{w}])) > 0) * 100"#
    )
}

/// Substitutes the template variables (checked by `plan` to be only the known ones).
/// `{{ name }}` and `{{name}}` alike, as `plan::check_template` reads them; anything else
/// in braces is left as written (`plan` has refused such a Rollout already).
pub fn render_template(template: &str, scope: &QueryScope, interval: Duration) -> String {
    crate::plan::substitute(template, |name| match name {
        "namespace" => Some(scope.namespace.clone()),
        "target" | "stable" => Some(scope.stable.clone()),
        "canary" => Some(scope.canary.clone()),
        "interval" => Some(promql_duration(interval)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variable a template can hold comes from a name weir validated as an object
    /// name (or from a duration): whatever a Rollout author tries, a substituted value
    /// cannot close a string, a selector or a function call.
    #[test]
    fn no_template_variable_can_carry_promql() {
        let hostile = [
            r#"backend"} or vector(1) #"#,
            "backend\"",
            "a{b}",
            "a)or(b",
            "x\ny",
            "name with space",
            "Backend",
            "a/../b",
            "",
            "a..b",
        ];
        for name in hostile {
            assert!(
                !crate::plan::is_object_name(name),
                "{name:?} accepted as an object name"
            );
        }
        let scope = QueryScope {
            namespace: "dev".into(),
            stable: "api.v2".into(),
            canary: "api.v2-canary".into(),
        };
        let template = r#"x{a="{{namespace}}",b="{{target}}",c="{{canary}}",d="{{stable}}"}[{{interval}}]"#;
        let q = render_template(template, &scope, Duration::from_secs(60));
        assert_eq!(q, r#"x{a="dev",b="api.v2",c="api.v2-canary",d="api.v2"}[60s]"#);
        // The template with every variable replaced by a harmless word.
        let plain = ["namespace", "target", "canary", "stable", "interval"]
            .iter()
            .fold(template.to_string(), |t, v| t.replace(&format!("{{{{{v}}}}}"), "v"));
        for c in ['"', '{', '}', '(', ')', ' ', '\\'] {
            assert_eq!(
                q.matches(c).count(),
                plain.matches(c).count(),
                "{c:?} added by a variable"
            );
        }
    }

    #[test]
    fn prometheus_errors_are_summarised_without_other_series_labels() {
        let text = r#"found duplicate series for the match group {destination_workload="x"} on the right hand-side of the operation: [{__name__="kube_secret_info", namespace="kube-system", secret="db-password"}, {secret="token"}];many-to-many matching not allowed"#;
        let s = summarise("execution", text);
        assert!(!s.contains("db-password") && !s.contains("kube-system"), "{s}");
        assert!(
            s.starts_with("execution: found duplicate series for the match group {…} on the right"),
            "{s}"
        );
        assert!(summarise("bad_data", &"x".repeat(1000)).chars().count() < 200);
    }

    #[test]
    fn a_dot_in_a_name_matches_only_a_dot() {
        let scope = QueryScope {
            namespace: "dev".into(),
            stable: "api.v2".into(),
            canary: "api.v2-canary".into(),
        };
        assert!(
            selector(&scope).ends_with(r#"destination_workload=~"api\\.v2|api\\.v2-canary""#),
            "{}",
            selector(&scope)
        );
    }

    #[test]
    fn templates_substitute_every_variable_with_or_without_spaces() {
        let scope = QueryScope {
            namespace: "dev".into(),
            stable: "backend".into(),
            canary: "backend-canary".into(),
        };
        let q = render_template(
            r#"sum(rate(x{ns="{{ namespace }}",w=~"{{stable}}|{{canary}}",t="{{target}}"}[{{interval}}]))"#,
            &scope,
            Duration::from_secs(60),
        );
        assert_eq!(
            q,
            r#"sum(rate(x{ns="dev",w=~"backend|backend-canary",t="backend"}[60s]))"#
        );
    }

    #[test]
    fn builtin_queries_select_both_versions_in_one_query() {
        let scope = QueryScope {
            namespace: "dev".into(),
            stable: "backend".into(),
            canary: "backend-canary".into(),
        };
        let m = MetricPlan {
            name: "request-duration".into(),
            kind: MetricKind::Duration {
                quantile: 0.99,
                max_ms: 500.0,
            },
        };
        let q = query_for(&m, &scope, Duration::from_secs(42), Duration::from_secs(60));
        assert!(q.contains(r#"destination_workload=~"backend|backend-canary""#), "{q}");
        assert!(
            q.contains("histogram_quantile(0.99") && q.contains(r#"le=~"500(\\.0)?|\\+Inf""#) && q.contains("[42s]"),
            "{q}"
        );
    }
}

// ------------------------------------------------------------------ the HTTP API

#[derive(Deserialize, Debug)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum ApiData {
    Vector(Vec<Sample>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

/// Reads an answer of Prometheus's query API (at most `MAX_ANSWER_BYTES`, cut off by the
/// caller): the samples of an instant vector or a scalar, or why the answer is refused.
/// Fuzzed (`fuzz/`): no answer makes it panic, hang or allocate beyond the body.
pub fn parse_answer(code: u16, body: &[u8]) -> Result<Vec<Sample>, QueryError> {
    let body: ApiResponse = serde_json::from_slice(body)
        .map_err(|e| QueryError::Rejected(format!("HTTP {code}, unreadable answer: {e}")))?;
    if body.status != "success" {
        let (kind, text) = (body.error_type.unwrap_or_default(), body.error.unwrap_or_default());
        tracing::debug!(%kind, %text, "Prometheus refused a query");
        return Err(QueryError::Rejected(summarise(&kind, &text)));
    }
    match body.data {
        Some(ApiData::Vector(v)) => Ok(v),
        Some(ApiData::Scalar((t, v))) => Ok(vec![Sample {
            metric: Default::default(),
            value: (t, v),
        }]),
        _ => Err(QueryError::Rejected(
            "the query must return an instant vector or a scalar".into(),
        )),
    }
}

/// The longest summary of Prometheus's error text kept for status and Events.
const SUMMARY_CHARS: usize = 160;

/// Prometheus's error, summarised for status and Events (which every reader of the
/// namespace sees, and which notifications carry): its kind and first line, every label
/// set (`{...}`, which a many-to-many error prints whole, values of other series
/// included) replaced by `{…}`, cut at `SUMMARY_CHARS`. The whole text is in weir's own
/// log at debug level, for the admin.
pub fn summarise(kind: &str, text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let mut out = String::new();
    let mut depth = 0usize;
    for c in line.chars() {
        match c {
            '{' => {
                if depth == 0 {
                    out.push_str("{…}");
                }
                depth += 1;
            }
            '}' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    let mut summary: String = out.chars().take(SUMMARY_CHARS).collect();
    if out.chars().count() > SUMMARY_CHARS {
        summary.push('…');
    }
    let kind = if kind.is_empty() { "error" } else { kind };
    format!("{kind}: {summary}")
}

/// One series of an instant vector.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Sample {
    pub metric: std::collections::BTreeMap<String, String>,
    value: (f64, String),
}

impl Sample {
    /// The value; Prometheus writes NaN and ±Inf as strings.
    pub fn value(&self) -> f64 {
        self.value.1.parse().unwrap_or(f64::NAN)
    }

    fn label(&self, name: &str) -> &str {
        self.metric.get(name).map(String::as_str).unwrap_or_default()
    }
}

/// Credentials from the Rollout's Secret.
#[derive(Clone, Debug, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub enum Auth {
    #[default]
    None,
    Bearer(String),
    Basic {
        username: String,
        password: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// Worth another try: connection refused, timeout, 5xx.
    #[error("Prometheus at {address} unreachable: {message}")]
    Unavailable { address: String, message: String },
    /// Not worth retrying: the query or the answer is wrong.
    #[error("Prometheus rejected the query: {0}")]
    Rejected(String),
}

/// Where one Rollout's Prometheus is and how to talk to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub address: String,
    pub auth: Auth,
    pub timeout: Duration,
}

/// A Prometheus HTTP API client; one per controller, shared by all Rollouts.
#[derive(Clone, Debug)]
pub struct Prometheus {
    http: reqwest::Client,
}

impl Prometheus {
    pub fn new() -> Result<Prometheus, crate::Error> {
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Prometheus { http })
    }

    async fn query_once(&self, endpoint: &Endpoint, query: &str) -> Result<Vec<Sample>, QueryError> {
        let Endpoint { address, auth, timeout } = endpoint;
        let url = format!("{}/api/v1/query", address.trim_end_matches('/'));
        let unavailable = |message: String| QueryError::Unavailable {
            address: address.to_string(),
            message,
        };
        let mut req = self.http.post(&url).form(&[("query", query)]).timeout(*timeout);
        req = match auth {
            Auth::None => req,
            Auth::Bearer(token) => req.bearer_auth(token),
            Auth::Basic { username, password } => req.basic_auth(username, Some(password)),
        };
        let resp = req.send().await.map_err(|e| unavailable(error_chain(&e)))?;
        let code = resp.status();
        if code.is_server_error() && code.as_u16() != 422 {
            return Err(unavailable(format!("HTTP {code}")));
        }
        let body = read_limited(resp, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| QueryError::Rejected(format!("HTTP {code}: {e}")))?;
        parse_answer(code.as_u16(), &body)
    }

    /// Runs a query, retrying what may pass on another try (a restart, a blip) with
    /// exponential backoff; a rejected query is not retried.
    pub async fn query(&self, endpoint: &Endpoint, query: &str) -> Result<Vec<Sample>, QueryError> {
        (|| self.query_once(endpoint, query))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_times(2),
            )
            .when(|e| matches!(e, QueryError::Unavailable { .. }))
            .await
    }

    /// One look at one metric.
    pub async fn read(
        &self,
        endpoint: &Endpoint,
        metric: &MetricPlan,
        scope: &QueryScope,
        window: Duration,
        interval: Duration,
    ) -> Reading {
        if let MetricKind::Custom { query, .. } = &metric.kind
            && query.admitted().is_none()
        {
            return Reading::Error("the metric's query was not admitted by the cluster admin's rules".into());
        }
        let query = query_for(metric, scope, window, interval);
        match self.query(endpoint, &query).await {
            Ok(samples) => reading_from(metric, scope, &samples),
            Err(e) => Reading::Error(e.to_string()),
        }
    }
}

/// The body of an answer, refused past `limit` bytes (declared or read).
async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(format!("answer larger than {limit} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(format!("answer larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 { v.round() as u64 } else { 0 }
}

/// Turns the samples of a metric's query into a reading.
pub fn reading_from(metric: &MetricPlan, scope: &QueryScope, samples: &[Sample]) -> Reading {
    fn of<'a>(samples: &'a [Sample], wl: &'a str) -> impl Iterator<Item = &'a Sample> {
        samples.iter().filter(move |s| s.label("destination_workload") == wl)
    }
    match &metric.kind {
        MetricKind::SuccessRate { .. } => {
            let counts = |wl: &str| {
                let all: f64 = of(samples, wl).map(|s| s.value()).filter(|v| v.is_finite()).sum();
                let bad: f64 = of(samples, wl)
                    .filter(|s| s.label("weir_class") == "error")
                    .map(|s| s.value())
                    .filter(|v| v.is_finite())
                    .sum();
                Counts {
                    requests: count(all),
                    bad: count(bad).min(count(all)),
                }
            };
            let (canary, baseline) = (counts(&scope.canary), counts(&scope.stable));
            let rate = |c: Counts| (c.requests > 0).then(|| 100.0 * (1.0 - c.bad as f64 / c.requests as f64));
            Reading::Counts {
                canary,
                baseline,
                canary_value: rate(canary),
                baseline_value: rate(baseline),
            }
        }
        MetricKind::Duration { .. } => {
            let quantile = |wl: &str| {
                of(samples, wl)
                    .find(|s| s.label("weir_stat") == "quantile")
                    .map(|s| s.value())
                    .filter(|v| v.is_finite())
            };
            let counts = |wl: &str| {
                let stat = |inf: bool| {
                    of(samples, wl)
                        .filter(|s| s.label("weir_stat") == "count" && (s.label("le") == "+Inf") == inf)
                        .map(|s| s.value())
                        .sum::<f64>()
                };
                let (all, fast) = (count(stat(true)), count(stat(false)));
                Counts {
                    requests: all,
                    bad: all.saturating_sub(fast),
                }
            };
            Reading::Counts {
                canary: counts(&scope.canary),
                baseline: counts(&scope.stable),
                canary_value: quantile(&scope.canary),
                baseline_value: quantile(&scope.stable),
            }
        }
        MetricKind::Custom { .. } => match samples {
            [] => Reading::Value(None),
            [one] => Reading::Value(Some(one.value()).filter(|v| v.is_finite())),
            many => Reading::Error(format!(
                "custom query of {} returned {} series; it must return one (aggregate with sum, max, ...)",
                metric.name,
                many.len()
            )),
        },
    }
}
