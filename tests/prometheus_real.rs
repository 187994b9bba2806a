//! The Prometheus provider against a real Prometheus scraping Istio-shaped series that
//! this test serves: the built-in queries return the expected success rate and p99, and
//! down servers, bad queries, empty results and NaN give the right readings.

use std::time::{Duration, Instant};

use weir::api::Counts;
use weir::edges::prometheus::{Auth, Endpoint, Prometheus, QueryScope};
use weir::judge::Reading;
use weir::plan::{MetricKind, MetricPlan};

/// Per second: canary 10 requests, 2 of them 5xx; stable 40 requests, none 5xx.
/// Canary latency: 95 % in (250, 500] ms, 5 % in (1000, 2500]; stable: all in (50, 100].
fn exposition(seconds: f64) -> String {
    let mut out = String::new();
    let n = |per_second: f64| (per_second * seconds).floor();
    let base = r#"reporter="destination",destination_workload_namespace="dev",destination_service="backend.dev.svc.cluster.local""#;
    for (wl, version, ok, err) in [("backend-canary", "canary", 8.0, 2.0), ("backend", "stable", 40.0, 0.0)] {
        out += &format!(
            "istio_requests_total{{{base},destination_workload=\"{wl}\",destination_version=\"{version}\",response_code=\"200\"}} {}\n",
            n(ok)
        );
        out += &format!(
            "istio_requests_total{{{base},destination_workload=\"{wl}\",destination_version=\"{version}\",response_code=\"503\"}} {}\n",
            n(err)
        );
        let total = ok + err;
        let buckets: Vec<(&str, f64)> = if wl == "backend-canary" {
            vec![
                ("0.5", 0.0),
                ("1", 0.0),
                ("5", 0.0),
                ("10", 0.0),
                ("25", 0.0),
                ("50", 0.0),
                ("100", 0.0),
                ("250", 0.0),
                ("500", 0.95),
                ("1000", 0.95),
                ("2500", 1.0),
                ("5000", 1.0),
                ("10000", 1.0),
                ("+Inf", 1.0),
            ]
        } else {
            vec![
                ("0.5", 0.0),
                ("1", 0.0),
                ("5", 0.0),
                ("10", 0.0),
                ("25", 0.0),
                ("50", 0.0),
                ("100", 1.0),
                ("250", 1.0),
                ("500", 1.0),
                ("1000", 1.0),
                ("2500", 1.0),
                ("5000", 1.0),
                ("10000", 1.0),
                ("+Inf", 1.0),
            ]
        };
        for (le, share) in buckets {
            out += &format!(
                "istio_request_duration_milliseconds_bucket{{{base},destination_workload=\"{wl}\",response_code=\"200\",le=\"{le}\"}} {}\n",
                n(total * share)
            );
        }
    }
    out
}

struct Mesh {
    prometheus: weir_testkit::devcluster::LocalPrometheus,
    _exporter: tokio::task::JoinHandle<()>,
}

async fn mesh() -> Mesh {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let start = Instant::now();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move { exposition(start.elapsed().as_secs_f64() * 10.0) }),
    );
    let exporter = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    // Started from this thread, not a blocking-pool one: the child dies with the thread
    // that spawned it (PR_SET_PDEATHSIG), and pool threads come and go.
    let prometheus = weir_testkit::devcluster::LocalPrometheus::start(&[target]).expect("start Prometheus");
    Mesh {
        prometheus,
        _exporter: exporter,
    }
}

fn scope() -> QueryScope {
    QueryScope {
        namespace: "dev".into(),
        stable: "backend".into(),
        canary: "backend-canary".into(),
    }
}

fn endpoint(address: &str) -> Endpoint {
    Endpoint {
        address: address.into(),
        auth: Auth::None,
        timeout: Duration::from_secs(2),
    }
}

fn success_rate() -> MetricPlan {
    MetricPlan {
        name: "request-success-rate".into(),
        kind: MetricKind::SuccessRate { min: 99.0 },
    }
}

fn duration() -> MetricPlan {
    MetricPlan {
        name: "request-duration".into(),
        kind: MetricKind::Duration {
            quantile: 0.99,
            max_ms: 500.0,
        },
    }
}

fn custom(query: &str) -> MetricPlan {
    MetricPlan {
        name: "custom".into(),
        kind: MetricKind::Custom {
            query: weir::plan::Query::Admitted(query.into()),
            min: None,
            max: Some(1.0),
        },
    }
}

/// Waits until Prometheus has scraped a full `window` (plus one scrape) of the series,
/// so rates are not cut at the series' start.
async fn read_when_ready(p: &Prometheus, ep: &Endpoint, m: &MetricPlan, window: Duration) -> Reading {
    let full = |r: &Reading| match r {
        Reading::Counts { canary, baseline, .. } => canary.requests > 0 && baseline.requests > 0,
        Reading::Value(v) => v.is_some(),
        Reading::Error(_) => false,
    };
    let start = Instant::now();
    while !full(&p.read(ep, m, &scope(), window, window).await) && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(window + Duration::from_millis(1500)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = p.read(ep, m, &scope(), window, window).await;
        let ready = match &r {
            Reading::Counts { canary, baseline, .. } => canary.requests > 0 && baseline.requests > 0,
            Reading::Value(v) => v.is_some(),
            Reading::Error(_) => false,
        };
        if ready || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance
}

#[tokio::test(flavor = "multi_thread")]
async fn builtin_queries_read_success_rate_and_latency_per_version() {
    let mesh = mesh().await;
    let p = Prometheus::new().unwrap();
    let ep = endpoint(&mesh.prometheus.address);
    let window = Duration::from_secs(3);

    let Reading::Counts {
        canary,
        baseline,
        canary_value,
        baseline_value,
    } = read_when_ready(&p, &ep, &success_rate(), window).await
    else {
        panic!("success rate should read counts");
    };
    let canary_rate = canary_value.unwrap();
    assert!(
        close(canary_rate, 80.0, 1.5),
        "canary success {canary_rate} (counts {canary:?})"
    );
    assert_eq!(baseline_value, Some(100.0));
    assert_eq!(baseline.bad, 0);
    assert!(baseline.requests > 3 * canary.requests, "{baseline:?} vs {canary:?}");

    let Reading::Counts {
        canary,
        baseline,
        canary_value,
        baseline_value,
    } = read_when_ready(&p, &ep, &duration(), window).await
    else {
        panic!("duration should read counts");
    };
    // histogram_quantile interpolates linearly inside (1000, 2500]: 1000 + 1500 * 0.04/0.05.
    let p99 = canary_value.unwrap();
    assert!(close(p99, 2200.0, 60.0), "canary p99 {p99}");
    let stable_p99 = baseline_value.unwrap();
    assert!(close(stable_p99, 99.5, 1.0), "stable p99 {stable_p99}");
    let slow_share = canary.bad as f64 / canary.requests as f64;
    assert!(
        close(slow_share, 0.05, 0.02),
        "canary slow share {slow_share} ({canary:?})"
    );
    assert_eq!(baseline.bad, 0, "no stable request over 500ms");
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_templates_are_rendered_and_read() {
    let mesh = mesh().await;
    let p = Prometheus::new().unwrap();
    let ep = endpoint(&mesh.prometheus.address);
    let q = r#"sum(rate(istio_requests_total{destination_workload="{{canary}}",destination_workload_namespace="{{namespace}}",response_code=~"5.."}[{{interval}}]))"#;
    match read_when_ready(&p, &ep, &custom(q), Duration::from_secs(3)).await {
        // 2 errors per simulated second, and the exporter runs 10 simulated seconds per second.
        Reading::Value(Some(v)) => assert!(close(v, 20.0, 2.0), "canary 5xx rate {v}"),
        other => panic!("expected a value, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_results_and_nan_are_no_data_not_failures() {
    let mesh = mesh().await;
    let p = Prometheus::new().unwrap();
    let ep = endpoint(&mesh.prometheus.address);
    let nobody = QueryScope {
        namespace: "dev".into(),
        stable: "nobody".into(),
        canary: "nobody-canary".into(),
    };
    match p
        .read(
            &ep,
            &success_rate(),
            &nobody,
            Duration::from_secs(3),
            Duration::from_secs(3),
        )
        .await
    {
        Reading::Counts {
            canary,
            baseline,
            canary_value,
            ..
        } => {
            assert_eq!(
                (canary, baseline, canary_value),
                (Counts::default(), Counts::default(), None)
            );
        }
        other => panic!("expected empty counts, got {other:?}"),
    }
    assert_eq!(
        p.read(
            &ep,
            &custom("absent(nothing_here{a=\"b\"}) > 1"),
            &scope(),
            Duration::from_secs(1),
            Duration::from_secs(1)
        )
        .await,
        Reading::Value(None)
    );
    assert_eq!(
        p.read(
            &ep,
            &custom("0/0"),
            &scope(),
            Duration::from_secs(1),
            Duration::from_secs(1)
        )
        .await,
        Reading::Value(None),
        "NaN is no data"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_query_is_an_error_that_names_the_cause() {
    let mesh = mesh().await;
    let p = Prometheus::new().unwrap();
    let ep = endpoint(&mesh.prometheus.address);
    match p
        .read(
            &ep,
            &custom("sum(rate(x[1m]"),
            &scope(),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .await
    {
        Reading::Error(e) => assert!(e.contains("rejected") && e.contains("bad_data"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
    // A custom query must aggregate to one series.
    match read_when_ready(&p, &ep, &custom("istio_requests_total"), Duration::from_secs(1)).await {
        Reading::Error(e) => assert!(e.contains("returned") && e.contains("series"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_down_server_is_an_error_after_quick_retries() {
    let mut mesh = mesh().await;
    let address = mesh.prometheus.address.clone();
    mesh.prometheus.stop();
    let p = Prometheus::new().unwrap();
    let started = Instant::now();
    match p
        .read(
            &endpoint(&address),
            &success_rate(),
            &scope(),
            Duration::from_secs(3),
            Duration::from_secs(3),
        )
        .await
    {
        Reading::Error(e) => assert!(e.contains("unreachable"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "retries are bounded");
}

/// An endpoint that answers with more than a look could ever need (here 2 MiB of JSON)
/// is refused after 1 MiB, not read to the end.
#[tokio::test]
async fn an_endless_answer_is_cut_off_and_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                continue;
            }
            let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
            for _ in 0..32 {
                if socket.write_all(chunk.as_bytes()).await.is_err() {
                    break;
                }
            }
            let _ = socket.write_all(b"0\r\n\r\n").await;
        }
    });
    let p = Prometheus::new().unwrap();
    let reading = p
        .read(
            &endpoint(&address),
            &success_rate(),
            &scope(),
            Duration::from_secs(3),
            Duration::from_secs(3),
        )
        .await;
    server.abort();
    match reading {
        Reading::Error(e) => assert!(e.contains("larger than 1048576 bytes"), "{e}"),
        other => panic!("an endless answer was read: {other:?}"),
    }
}
