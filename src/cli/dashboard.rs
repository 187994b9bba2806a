//! `weir dashboard`: a read-only web page on loopback, for a person who would rather look
//! than read `weir status`. `/` lists every Rollout as `weir get` does; `/rollouts/NS/NAME`
//! draws the release in progress (or the last one): the canary weight over time from
//! weir's Events, canary and baseline bad-request ratios over time against their bound
//! from Prometheus (`--prometheus`, e.g. a port-forward), every decision marked where it
//! happened, and the judge's last evidence (values, counts, Λ and why) from status. The
//! pages are HTML with inline SVG drawn here: no JavaScript, nothing to build on the
//! user's side; they reload themselves every 5 s.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::Html;
use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event;
use kube::{Api, Client, ResourceExt};
use tracing::info;

use crate::Error;
use crate::api::Rollout;
use crate::cli::report;
use crate::edges::prometheus::{self, QueryScope};
use crate::plan::{self, MetricKind};

/// What the pages read from.
struct Sources {
    client: Client,
    /// Every namespace, or one.
    namespace: Option<String>,
    prometheus: Option<String>,
    http: reqwest::Client,
}

/// Serves the dashboard on `addr` until Ctrl-C.
pub async fn serve(
    client: Client,
    namespace: Option<String>,
    prometheus: Option<String>,
    addr: SocketAddr,
) -> Result<(), Error> {
    let sources = Arc::new(Sources {
        client,
        namespace,
        prometheus: prometheus.map(|p| p.trim_end_matches('/').to_string()),
        http: crate::edges::outbound::client(Some(Duration::from_secs(10))),
    });
    let app = axum::Router::new()
        .route("/", axum::routing::get(list_page))
        .route("/rollouts/{namespace}/{name}", axum::routing::get(release_page))
        .with_state(sources);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(%addr, "dashboard on http://{addr}/");
    println!("weir dashboard on http://{addr}/ (Ctrl-C stops it)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// Text as HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>{title}</title><style>
body{{font-family:DejaVu Sans,sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse}}
td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left;font-size:13px}}
.phase{{font-weight:bold}} .RolledBack,.InvalidSpec{{color:#c0392b}} .Succeeded,.Healthy{{color:#1e8449}}
.Progressing,.Promoting{{color:#1f618d}} h2{{margin-top:28px}} .msg{{color:#555}}
</style></head><body>{body}</body></html>"#,
        title = esc(title)
    ))
}

async fn list_page(State(sources): State<Arc<Sources>>) -> Html<String> {
    let api: Api<Rollout> = match &sources.namespace {
        Some(ns) => Api::namespaced(sources.client.clone(), ns),
        None => Api::all(sources.client.clone()),
    };
    let rollouts = match api.list(&Default::default()).await {
        Ok(list) => list.items,
        Err(e) => return page("weir", &format!("<p>cannot list Rollouts: {}</p>", esc(&e.to_string()))),
    };
    let (head, lines) = report::get_rows(&rollouts, true);
    let mut body = String::from("<h1>weir: Rollouts</h1><table><tr>");
    for h in &head {
        let _ = write!(body, "<th>{}</th>", esc(h));
    }
    body.push_str("</tr>");
    for line in &lines {
        let link = format!("/rollouts/{}", line[0]);
        let _ = write!(
            body,
            r#"<tr><td><a href="{}">{}</a></td><td class="phase {}">{}</td>"#,
            esc(&link),
            esc(&line[0]),
            esc(&line[1]),
            esc(&line[1])
        );
        for cell in &line[2..] {
            let _ = write!(body, "<td>{}</td>", esc(cell));
        }
        body.push_str("</tr>");
    }
    body.push_str("</table>");
    page("weir", &body)
}

/// A time series: (seconds since the chart's start, value).
type Series = Vec<(f64, f64)>;

/// A decision, drawn where it happened.
struct Marker {
    at: f64,
    reason: String,
}

async fn release_page(State(sources): State<Arc<Sources>>, Path((ns, name)): Path<(String, String)>) -> Html<String> {
    let api: Api<Rollout> = Api::namespaced(sources.client.clone(), &ns);
    let rollout = match api.get(&name).await {
        Ok(r) => r,
        Err(e) => return page(&name, &format!("<p>{ns}/{name}: {}</p>", esc(&e.to_string()))),
    };
    let status = rollout.status.clone().unwrap_or_default();
    let (start, end) = release_span(&status);
    let events = decisions(&sources.client, &ns, &name, start, end).await;
    let span = end.duration_since(start).as_secs_f64().max(1.0);
    let mut body = format!(
        r#"<p><a href="/">all Rollouts</a></p><h1>{ns}/{name}: <span class="phase {phase}">{phase}</span></h1><p class="msg">{msg}</p>"#,
        ns = esc(&ns),
        name = esc(&name),
        phase = esc(&format!("{:?}", status.phase)),
        msg = esc(&status.message)
    );
    let _ = write!(
        body,
        "<p>stable {} · canary {} · step {} · canary weight {}% · release from {} to {}</p>",
        esc(status.stable_revision.as_deref().unwrap_or("-")),
        esc(status.canary_revision.as_deref().unwrap_or("-")),
        esc(status.step_display.as_deref().unwrap_or("-")),
        status.canary_weight,
        start.strftime("%H:%M:%S"),
        end.strftime("%H:%M:%S")
    );
    let written = weight_series(&events, span, status.canary_weight);
    let served = served_share(&sources, &rollout, (start, end)).await;
    body.push_str("<h2>Canary weight (%)</h2>");
    let lines = [
        ("written (weir's Events)", "#1f618d", &written),
        ("served (share of requests)", "#8e44ad", &served),
    ];
    body.push_str(&chart(&lines, None, &events.1, span, 100.0));
    body.push_str(&ratio_charts(&sources, &rollout, (start, end), &events.1).await);
    let threshold = plan::plan(&rollout.spec)
        .ok()
        .filter(|p| p.judge == weir_core::spec::JudgeKind::Sequential)
        .map(|p| weir_core::judge::rollback_threshold(p.count_metrics(), p.sequential.alpha));
    body.push_str(&evidence(&status, threshold));
    page(&format!("{ns}/{name}"), &body)
}

/// The release in progress, else the last one; a quarter of an hour when there is none.
fn release_span(status: &crate::api::RolloutStatus) -> (Timestamp, Timestamp) {
    let now = Timestamp::now();
    let release = status.release.as_ref().or(status.history.first());
    let parse = |t: Option<&str>| t.and_then(|t| t.parse::<Timestamp>().ok());
    let start = parse(release.map(|r| r.started.as_str())).unwrap_or(now - jiff::SignedDuration::from_mins(15));
    let end = match &status.release {
        Some(_) => now,
        None => parse(release.and_then(|r| r.ended.as_deref())).unwrap_or(now),
    };
    // A little before and after, so the first and last decisions show.
    (
        start - jiff::SignedDuration::from_secs(10),
        end + jiff::SignedDuration::from_secs(10),
    )
}

/// weir's Events about the Rollout in the span, oldest first: (time, reason, note), and
/// as markers.
async fn decisions(
    client: &Client,
    ns: &str,
    name: &str,
    start: Timestamp,
    end: Timestamp,
) -> (Vec<(f64, String, String)>, Vec<Marker>) {
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut told: Vec<(f64, String, String)> = events
        .iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("Rollout") && r.name.as_deref() == Some(name))
        })
        .filter_map(|e| {
            let at = e
                .event_time
                .as_ref()
                .map(|t| t.0)
                .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))?;
            (at >= start && at <= end).then(|| {
                let secs = at.duration_since(start).as_secs_f64();
                (
                    secs,
                    e.reason.clone().unwrap_or_default(),
                    e.note.clone().unwrap_or_default(),
                )
            })
        })
        .collect();
    // A repeated reason is one Event with a series: its last time is a decision too.
    let repeated: Vec<(f64, String, String)> = events
        .iter()
        .filter(|e| e.regarding.as_ref().is_some_and(|r| r.name.as_deref() == Some(name)))
        .filter_map(|e| {
            let last = e.series.as_ref()?.last_observed_time.0;
            let secs = last.duration_since(start).as_secs_f64();
            (last >= start && last <= end).then(|| (secs, e.reason.clone().unwrap_or_default(), String::new()))
        })
        .collect();
    told.extend(repeated);
    told.sort_by(|a, b| a.0.total_cmp(&b.0));
    let markers = told
        .iter()
        .map(|(at, reason, _)| Marker {
            at: *at,
            reason: reason.clone(),
        })
        .collect();
    (told, markers)
}

/// The canary's share of the requests the mesh served, in percent (what the weights did).
async fn served_share(sources: &Sources, rollout: &Rollout, (start, end): (Timestamp, Timestamp)) -> Series {
    let (Some(prometheus), Ok(plan)) = (&sources.prometheus, plan::plan(&rollout.spec)) else {
        return Vec::new();
    };
    let scope = QueryScope {
        namespace: rollout.namespace().unwrap_or_default(),
        stable: plan.target.clone(),
        canary: plan.canary.clone(),
    };
    let query = prometheus::served_share_query(&scope);
    let series = range(sources, prometheus, &query, start, end).await;
    series.into_iter().next().map(|(_, s)| s).unwrap_or_default()
}

/// The canary weight as weir wrote it, step by step, from its Events. The API keeps a
/// repeated reason as one Event with a series, so later steps may show only in the
/// served share.
fn weight_series(events: &(Vec<(f64, String, String)>, Vec<Marker>), span: f64, now: u32) -> Series {
    let mut points: Series = vec![(0.0, 0.0)];
    let mut last = 0.0;
    for (at, reason, note) in &events.0 {
        let weight = match reason.as_str() {
            "StepStarted" => number_before(note, "% ("),
            "TrafficToStable" => note.split("-> ").nth(1).and_then(|r| number_before(r, "%")),
            "RolledBack" | "CanaryCancelled" | "Released" | "Releasing" | "CanaryNotReady" | "NewerRevision" => {
                Some(0.0)
            }
            _ => None,
        };
        if let Some(w) = weight {
            points.push((*at, last));
            points.push((*at, w));
            last = w;
        }
    }
    let end = if events.0.is_empty() { f64::from(now) } else { last };
    points.push((span, end));
    points
}

/// The number just before `suffix`'s first occurrence ("canary weight 25% (" → 25).
fn number_before(text: &str, suffix: &str) -> Option<f64> {
    let head = &text[..text.find(suffix)?];
    let digits: String = head.chars().rev().take_while(|c| c.is_ascii_digit()).collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

/// Canary and baseline bad-request ratios over time for each built-in metric, against
/// the bound the judge holds them to.
// Long: one query and one chart per built-in metric, each step of it in reading order.
async fn ratio_charts(
    sources: &Sources,
    rollout: &Rollout,
    (start, end): (Timestamp, Timestamp),
    markers: &[Marker],
) -> String {
    let Some(prometheus) = &sources.prometheus else {
        return "<p>(run <code>weir dashboard --prometheus URL</code> to draw the canary's and the baseline's error and slow-request ratios)</p>".into();
    };
    let Ok(plan) = plan::plan(&rollout.spec) else {
        return String::new();
    };
    let scope = QueryScope {
        namespace: rollout.namespace().unwrap_or_default(),
        stable: plan.target.clone(),
        canary: plan.canary.clone(),
    };
    let span = end.duration_since(start).as_secs_f64().max(1.0);
    let mut out = String::new();
    for metric in &plan.metrics {
        let (Some(query), Some(bound)) = (
            prometheus::bad_ratio_query(&metric.kind, &scope),
            metric.kind.bad_ratio_bound(),
        ) else {
            continue;
        };
        let title = match metric.kind {
            MetricKind::SuccessRate { .. } => "Error ratio (5xx)",
            _ => "Slow-request ratio (over the latency bound)",
        };
        let series = range(sources, prometheus, &query, start, end).await;
        let canary = series
            .iter()
            .find(|(w, _)| *w == scope.canary)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        let stable = series
            .iter()
            .find(|(w, _)| *w == scope.stable)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        let top = canary
            .iter()
            .chain(&stable)
            .map(|p| p.1)
            .fold(bound * 2.0, f64::max)
            .min(1.0);
        let _ = write!(out, "<h2>{} — {}</h2>", esc(title), esc(&metric.name));
        out.push_str(&chart(
            &[
                ("canary", "#c0392b", &canary),
                ("baseline (stable)", "#1e8449", &stable),
            ],
            Some(bound),
            markers,
            span,
            top,
        ));
    }
    out
}

/// A range query: one series per `destination_workload`, in seconds since `start`.
async fn range(
    sources: &Sources,
    prometheus: &str,
    query: &str,
    start: Timestamp,
    end: Timestamp,
) -> Vec<(String, Series)> {
    let step = (end.duration_since(start).as_secs_f64() / 200.0).max(1.0);
    let params = [
        ("query", query.to_string()),
        ("start", start.as_second().to_string()),
        ("end", end.as_second().to_string()),
        ("step", format!("{step:.0}")),
    ];
    let url = format!("{prometheus}/api/v1/query_range");
    let Ok(response) = sources.http.get(url).query(&params).send().await else {
        return Vec::new();
    };
    let Ok(body) = response.json::<serde_json::Value>().await else {
        return Vec::new();
    };
    let results = body
        .pointer("/data/result")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    results
        .iter()
        .map(|r| {
            let workload = r
                .pointer("/metric/destination_workload")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string();
            let points = r
                .get("values")
                .and_then(serde_json::Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter_map(|v| {
                            let t = v.get(0)?.as_f64()?;
                            let value: f64 = v.get(1)?.as_str()?.parse().ok()?;
                            value.is_finite().then(|| (t - start.as_second() as f64, value))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (workload, points)
        })
        .collect()
}

const W: f64 = 960.0;
const H: f64 = 220.0;
const LEFT: f64 = 48.0;
const TOP: f64 = 16.0;

/// An SVG line chart: `lines` over `span` seconds, from 0 to `top`, a dashed `bound`
/// and the decisions marked.
fn chart(lines: &[(&str, &str, &Series)], bound: Option<f64>, markers: &[Marker], span: f64, top: f64) -> String {
    let (pw, ph) = (W - LEFT - 16.0, H - TOP - 28.0);
    let x = |t: f64| LEFT + (t / span).clamp(0.0, 1.0) * pw;
    let y = |v: f64| TOP + ph - (v / top.max(f64::MIN_POSITIVE)).clamp(0.0, 1.0) * ph;
    let mut svg = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img">"#);
    let _ = write!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>"##
    );
    for frac in [0.0, 0.5, 1.0] {
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" font-size="11" text-anchor="end" fill="#666">{}</text>"##,
            LEFT - 4.0,
            y(top * frac) + 4.0,
            short(top * frac)
        );
    }
    for m in markers {
        let _ = write!(
            svg,
            r##"<line x1="{0}" x2="{0}" y1="{TOP}" y2="{1}" stroke="#999" stroke-dasharray="2,3"/><text x="{0}" y="{2}" font-size="10" fill="#555" transform="rotate(-30 {0} {2})">{3}</text>"##,
            x(m.at),
            TOP + ph,
            TOP + ph + 12.0,
            esc(&m.reason)
        );
    }
    if let Some(b) = bound {
        let (right, at) = (LEFT + pw, y(b));
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{right}" y1="{at}" y2="{at}" stroke="#e67e22" stroke-dasharray="6,4"/><text x="{tx}" y="{ty}" font-size="11" fill="#e67e22">bound {label}</text>"##,
            tx = right - 90.0,
            ty = at - 4.0,
            label = short(b)
        );
    }
    for (i, (label, colour, points)) in lines.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/><text x="{}" y="{}" font-size="12" fill="{colour}">{}</text>"#,
            path.join(" "),
            LEFT + 8.0 + 150.0 * i as f64,
            TOP + 14.0,
            esc(label)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn short(v: f64) -> String {
    match v {
        v if v >= 10.0 => format!("{v:.0}"),
        v if v >= 0.1 => format!("{v:.2}"),
        v => format!("{v:.4}"),
    }
}

/// The judge's last evidence per metric, from status.
/// Λ against the threshold that rolls back, on a log scale: a bar that fills at it.
fn lambda_bar(lambda: Option<f64>, threshold: Option<f64>) -> String {
    let (Some(l), Some(t)) = (lambda, threshold) else {
        return "-".into();
    };
    let filled = (l.max(1.0).ln() / t.ln()).clamp(0.0, 1.0) * 120.0;
    let colour = if l >= t { "#c0392b" } else { "#1f618d" };
    format!(
        r##"<svg width="124" height="12"><rect x="0" y="1" width="122" height="10" fill="none" stroke="#aaa"/><rect x="1" y="2" width="{filled:.0}" height="8" fill="{colour}"/></svg> {l:.3e} / {t:.0}"##
    )
}

fn evidence(status: &crate::api::RolloutStatus, threshold: Option<f64>) -> String {
    let Some(analysis) = &status.analysis else {
        return String::new();
    };
    let mut out = String::from(
        "<h2>The judge's last look</h2><table><tr><th>metric</th><th>verdict</th><th>canary</th><th>baseline</th><th>canary bad/n</th><th>baseline bad/n</th><th>Λ / rollback threshold</th><th>why</th></tr>",
    );
    for m in &analysis.metrics {
        let counts = |c: Option<crate::api::Counts>| {
            c.map(|c| format!("{}/{}", c.bad, c.requests))
                .unwrap_or_else(|| "-".into())
        };
        let value = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&m.name),
            esc(&m.verdict),
            value(m.canary_value),
            value(m.baseline_value),
            counts(m.canary_counts),
            counts(m.baseline_counts),
            lambda_bar(m.lambda, threshold),
            esc(&m.reason)
        );
    }
    out.push_str("</table>");
    if let Some(rb) = &status.rollback {
        let _ = write!(
            out,
            "<h2>Rollback</h2><p>{}</p>",
            esc(&format!("step {} ({}%): {}", rb.step, rb.weight, rb.reason))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weight_steps_follow_weirs_events() {
        let told = vec![
            (1.0, "CanaryStarted".to_string(), "template changed".to_string()),
            (
                5.0,
                "StepStarted".into(),
                "step 1/4: canary weight 10% (1 canary pods ready)".into(),
            ),
            (
                9.0,
                "StepStarted".into(),
                "step 2/4: canary weight 25% (1 canary pods ready); step 1/4 ...".into(),
            ),
            (
                12.0,
                "RolledBack".into(),
                "rolled back revision b at step 2/4 (25%): ...".into(),
            ),
        ];
        let series = weight_series(&(told, vec![]), 20.0, 0);
        let weights: Vec<f64> = series.iter().map(|p| p.1).collect();
        assert_eq!(weights, vec![0.0, 0.0, 10.0, 10.0, 25.0, 25.0, 0.0, 0.0]);
    }

    #[test]
    fn a_chart_escapes_what_it_shows_and_draws_every_line() {
        let markers = [Marker {
            at: 3.0,
            reason: "<script>".into(),
        }];
        let line: Series = vec![(0.0, 0.0), (10.0, 0.5)];
        let svg = chart(&[("canary", "#c0392b", &line)], Some(0.01), &markers, 10.0, 1.0);
        assert!(svg.contains("&lt;script&gt;") && !svg.contains("<script>"));
        assert!(svg.contains("<polyline") && svg.contains("bound 0.0100"));
    }
}
