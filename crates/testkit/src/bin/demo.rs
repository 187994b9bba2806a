//! `make demo`: a whole canary story on this machine, no cluster needed.
//!
//! Starts a local control plane (built from Go modules), the mesh simulator, a real
//! Prometheus and the weir controller; applies `examples/dev` (Istio: a VirtualService
//! and DestinationRule subsets), or with `WEIR_DEMO_ROUTER=gateway-api` (`make demo
//! ROUTER=gateway-api`) `examples/ambient` (an ambient namespace, a waypoint, an HTTPRoute
//! parented by the Service, one Service per version); bumps the backend image
//! and shows the canary go 10 → 25 → 50 → 100 live until it is promoted; then bumps to
//! a bad image and shows the rollback; prints a summary and stops everything. A local
//! stand-in for a Slack channel prints the notifications weir sends it as they arrive.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use weir_core::status::{Phase, RolloutStatus};
use weir_testkit::devcluster::{self, LocalCluster, LocalPrometheus};
use weir_testkit::meshsim::{self, MeshConfig};
use weir_testkit::{Error, rollouts};

/// The example the demo runs: where it is and what it names.
struct Example {
    dir: &'static str,
    namespace: &'static str,
    /// The Deployment, its container and its Rollout share this name.
    name: &'static str,
    /// What the example applies, for the story.
    routing: &'static str,
}

const ISTIO: Example = Example {
    dir: "examples/dev",
    namespace: "dev",
    name: "backend",
    routing: "backend + frontend, DestinationRule, VirtualService, Rollout",
};

const GATEWAY_API: Example = Example {
    dir: "examples/ambient",
    namespace: "shop",
    name: "checkout",
    routing: "an ambient namespace, its waypoint, checkout with a Service per version, an HTTPRoute parented by the Service, Rollout",
};

fn say(start: Instant, what: &str) {
    println!("[{:>6.1}s] {what}", start.elapsed().as_secs_f64());
}

async fn bump(client: &Client, ex: &Example, image: &str) -> Result<(), Error> {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": ex.name, "image": image}]}}}});
    Api::<Deployment>::namespaced(client.clone(), ex.namespace)
        .patch(ex.name, &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    Ok(())
}

/// The canary's live value of a built-in metric over the last 10 s, asked of Prometheus
/// directly: weir writes its evidence into status only when it decides something.
async fn canary_value(prometheus: &str, ex: &Example, name: &str) -> String {
    let (ns, workload) = (ex.namespace, ex.name);
    let sel = format!(
        r#"reporter="destination",destination_workload_namespace="{ns}",destination_workload="{workload}-canary""#
    );
    let query = match name {
        "request-success-rate" => format!(
            r#"sum(rate(istio_requests_total{{{sel},response_code!~"5.*"}}[10s])) / sum(rate(istio_requests_total{{{sel}}}[10s])) * 100"#
        ),
        _ => format!(
            "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{{sel}}}[10s])) by (le))"
        ),
    };
    match weir_testkit::devcluster::instant_query(prometheus, &query).await {
        Some(v) if v.is_finite() => format!("{v:.1}"),
        _ => "-".into(),
    }
}

/// Prints a line whenever the rollout's step, weight, message or the canary's live
/// numbers change, until `until`.
async fn watch(
    client: &Client,
    ex: &Example,
    prometheus: &str,
    start: Instant,
    until: &[Phase],
    limit: Duration,
) -> Result<RolloutStatus, Error> {
    let mut last = String::new();
    let began = Instant::now();
    loop {
        let s = rollouts::status(client, ex.namespace, ex.name).await?;
        let (success, p99) = if s.canary_weight > 0 {
            (
                canary_value(prometheus, ex, "request-success-rate").await,
                canary_value(prometheus, ex, "request-duration").await,
            )
        } else {
            ("-".into(), "-".into())
        };
        let metric = |name: &str| {
            if name == "request-success-rate" {
                success.clone()
            } else {
                p99.clone()
            }
        };
        let line = format!(
            "{:<11} step {:<4} canary {:>3}%  success {:>6}%  p99 {:>6} ms  {}",
            format!("{:?}", s.phase),
            s.step_display.clone().unwrap_or_else(|| "-".into()),
            s.canary_weight,
            metric("request-success-rate"),
            metric("request-duration"),
            s.message
        );
        if line != last {
            say(start, &line);
            last = line;
        }
        if until.contains(&s.phase) {
            return Ok(s);
        }
        if began.elapsed() > limit {
            return Err(Error::Setup(format!("no {until:?} within {limit:?}")));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A stand-in for a Slack incoming webhook on loopback: prints each message as it
/// arrives and counts them.
async fn slack_channel(start: Instant) -> Result<(String, Arc<AtomicUsize>), Error> {
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    let post = move |body: axum::body::Bytes| {
        let count = count.clone();
        async move {
            let message: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let text = message["text"].as_str().unwrap_or("?").replace('\n', " | ");
            say(start, &format!("Slack #releases <- {text}"));
            count.fetch_add(1, Ordering::SeqCst);
            "ok"
        }
    };
    let app = axum::Router::new().route("/slack", axum::routing::post(post));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/slack", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, received))
}

/// Bumps the image and shows the canary live until it is promoted or rolled back.
async fn release(
    client: &Client,
    ex: &Example,
    prometheus: &str,
    start: Instant,
    image: &str,
) -> Result<RolloutStatus, Error> {
    bump(client, ex, image).await?;
    watch(
        client,
        ex,
        prometheus,
        start,
        &[Phase::Progressing],
        Duration::from_secs(30),
    )
    .await?;
    watch(
        client,
        ex,
        prometheus,
        start,
        &[Phase::Succeeded, Phase::RolledBack],
        Duration::from_secs(180),
    )
    .await
}

// Long: the demo's story, one step after the other, as a person would run it.
async fn run(start: Instant, ex: &Example) -> Result<(), Error> {
    say(
        start,
        "building or finding the control plane (testcluster/build.sh; the first build takes ~15 min) ...",
    );
    let bin = devcluster::binaries()?;
    let cluster = LocalCluster::start(&bin).await?;
    say(
        start,
        &format!(
            "Kubernetes {} is up (etcd, kube-apiserver, controller-manager, scheduler, kwok)",
            cluster.server
        ),
    );
    let client = cluster.client().await?;
    let repo = devcluster::repo_dir();
    for file in ["testcluster/istio-crds.yaml", "crds/rollout.yaml"] {
        devcluster::apply_yaml(&client, &std::fs::read_to_string(repo.join(file))?).await?;
    }
    devcluster::apply_yaml(&client, &devcluster::gateway_api_crds()?).await?;
    let config = MeshConfig::from_yaml(&std::fs::read_to_string(repo.join("testcluster/mesh.yaml"))?)?;
    let mesh = meshsim::start(
        client.clone(),
        config,
        "127.0.0.1:0".parse().map_err(|_| Error::Setup("address".into()))?,
        1,
    )
    .await?;
    let prometheus = LocalPrometheus::start(&[mesh.addr.to_string()])?;
    say(
        start,
        &format!(
            "mesh simulator on {} scraped by Prometheus on {}",
            mesh.addr, prometheus.address
        ),
    );

    let (slack, notified) = slack_channel(start).await?;
    let notifications = cluster.dir().join("notifications.yaml");
    std::fs::write(
        &notifications,
        format!("receivers:\n  - {{name: team-slack, type: slack, url: '{slack}'}}\n"),
    )?;
    // The admin's one metric provider (the local Prometheus) and the metric template the
    // example's Rollout names: PromQL is the admin's, a Rollout only names a template.
    let providers = cluster.dir().join("providers.yaml");
    std::fs::write(
        &providers,
        format!(
            "providers:\n  - {{name: prometheus, address: '{}', default: true}}\n{}",
            prometheus.address,
            devcluster::EXAMPLE_TEMPLATES
        ),
    )?;
    let http_addr = format!("127.0.0.1:{}", devcluster::free_port()?);
    // weir runs as users run it: its own process, with a kubeconfig for the local cluster.
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let controller = devcluster::spawn_with_env(
        "weir",
        &devcluster::weir_binary()?,
        &[
            "controller".into(),
            format!("--http-addr={http_addr}"),
            format!("--providers={}", providers.display()),
            // The admin's notification receivers: one Slack channel (here a local stand-in).
            format!("--notifications={}", notifications.display()),
        ],
        cluster.dir(),
        &[("KUBECONFIG", kubeconfig.as_str()), ("RUST_LOG", "info,kube=warn")],
    )?;
    say(
        start,
        &format!("weir controller running (metrics on http://{http_addr}/metrics)"),
    );

    let mut example = String::new();
    let mut files: Vec<_> = std::fs::read_dir(repo.join(ex.dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        example.push_str(&std::fs::read_to_string(f)?);
        example.push_str("\n---\n");
    }
    devcluster::apply_yaml(&client, &example).await?;
    // The example's timings are for production (1m steps); the demo runs them in seconds.

    // And the team asks to hear of its canaries in its Slack channel.
    let fast = json!({"spec": {
        "notify": ["team-slack"],
        "progressDeadline": "30s", "scaleDownDelay": "3s",
        "analysis": {"interval": "6s", "tick": "1s",
                     "sequential": {"minDwell": "3s", "minRequests": 10}}}});
    rollouts::api(&client, ex.namespace)
        .patch(ex.name, &PatchParams::default(), &Patch::Merge(fast))
        .await?;
    say(start, &format!("applied {}: {}", ex.dir, ex.routing));
    watch(
        &client,
        ex,
        &prometheus.address,
        start,
        &[Phase::Healthy],
        Duration::from_secs(60),
    )
    .await?;

    let (ns, name) = (ex.namespace, ex.name);
    say(
        start,
        &format!("$ kubectl -n {ns} set image deployment/{name} {name}=nginxdemos/hello:0.4"),
    );
    // Requests that met a subset without ready pods before the first bump are the
    // example's own start-up (its pods becoming ready), not weir's doing.
    let no_ready_before = mesh
        .telemetry
        .lock()
        .map_err(|_| Error::Setup("telemetry lock".into()))?
        .no_ready_pods(ns);
    let good = release(&client, ex, &prometheus.address, start, "nginxdemos/hello:0.4").await?;
    tokio::time::sleep(Duration::from_secs(4)).await;

    say(
        start,
        &format!(
            "$ kubectl -n {ns} set image deployment/{name} {name}=nginxdemos/hello:0.5-bad   (5 % of its requests fail)"
        ),
    );
    let bad = release(&client, ex, &prometheus.address, start, "nginxdemos/hello:0.5-bad").await?;

    // Deliveries run in the background: give the last one a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = mesh
        .telemetry
        .lock()
        .map_err(|_| Error::Setup("telemetry lock".into()))?;
    let (canary_n, canary_5xx) = t.served(ns, &format!("{name}-canary"));
    let (stable_n, stable_5xx) = t.served(ns, name);
    println!("\nSummary");
    println!("  0.4      -> {:?}: {}", good.phase, good.message);
    println!("  0.5-bad  -> {:?}: {}", bad.phase, bad.message);
    println!("  requests served: stable {stable_n} ({stable_5xx} 5xx), canary {canary_n} ({canary_5xx} 5xx)");
    println!(
        "  requests sent to a destination without ready pods since the first bump: {}",
        t.no_ready_pods(ns) - no_ready_before
    );
    println!(
        "  notifications received by the Slack channel: {}",
        notified.load(Ordering::SeqCst)
    );
    drop(t);
    drop(controller);
    drop(mesh);
    drop(prometheus);
    drop(cluster);
    say(start, "stopped everything this demo started");
    Ok(())
}

fn main() -> std::process::ExitCode {
    // Quiet controller logs; the demo prints its own story.
    tracing_subscriber::fmt()
        .with_env_filter("error,kube_client=off")
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let example = match std::env::var("WEIR_DEMO_ROUTER").as_deref() {
        Ok("gateway-api") => GATEWAY_API,
        Ok("istio") | Ok("") | Err(_) => ISTIO,
        Ok(other) => {
            eprintln!("demo: WEIR_DEMO_ROUTER={other:?}: use istio or gateway-api");
            return std::process::ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    match runtime.block_on(run(start, &example)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
