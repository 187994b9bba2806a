//! `weir dashboard`: a read-only web page on loopback, for a person who would rather look
//! than read `weir status`. `/` lists every Rollout as `weir get` does; `/rollouts/NS/NAME`
//! draws the release in progress (or the last one): the canary weight over time from
//! weir's Events and the share of requests the canary served, canary and baseline
//! bad-request ratios per interval against their bound from Prometheus (`--prometheus`,
//! e.g. a port-forward), every decision marked where it happened, and the judge's last
//! evidence (values, counts, Λ and why) from status. The pages are HTML with inline SVG
//! drawn here: no JavaScript, nothing to build on the user's side; they reload
//! themselves every 5 s.
//!
//! What a page shows comes from Rollouts, Events and Prometheus, which tenants write: the
//! pages are rendered by maud, which escapes every value it is given, so no text becomes
//! markup. The server answers only requests whose `Host` is a loopback name of its own
//! address (or one given with `--allow-host`), so a web page the user visits cannot
//! reach it through DNS rebinding, and every answer carries a Content-Security-Policy
//! that allows no script at all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event;
use kube::{Api, Client, ResourceExt};
use maud::{DOCTYPE, Markup, html};
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
    /// The shortest interval a chart point covers (`--interval`): at least twice
    /// Prometheus's scrape interval, or a window holds too few samples to count.
    interval: Duration,
    http: reqwest::Client,
}

/// Every answer: no script may run, nothing may frame the page or be sniffed as another
/// type. The style sheet is inline, the charts are inline SVG.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The `Host` values the dashboard answers: loopback names with its port, its own
/// address, and any the user allowed (`--allow-host`, e.g. behind an SSH tunnel).
pub fn allowed_hosts(addr: SocketAddr, extra: &[String]) -> Vec<String> {
    let port = addr.port();
    let mut hosts = vec![
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        addr.to_string(),
    ];
    hosts.extend(extra.iter().map(|h| h.to_ascii_lowercase()));
    hosts
}

/// The dashboard's routes, its Host check and its security headers.
pub fn router(
    client: Client,
    namespace: Option<String>,
    prometheus: Option<String>,
    interval: Duration,
    hosts: Vec<String>,
) -> axum::Router {
    let sources = Arc::new(Sources {
        client,
        namespace,
        prometheus: prometheus.map(|p| p.trim_end_matches('/').to_string()),
        interval,
        http: crate::edges::outbound::client(Some(Duration::from_secs(10))),
    });
    let hosts = Arc::new(hosts);
    axum::Router::new()
        .route("/", axum::routing::get(list_page))
        .route("/rollouts/{namespace}/{name}", axum::routing::get(release_page))
        .with_state(sources)
        .layer(axum::middleware::from_fn(move |req, next| {
            guard(hosts.clone(), req, next)
        }))
}

/// Refuses a request for another host (DNS rebinding), and sets the security headers.
async fn guard(hosts: Arc<Vec<String>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_ascii_lowercase);
    let mut response = match host {
        Some(h) if hosts.contains(&h) => next.run(req).await,
        _ => (
            StatusCode::MISDIRECTED_REQUEST,
            "weir dashboard: this Host is not one the dashboard serves (see --allow-host)\n",
        )
            .into_response(),
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Serves the dashboard on `addr` until Ctrl-C.
pub async fn serve(
    client: Client,
    namespace: Option<String>,
    prometheus: Option<String>,
    interval: Duration,
    addr: SocketAddr,
    extra_hosts: &[String],
) -> Result<(), Error> {
    let app = router(
        client,
        namespace,
        prometheus,
        interval,
        allowed_hosts(addr, extra_hosts),
    );
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

const STYLE: &str = "body{font-family:DejaVu Sans,sans-serif;margin:24px;color:#222} table{border-collapse:collapse}
td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left;font-size:13px}
.phase{font-weight:bold} .RolledBack,.InvalidSpec{color:#c0392b} .Succeeded,.Healthy{color:#1e8449}
.Progressing,.Promoting{color:#1f618d} h2{margin-top:28px} .msg{color:#555}";

fn page(title: &str, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="5";
                title { (title) }
                style { (maud::PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    };
    Html(markup.into_string())
}

async fn list_page(State(sources): State<Arc<Sources>>) -> Html<String> {
    let api: Api<Rollout> = match &sources.namespace {
        Some(ns) => Api::namespaced(sources.client.clone(), ns),
        None => Api::all(sources.client.clone()),
    };
    let rollouts = match api.list(&Default::default()).await {
        Ok(list) => list.items,
        Err(e) => return page("weir", html! { p { "cannot list Rollouts: " (e.to_string()) } }),
    };
    let (head, lines) = report::get_rows(&rollouts, true);
    page(
        "weir",
        html! {
            h1 { "weir: Rollouts" }
            table {
                tr { @for h in &head { th { (h) } } }
                @for line in &lines {
                    @if let [name, phase, rest @ ..] = line.as_slice() {
                        tr {
                            td { a href=(format!("/rollouts/{name}")) { (name) } }
                            td class=(format!("phase {phase}")) { (phase) }
                            @for cell in rest { td { (cell) } }
                        }
                    }
                }
            }
        },
    )
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
        Err(e) => return page(&name, html! { p { (ns) "/" (name) ": " (e.to_string()) } }),
    };
    let status = rollout.status.clone().unwrap_or_default();
    let (start, end) = release_span(&status);
    let events = decisions(&sources.client, &ns, &name, start, end).await;
    let span = end.duration_since(start).as_secs_f64().max(1.0);
    let written = weight_series(&events, span, status.canary_weight);
    let served = served_share(&sources, &rollout, (start, end)).await;
    let phase = format!("{:?}", status.phase);
    let threshold = plan::plan(&rollout.spec)
        .ok()
        .filter(|p| p.judge == weir_core::spec::JudgeKind::Sequential)
        .map(|p| weir_core::judge::rollback_threshold(p.count_metrics(), p.sequential.alpha));
    let weight_lines = [
        Line {
            label: "written (weir's Events)",
            colour: "#1f618d",
            points: &written,
            step: None,
        },
        Line {
            label: "served (share of requests per interval)",
            colour: "#8e44ad",
            points: &served,
            step: Some(step_of(start, end, sources.interval).as_secs_f64()),
        },
    ];
    let body = html! {
        p { a href="/" { "all Rollouts" } }
        h1 { (ns) "/" (name) ": " span class=(format!("phase {phase}")) { (phase) } }
        p class="msg" { (status.message) }
        p {
            "stable " (status.stable_revision.as_deref().unwrap_or("-"))
            " · canary " (status.canary_revision.as_deref().unwrap_or("-"))
            " · step " (status.step_display.as_deref().unwrap_or("-"))
            " · canary weight " (status.canary_weight) "%"
            " · release from " (start.strftime("%H:%M:%S").to_string()) " to " (end.strftime("%H:%M:%S").to_string())
        }
        h2 { "Canary weight (%)" }
        (chart(&weight_lines, None, &events.1, span, Some(100.0)))
        (ratio_charts(&sources, &rollout, (start, end), &events.1).await)
        (evidence(&status, threshold))
    };
    page(&format!("{ns}/{name}"), body)
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

/// The canary's share of the requests the mesh served in each interval of the chart, in
/// percent (what the weights did, interval by interval: not a trailing window, which
/// would show the canary serving minutes after it stopped).
async fn served_share(sources: &Sources, rollout: &Rollout, (start, end): (Timestamp, Timestamp)) -> Series {
    let (Some(prometheus), Ok(plan)) = (&sources.prometheus, plan::plan(&rollout.spec)) else {
        return Vec::new();
    };
    let scope = QueryScope {
        namespace: rollout.namespace().unwrap_or_default(),
        stable: plan.target.clone(),
        canary: plan.canary.clone(),
    };
    let step = step_of(start, end, sources.interval);
    let query = prometheus::served_share_query(&scope, step);
    let series = range(sources, prometheus, &query, (start, end), step).await;
    series.into_iter().next().map(|(_, s)| s).unwrap_or_default()
}

/// The chart's interval: about 120 points over the span, at least `shortest`.
fn step_of(start: Timestamp, end: Timestamp, shortest: Duration) -> Duration {
    let secs = (end.duration_since(start).as_secs_f64() / 120.0)
        .max(shortest.as_secs_f64())
        .max(1.0)
        .ceil();
    Duration::from_secs(secs as u64)
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

/// Canary and baseline bad-request ratios per interval for each built-in metric, in
/// percent, against the bound the judge holds them to. An interval in which a version
/// served nothing has no point: its line ends where it stopped serving.
// Long: one query and one chart per built-in metric, each step of it in reading order.
async fn ratio_charts(
    sources: &Sources,
    rollout: &Rollout,
    (start, end): (Timestamp, Timestamp),
    markers: &[Marker],
) -> Markup {
    let Some(prometheus) = &sources.prometheus else {
        return html! { p { "(run " code { "weir dashboard --prometheus URL" } " to draw the canary's and the baseline's error and slow-request ratios)" } };
    };
    let Ok(plan) = plan::plan(&rollout.spec) else {
        return html! {};
    };
    let scope = QueryScope {
        namespace: rollout.namespace().unwrap_or_default(),
        stable: plan.target.clone(),
        canary: plan.canary.clone(),
    };
    let span = end.duration_since(start).as_secs_f64().max(1.0);
    let step = step_of(start, end, sources.interval);
    let mut charts = Vec::new();
    for metric in &plan.metrics {
        let (Some(query), Some(bound)) = (
            prometheus::bad_ratio_query(&metric.kind, &scope, step),
            metric.kind.bad_ratio_bound(),
        ) else {
            continue;
        };
        let title = match metric.kind {
            MetricKind::SuccessRate { .. } => "Error ratio (5xx, % of requests)",
            _ => "Slow-request ratio (over the latency bound, % of requests)",
        };
        let series = range(sources, prometheus, &query, (start, end), step).await;
        let percent = |workload: &str| -> Series {
            series
                .iter()
                .find(|(w, _)| w == workload)
                .map(|(_, s)| s.iter().map(|(t, v)| (*t, v * 100.0)).collect())
                .unwrap_or_default()
        };
        let (canary, stable) = (percent(&scope.canary), percent(&scope.stable));
        let lines = [
            Line {
                label: "canary",
                colour: "#c0392b",
                points: &canary,
                step: Some(step.as_secs_f64()),
            },
            Line {
                label: "baseline (stable)",
                colour: "#1e8449",
                points: &stable,
                step: Some(step.as_secs_f64()),
            },
        ];
        charts.push(html! {
            h2 { (title) " — " (metric.name) }
            (chart(&lines, Some(bound * 100.0), markers, span, None))
        });
    }
    html! { @for c in &charts { (c) } }
}

/// A range query: one series per `destination_workload`, in seconds since `start`.
async fn range(
    sources: &Sources,
    prometheus: &str,
    query: &str,
    (start, end): (Timestamp, Timestamp),
    step: Duration,
) -> Vec<(String, Series)> {
    let params = [
        ("query", query.to_string()),
        ("start", start.as_second().to_string()),
        ("end", end.as_second().to_string()),
        ("step", format!("{}", step.as_secs().max(1))),
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

/// One line of a chart.
struct Line<'a> {
    label: &'a str,
    colour: &'a str,
    points: &'a Series,
    /// Prometheus's interval between points: a longer gap means no point (the version
    /// served nothing then), and the line breaks. `None`: a step function from Events.
    step: Option<f64>,
}

const W: f64 = 960.0;
const H: f64 = 250.0;
const LEFT: f64 = 56.0;
const TOP: f64 = 16.0;
/// Rows of decision labels under a chart, so labels at the same instant do not overlap.
const LABEL_ROWS: usize = 4;

/// A round top for a chart's axis and its tick spacing: 1, 2 or 5 times a power of ten,
/// four ticks at most, so ticks read 0, 0.5, 1, 1.5 rather than 0.0502.
fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
    let raw = max / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

/// A percentage for an axis or a bound, with its unit.
fn percent(v: f64) -> String {
    let text = format!("{v:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} %")
}

/// Polylines of a series, broken where points are further apart than `gap` seconds (an
/// interval without a point: the version served nothing then).
fn segments(points: &Series, gap: f64) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut last: Option<f64> = None;
    for &(t, v) in points {
        match (last, out.last_mut()) {
            (Some(l), Some(part)) if t - l <= gap => part.push((t, v)),
            _ => out.push(vec![(t, v)]),
        }
        last = Some(t);
    }
    out
}

/// Each marker's label row: the first row whose last label ends before it starts.
fn label_rows(xs: &[(f64, usize)]) -> Vec<usize> {
    let mut ends = [f64::MIN; LABEL_ROWS];
    xs.iter()
        .map(|(x, chars)| {
            let free = ends.iter().position(|end| end < x).unwrap_or(LABEL_ROWS - 1);
            if let Some(end) = ends.get_mut(free) {
                *end = x + 6.0 * *chars as f64 + 8.0;
            }
            free
        })
        .collect()
}

/// An SVG line chart in percent: `lines` over `span` seconds from 0 to `top` (else a
/// round value above the data and the bound), a dashed `bound`, the decisions marked.
// Long: one SVG, drawn top to bottom: frame, ticks, markers, bound, lines.
fn chart(lines: &[Line], bound: Option<f64>, markers: &[Marker], span: f64, top: Option<f64>) -> Markup {
    let highest = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .chain(bound.map(|b| b * 2.0))
        .fold(0.0, f64::max);
    let (top, tick) = match top {
        Some(t) => (t, t / 4.0),
        None => nice_axis(highest.min(100.0)),
    };
    let (pw, ph) = (W - LEFT - 16.0, H - TOP - 28.0 - 12.0 * LABEL_ROWS as f64);
    let x = |t: f64| LEFT + (t / span).clamp(0.0, 1.0) * pw;
    let y = |v: f64| TOP + ph - (v / top.max(f64::MIN_POSITIVE)).clamp(0.0, 1.0) * ph;
    let ticks: Vec<f64> = (0..=((top / tick).round() as usize)).map(|i| i as f64 * tick).collect();
    let rows = label_rows(&markers.iter().map(|m| (x(m.at), m.reason.len())).collect::<Vec<_>>());
    html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(W) height=(H) role="img" {
            rect x=(LEFT) y=(TOP) width=(pw) height=(ph) fill="#fafafa" stroke="#ccc" {}
            @for t in &ticks {
                line x1=(LEFT) x2=(LEFT + pw) y1=(y(*t)) y2=(y(*t)) stroke="#eee" {}
                text x=(LEFT - 4.0) y=(y(*t) + 4.0) font-size="11" text-anchor="end" fill="#666" { (percent(*t)) }
            }
            @for (m, row) in markers.iter().zip(&rows) {
                line x1=(x(m.at)) x2=(x(m.at)) y1=(TOP) y2=(TOP + ph + 4.0 + 12.0 * *row as f64) stroke="#999" stroke-dasharray="2,3" {}
                text x=(x(m.at) + 2.0) y=(TOP + ph + 14.0 + 12.0 * *row as f64) font-size="10" fill="#555" { (m.reason) }
            }
            @if let Some(b) = bound {
                line x1=(LEFT) x2=(LEFT + pw) y1=(y(b)) y2=(y(b)) stroke="#e67e22" stroke-dasharray="6,4" {}
                text x=(LEFT + pw - 90.0) y=(y(b) - 4.0) font-size="11" fill="#e67e22" { "bound " (percent(b)) }
            }
            @for (i, l) in lines.iter().enumerate() {
                @for part in segments(l.points, l.step.map_or(f64::INFINITY, |s| s * 1.5)) {
                    polyline fill="none" stroke=(l.colour) stroke-width="2"
                        points=(part.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect::<Vec<_>>().join(" ")) {}
                }
                text x=(LEFT + 8.0 + 260.0 * i as f64) y=(TOP + 14.0) font-size="12" fill=(l.colour) { (l.label) }
            }
        }
    }
}

/// Λ against the threshold that rolls back, on a log scale: a bar that fills at it.
fn lambda_bar(lambda: Option<f64>, threshold: Option<f64>) -> Markup {
    let (Some(l), Some(t)) = (lambda, threshold) else {
        return html! { "-" };
    };
    let filled = (l.max(1.0).ln() / t.ln()).clamp(0.0, 1.0) * 120.0;
    let colour = if l >= t { "#c0392b" } else { "#1f618d" };
    html! {
        svg width="124" height="12" {
            rect x="0" y="1" width="122" height="10" fill="none" stroke="#aaa" {}
            rect x="1" y="2" width=(format!("{filled:.0}")) height="8" fill=(colour) {}
        }
        " " (format!("{l:.3e} / {t:.0}"))
    }
}

/// The judge's last evidence per metric, from status.
fn evidence(status: &crate::api::RolloutStatus, threshold: Option<f64>) -> Markup {
    let Some(analysis) = &status.analysis else {
        return html! {};
    };
    let counts = |c: Option<crate::api::Counts>| {
        c.map(|c| format!("{}/{}", c.bad, c.requests))
            .unwrap_or_else(|| "-".into())
    };
    let value = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
    html! {
        h2 { "The judge's last look" }
        table {
            tr { th { "metric" } th { "verdict" } th { "canary" } th { "baseline" } th { "canary bad/n" } th { "baseline bad/n" } th { "Λ / rollback threshold" } th { "why" } }
            @for m in &analysis.metrics {
                tr {
                    td { (m.name) } td { (m.verdict) } td { (value(m.canary_value)) } td { (value(m.baseline_value)) }
                    td { (counts(m.canary_counts)) } td { (counts(m.baseline_counts)) }
                    td { (lambda_bar(m.lambda, threshold)) } td { (m.reason) }
                }
            }
        }
        @if let Some(rb) = &status.rollback {
            h2 { "Rollback" }
            p { "step " (rb.step) " (" (rb.weight) "%): " (rb.reason) }
        }
    }
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
        let lines = [Line {
            label: "canary",
            colour: "#c0392b",
            points: &line,
            step: Some(10.0),
        }];
        let svg = chart(&lines, Some(1.0), &markers, 10.0, None).into_string();
        assert!(svg.contains("&lt;script&gt;") && !svg.contains("<script>"));
        assert!(svg.contains("<polyline") && svg.contains("bound 1 %"), "{svg}");
    }

    #[test]
    fn axes_fall_on_round_values_with_their_unit() {
        assert_eq!(nice_axis(0.0502 * 100.0), (6.0, 2.0));
        assert_eq!(nice_axis(2.0), (2.0, 0.5));
        assert_eq!(nice_axis(13.0), (15.0, 5.0));
        assert_eq!(percent(0.5), "0.5 %");
        assert_eq!(percent(25.0), "25 %");
    }

    #[test]
    fn a_version_that_stops_serving_ends_its_line_and_labels_at_one_instant_stack() {
        let points: Series = vec![(0.0, 1.0), (10.0, 1.0), (20.0, 2.0), (200.0, 0.0)];
        assert_eq!(segments(&points, 25.0).len(), 2);
        assert_eq!(
            label_rows(&[(100.0, 10), (100.0, 10), (101.0, 10), (500.0, 5)]),
            [0, 1, 2, 0]
        );
    }
}
