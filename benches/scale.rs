//! weir at scale on one controller replica: many idle Rollouts and many progressing at
//! once, against the local control plane (testcluster/build.sh) and a real Prometheus,
//! with the release build of `weir` as a separate process. Prints one table: the time to
//! take every Rollout over, the controller's RSS (idle, and peak while the canaries
//! progress), bump → canary scaled up, canary ready → first weight, how late each timed
//! step's weight was written after it was due, and the API calls weir made per step.
//!
//!   cargo bench --bench scale                                  # 1,000 idle + 100 progressing
//!   WEIR_SCALE_IDLE=10000 WEIR_SCALE_ACTIVE=1000 cargo bench --bench scale
//!   WEIR_SCALE_IDLE=0 WEIR_SCALE_ACTIVE=1000 WEIR_SCALE_BURST=1 cargo bench --bench scale   # bumps at once
//!
//! Idle apps have `replicas: 0` (weir reads only Deployments, never Pods, so their pods
//! would load the cluster, not weir). Progressing apps have one replica, four steps of
//! `WEIR_SCALE_STEP` (default 20 s) under the default judge, which looks every 5 s; the
//! metric is the admin's template `vector(0)` (always within bounds: the bench measures the
//! controller, not the judge) on a real Prometheus, and the bumps are
//! spread over one step so the steps fall due evenly, as independent releases do.
//! Latencies are measured by watches in this process: they include the watch delivery.
//! Without `--bench` (as `cargo test --all-targets` runs it) it does nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use weir::api::{Phase, Rollout};
use weir_core::state::State;
use weir_testkit::devcluster::{self, LocalCluster, LocalPrometheus};

const NS: &str = "scale";
const STEPS: [u32; 4] = [10, 25, 50, 100];

struct Sizes {
    idle: usize,
    active: usize,
    step: Duration,
    /// `WEIR_SCALE_BURST=1`: every bump at once, as a mass image update would (the peer
    /// bench's shape), instead of spread over one step.
    burst: bool,
}

impl Sizes {
    fn from_env() -> Sizes {
        let var = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        Sizes {
            idle: var("WEIR_SCALE_IDLE", 1000),
            active: var("WEIR_SCALE_ACTIVE", 100),
            step: Duration::from_secs(var("WEIR_SCALE_STEP", 20) as u64),
            burst: var("WEIR_SCALE_BURST", 0) == 1,
        }
    }
}

fn rss_mib(pid: u32) -> Option<f64> {
    devcluster::usage(pid).map(|(rss, _)| rss)
}

fn cpu_seconds(pid: u32) -> f64 {
    devcluster::usage(pid).map(|(_, cpu)| cpu).unwrap_or(0.0)
}

fn istio(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("networking.istio.io", "v1", kind))
}

fn app_name(i: usize) -> String {
    format!("app-{i:05}")
}

async fn create_app(client: &Client, i: usize, replicas: i32, step: Duration) -> Result<(), weir_testkit::Error> {
    let name = app_name(i);
    let labels = json!({"app": name, "weir.dev/track": "stable"});
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "hello:1"}]}}}
    }))?;
    Api::<Deployment>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &deployment)
        .await?;
    let dr: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": name},
        "spec": {"host": name, "subsets": [{"name": "stable", "labels": {"weir.dev/track": "stable"}},
                                           {"name": "canary", "labels": {"weir.dev/track": "canary"}}]}}))?;
    Api::<DynamicObject>::namespaced_with(client.clone(), NS, &istio("DestinationRule"))
        .create(&PostParams::default(), &dr)
        .await?;
    let vs: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": name},
        "spec": {"hosts": [name], "http": [{"route": [
            {"destination": {"host": name, "subset": "stable"}, "weight": 100},
            {"destination": {"host": name, "subset": "canary"}, "weight": 0}]}]}}))?;
    Api::<DynamicObject>::namespaced_with(client.clone(), NS, &istio("VirtualService"))
        .create(&PostParams::default(), &vs)
        .await?;
    let steps: Vec<_> = STEPS.iter().map(|w| json!({"weight": w})).collect();
    let rollout: Rollout = serde_json::from_value(json!({
        "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": name},
        "spec": {"targetRef": {"kind": "Deployment", "name": name},
                 "trafficRouting": {"istio": {"virtualService": {"name": name},
                     "destinationRule": {"name": name, "stableSubset": "stable", "canarySubset": "canary"}}},
                 "steps": steps,
                 "progressDeadline": "10m",
                 "scaleDownDelay": "1s",
                 "analysis": {"interval": humantime::format_duration(step).to_string(),
                              "metrics": [{"name": "always-within", "templateRef": {"name": "always-within"}, "max": 1}]}}
    }))?;
    Api::<Rollout>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &rollout)
        .await?;
    Ok(())
}

/// What the bench's own watches saw, each stamped when it arrived.
#[derive(Default)]
struct Seen {
    /// Canary weight changes per VirtualService.
    weights: BTreeMap<String, Vec<(u32, Timestamp)>>,
    /// `stepStartedAt` of each analysed step, per Rollout.
    step_started: BTreeMap<(String, u32), Timestamp>,
    phases: BTreeMap<String, Phase>,
    canary_scaled: BTreeMap<String, Timestamp>,
    canary_ready: BTreeMap<String, Timestamp>,
}

/// The bench's own watches, until aborted (before the cluster stops: with its API server
/// gone, a watch retries with backoff, and a runtime that shuts down waits for none).
fn watch_all(client: &Client, seen: Arc<Mutex<Seen>>) -> Vec<tokio::task::JoinHandle<()>> {
    let vs_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &istio("VirtualService"));
    let s = seen.clone();
    let vs = tokio::spawn(
        watcher::watcher(vs_api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .for_each(move |vs| {
                if let Ok(vs) = vs {
                    let weight = vs.data.pointer("/spec/http/0/route/1/weight").and_then(|v| v.as_u64());
                    let mut seen = s.lock().unwrap_or_else(|e| e.into_inner());
                    let changes = seen.weights.entry(vs.name_any()).or_default();
                    if let Some(w) = weight.map(|w| w as u32)
                        && changes.last().map(|c| c.0) != Some(w)
                    {
                        changes.push((w, Timestamp::now()));
                    }
                }
                futures::future::ready(())
            }),
    );
    let s = seen.clone();
    let rollouts = tokio::spawn(
        watcher::watcher(
            Api::<Rollout>::namespaced(client.clone(), NS),
            watcher::Config::default(),
        )
        .default_backoff()
        .applied_objects()
        .for_each(move |r| {
            if let Ok(r) = r
                && let Some(status) = &r.status
            {
                let mut seen = s.lock().unwrap_or_else(|e| e.into_inner());
                seen.phases.insert(r.name_any(), status.phase.clone());
                if let State::Analysing { at, started, .. } = &status.state {
                    seen.step_started.insert((r.name_any(), at.step), *started);
                }
            }
            futures::future::ready(())
        }),
    );
    let s = seen;
    let deployments = tokio::spawn(
        watcher::watcher(
            Api::<Deployment>::namespaced(client.clone(), NS),
            watcher::Config::default(),
        )
        .default_backoff()
        .applied_objects()
        .for_each(move |d| {
            if let Ok(d) = d
                && let Some(app) = d.name_any().strip_suffix("-canary")
            {
                let now = Timestamp::now();
                let mut seen = s.lock().unwrap_or_else(|e| e.into_inner());
                if d.spec.replicas.unwrap_or(0) >= 1 {
                    seen.canary_scaled.entry(app.to_string()).or_insert(now);
                }
                if d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0) >= 1 {
                    seen.canary_ready.entry(app.to_string()).or_insert(now);
                }
            }
            futures::future::ready(())
        }),
    );
    vec![vs, rollouts, deployments]
}

/// `apiserver_request_total` summed by verb and resource, from the API server's metrics.
async fn api_requests(client: &Client) -> Result<BTreeMap<(String, String), f64>, weir_testkit::Error> {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| weir_testkit::Error::Setup(e.to_string()))?;
    let text = client.request_text(req).await?;
    let mut totals = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(&format!("{k}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        let mut resource = label("resource");
        if !label("group").is_empty() {
            resource = format!("{}.{resource}", label("group"));
        }
        if !label("subresource").is_empty() {
            resource = format!("{resource}/{}", label("subresource"));
        }
        *totals.entry((label("verb"), resource)).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(totals)
}

fn millis(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64() * 1000.0
}

/// "median / p99 / max ms (n)" of a list of milliseconds.
fn spread(v: Vec<f64>) -> String {
    let n = v.len();
    format!("{} (n={n})", devcluster::spread_of(v, "ms"))
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut done: F) -> Result<(), weir_testkit::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, weir_testkit::Error>>,
{
    let start = Instant::now();
    while !done().await? {
        if start.elapsed() > limit {
            return Err(weir_testkit::Error::Setup(format!("{what}: not within {limit:?}")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

async fn run(sizes: Sizes) -> Result<(), weir_testkit::Error> {
    let total = sizes.idle + sizes.active;
    let bin = devcluster::binaries()?;
    let cluster = LocalCluster::start(&bin).await?;
    let client = cluster.client().await?;
    let repo = devcluster::repo_dir();
    for file in ["testcluster/istio-crds.yaml", "crds/rollout.yaml"] {
        devcluster::apply_yaml(&client, &std::fs::read_to_string(repo.join(file))?).await?;
    }
    let prometheus = LocalPrometheus::start(&[])?;
    devcluster::apply_yaml(
        &client,
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n"),
    )
    .await?;

    let created = Instant::now();
    futures::stream::iter(0..total)
        .map(|i| {
            let replicas = if i < sizes.active { 1 } else { 0 };
            create_app(&client, i, replicas, sizes.step)
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    eprintln!("created {total} apps in {:.0} s", created.elapsed().as_secs_f64());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    wait_until("progressing apps available", Duration::from_secs(900), || async {
        let list = deployments.list(&ListParams::default()).await?;
        Ok(list
            .items
            .iter()
            .filter(|d| d.status.as_ref().and_then(|s| s.available_replicas) == Some(1))
            .count()
            >= sizes.active)
    })
    .await?;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let watches = watch_all(&client, seen.clone());
    let weir = std::path::Path::new(env!("CARGO_BIN_EXE_weir"));
    let port = devcluster::free_port()?.to_string();
    // weir's own identity: the API server's audit log records its requests alone.
    let kubeconfig = cluster.kubeconfig_as("peer-weir")?.display().to_string();
    // The metric is the admin's template (PromQL written in a Rollout is refused).
    let providers = cluster.dir().join("providers.yaml");
    let declared = format!(
        "providers:\n  - {{name: main, address: '{}', timeout: 1s, default: true}}\n\
         templates:\n  - {{name: always-within, query: 'vector(0)'}}\n",
        prometheus.address
    );
    std::fs::write(&providers, declared)?;
    let mut args: Vec<String> = vec![
        "controller".into(),
        format!("--http-addr=127.0.0.1:{port}"),
        format!("--providers={}", providers.display()),
    ];
    // `WEIR_SCALE_HEAPTRACK=<file prefix>`: weir runs under heaptrack (an allocation
    // profile of the whole run; its RSS figures then include heaptrack's own).
    let heaptrack = std::env::var("WEIR_SCALE_HEAPTRACK").ok();
    let program = match &heaptrack {
        Some(out) => {
            args.splice(0..0, ["-o".to_string(), out.clone(), weir.display().to_string()]);
            devcluster::which("heaptrack")
                .ok_or_else(|| weir_testkit::Error::Setup("heaptrack not installed".into()))?
        }
        None => weir.to_path_buf(),
    };
    let process = devcluster::spawn_with_env(
        "weir",
        &program,
        &args,
        cluster.dir(),
        &[("KUBECONFIG", kubeconfig.as_str()), ("RUST_LOG", "warn")],
    )?;
    let pid = process.pid();
    let peak = Arc::new(Mutex::new(0.0f64));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some(rss) = rss_mib(pid) {
                    let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                    *p = p.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let healthy = |seen: &Arc<Mutex<Seen>>| {
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.phases.values().filter(|p| **p == Phase::Healthy).count()
    };
    let takeover = Instant::now();
    wait_until("takeover", Duration::from_secs(900), || async {
        Ok(healthy(&seen) == total)
    })
    .await?;
    let takeover = takeover.elapsed();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let idle_rss = rss_mib(pid).unwrap_or(0.0);
    let cpu_at_takeover = cpu_seconds(pid);
    let takeover_peak = *peak.lock().unwrap_or_else(|e| e.into_inner());

    // Bump the progressing apps, spread over one step (or all at once).
    let before = api_requests(&client).await?;
    let (cluster_cpu_before, prometheus_cpu_before) = (cluster.cpu_seconds(), prometheus_cpu(&prometheus));
    let reconciles_before = reconciles(&port).await;
    let releases_from = Timestamp::now();
    let mut bumped = BTreeMap::new();
    let gap = match sizes.burst {
        true => Duration::ZERO,
        false => sizes.step / sizes.active.max(1) as u32,
    };
    let bumps_started = Instant::now();
    for i in 0..sizes.active {
        let name = app_name(i);
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "hello:2"}]}}}});
        bumped.insert(name.clone(), Timestamp::now());
        deployments
            .patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await?;
        tokio::time::sleep_until((bumps_started + gap * (i as u32 + 1)).into()).await;
    }
    let active: Vec<String> = (0..sizes.active).map(app_name).collect();
    let done = |seen: &Arc<Mutex<Seen>>| promoted(&seen.lock().unwrap_or_else(|e| e.into_inner()), &active);
    let progressed = Instant::now();
    let outcome = wait_until(
        "every canary promoted",
        sizes.step * 4 + Duration::from_secs(600),
        || async { Ok(done(&seen) == sizes.active) },
    )
    .await;
    let progress_time = progressed.elapsed();
    let releases_to = Timestamp::now();
    let after = api_requests(&client).await?;
    let cpu_releases = cpu_seconds(pid) - cpu_at_takeover;
    let mut cpu_of: BTreeMap<String, f64> = cluster.cpu_seconds();
    for (name, used) in cpu_of.iter_mut() {
        *used -= cluster_cpu_before.get(name).copied().unwrap_or(0.0);
    }
    cpu_of.insert("prometheus".into(), prometheus_cpu(&prometheus) - prometheus_cpu_before);
    cpu_of.insert("weir".into(), cpu_releases);
    let reconciles_after = reconciles(&port).await;
    sampler.abort();
    let peak_rss = *peak.lock().unwrap_or_else(|e| e.into_inner());
    if heaptrack.is_some() {
        // A clean exit, so that heaptrack writes its profile.
        let _ = tokio::process::Command::new("pkill")
            .args(["-TERM", "-x", "weir"])
            .status()
            .await;
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
    drop(process);
    for w in watches {
        w.abort();
    }

    // Per Rollout: bump → canary scaled; canary ready → 10 %; step k due → step k+1 written.
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let (mut to_canary, mut to_first_weight, mut lateness) = (vec![], vec![], vec![]);
    for name in &active {
        let (Some(bump), Some(weights)) = (bumped.get(name), seen.weights.get(name)) else {
            continue;
        };
        if let Some(scaled) = seen.canary_scaled.get(name) {
            to_canary.push(millis(*bump, *scaled));
        }
        let written = |w: u32| weights.iter().find(|(x, _)| *x == w).map(|(_, t)| *t);
        if let (Some(ready), Some(first)) = (seen.canary_ready.get(name), written(STEPS[0])) {
            to_first_weight.push(millis(*ready, first));
        }
        for (k, next) in STEPS.iter().skip(1).enumerate() {
            if let (Some(started), Some(t)) = (seen.step_started.get(&(name.clone(), k as u32)), written(*next)) {
                let due = *started + sizes.step;
                lateness.push(millis(due, t));
            }
        }
    }
    let promoted = promoted(&seen, &active);
    let steps_done = (promoted * STEPS.len()).max(1) as f64;
    let delta = |verb: &str, resource: &str| {
        let k = (verb.to_string(), resource.to_string());
        after.get(&k).unwrap_or(&0.0) - before.get(&k).unwrap_or(&0.0)
    };
    let writes = [
        (
            "VirtualService patches",
            delta("PATCH", "networking.istio.io.virtualservices"),
        ),
        ("status applies", delta("APPLY", "weir.dev.rollouts/status")),
        ("Events created (events.k8s.io)", delta("POST", "events.k8s.io.events")),
        (
            "Deployment applies and patches (canary, paused)",
            // The bench's own bumps are PATCHes too.
            delta("APPLY", "apps.deployments") + delta("PATCH", "apps.deployments") - sizes.active as f64,
        ),
    ];
    let reads = delta("GET", "apps.deployments")
        + delta("GET", "networking.istio.io.virtualservices")
        + delta("GET", "networking.istio.io.destinationrules");

    println!(
        "\nweir scale bench: {} idle + {} progressing Rollouts, steps {STEPS:?} x {:?}, one controller",
        sizes.idle, sizes.active, sizes.step
    );
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| take over {total} Rollouts (all Healthy) | {:.1} s |",
        takeover.as_secs_f64()
    );
    println!("| RSS, peak during takeover | {takeover_peak:.1} MiB |");
    println!("| RSS, idle with {total} Rollouts | {idle_rss:.1} MiB |");
    println!("| RSS, peak while {} progress | {peak_rss:.1} MiB |", sizes.active);
    println!(
        "| weir's CPU-seconds: takeover (+15 s idle) / while they progress | {cpu_at_takeover:.1} / {cpu_releases:.1} |"
    );
    println!(
        "| promoted | {promoted} of {} in {:.0} s |",
        sizes.active,
        progress_time.as_secs_f64()
    );
    println!(
        "| image bump → canary scaled up (median / p99 / max) | {} |",
        spread(to_canary)
    );
    println!("| canary ready → first weight written | {} |", spread(to_first_weight));
    println!("| step due → next weight written | {} |", spread(lateness));
    let releases = promoted.max(1) as f64;
    for (what, n) in &writes {
        println!("| {what} per release | {:.1} |", n / releases);
    }
    let all: f64 = writes.iter().map(|(_, n)| n).sum();
    println!(
        "| all writes per release (per step) | {:.1} ({:.1}) |",
        all / releases,
        all / steps_done
    );
    println!("| GETs (Deployments, VS, DR) per release | {:.0} |", reads / releases);
    let own = gets_of_releases(&cluster.audit_log(), &active, releases_from, releases_to)?;
    println!(
        "| of which of the releasing Rollouts' own objects (audit log; the rest: idle Rollouts' resync) | {:.0} |",
        own as f64 / releases
    );
    let per_step = writes_per_step(&cluster.audit_log(), &active)?;
    println!(
        "| writes per step, between the first and the last step's weight (median / max) | {} |",
        per_step
    );
    let wall = releases_to.duration_since(releases_from).as_secs_f64();
    let cpu: Vec<String> = cpu_of.iter().map(|(name, used)| format!("{name} {used:.0}")).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "| CPU-seconds while they progress ({:.0} s × {cores} cores = {:.0}) | {} (all {:.0}) |",
        wall,
        wall * cores as f64,
        cpu.join(", "),
        cpu_of.values().sum::<f64>()
    );
    let (n, seconds) = (
        reconciles_after.0 - reconciles_before.0,
        reconciles_after.1 - reconciles_before.1,
    );
    println!(
        "| weir's reconciles while they progress (mean time each) | {n:.0} ({:.0} ms) |",
        seconds * 1000.0 / n.max(1.0)
    );
    let audited = devcluster::audited_requests(&cluster.audit_log(), "peer-weir", releases_from, releases_to)?;
    println!(
        "| the API server's time per request of weir, but watches (audit log; median / p99 / max) | {} |",
        devcluster::spread_of(audited.server_ms, "ms")
    );
    let gets: u64 = (audited.kinds.iter())
        .filter(|(kind, _)| kind.starts_with("get ") || kind.starts_with("list "))
        .map(|(_, n)| *n)
        .sum();
    let watches: u64 = (audited.kinds.iter())
        .filter(|(kind, _)| kind.starts_with("watch "))
        .map(|(_, n)| *n)
        .sum();
    println!(
        "| weir's API requests per release, but watches (audit log): all / reads (get, list) / writes | {:.1} / {:.1} / {:.1} |",
        (audited.all - watches) as f64 / releases,
        gets as f64 / releases,
        audited.writes as f64 / releases
    );
    println!(
        "| kube-apiserver's CPU-seconds per release | {:.2} |",
        cpu_of.get("kube-apiserver").copied().unwrap_or(0.0) / releases
    );
    let kinds: Vec<String> = audited
        .kinds
        .iter()
        .map(|(kind, n)| format!("{kind} {:.1}", *n as f64 / releases))
        .collect();
    println!(
        "\nweir's API requests per release, while they progress: {}",
        kinds.join(", ")
    );
    drop(prometheus);
    drop(cluster);
    outcome
}

fn prometheus_cpu(prometheus: &LocalPrometheus) -> f64 {
    prometheus.pid().and_then(devcluster::usage).map_or(0.0, |u| u.1)
}

/// weir's reconciles so far and the seconds they took, from its /metrics.
async fn reconciles(port: &str) -> (f64, f64) {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = match reqwest::get(&url).await {
        Ok(answer) => answer.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let value = |name: &str| {
        let line = text.lines().find(|l| l.starts_with(name));
        line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
    };
    (
        value("weir_reconcile_duration_seconds_count").unwrap_or(0.0),
        value("weir_reconcile_duration_seconds_sum").unwrap_or(0.0),
    )
}

/// weir's GETs of the progressing Rollouts' own objects (target, canary, VirtualService
/// and DestinationRule, all named after the app) between `from` and `to`, from the audit
/// log, which records weir's requests alone.
fn gets_of_releases(
    log: &std::path::Path,
    active: &[String],
    from: Timestamp,
    to: Timestamp,
) -> Result<u64, weir_testkit::Error> {
    let active: std::collections::BTreeSet<&str> = active.iter().map(String::as_str).collect();
    let mut gets = 0;
    for line in std::fs::read_to_string(log)?.lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let at = e["requestReceivedTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok());
        if e["verb"] != "get" || !at.is_some_and(|t| t >= from && t <= to) {
            continue;
        }
        let name = e
            .pointer("/objectRef/name")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        if active.contains(name.trim_end_matches("-canary")) {
            gets += 1;
        }
    }
    Ok(gets)
}

/// weir's writes for one Rollout's objects while it steps: after the VirtualService
/// patch of its first step's weight, up to and with the patch of the last step's
/// (three step changes), from the API server's audit log; "median / max" over the
/// Rollouts, per step change.
fn writes_per_step(log: &std::path::Path, active: &[String]) -> Result<String, weir_testkit::Error> {
    let mut by_app: BTreeMap<&str, Vec<(Timestamp, bool)>> = BTreeMap::new();
    for line in std::fs::read_to_string(log)?.lines() {
        let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let verb = e["verb"].as_str().unwrap_or_default();
        if !matches!(verb, "create" | "update" | "patch" | "delete") {
            continue;
        }
        let name = e
            .pointer("/objectRef/name")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        // Events are named `<rollout>.<suffix>`, the canary `<app>-canary`.
        let app = name.split(['.']).next().unwrap_or_default().trim_end_matches("-canary");
        let Some(app) = active.iter().find(|a| a.as_str() == app) else {
            continue;
        };
        let Some(at) = e["requestReceivedTimestamp"].as_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let weight = e.pointer("/objectRef/resource").and_then(|r| r.as_str()) == Some("virtualservices");
        by_app.entry(app.as_str()).or_default().push((at, weight));
    }
    let mut per_step: Vec<f64> = by_app
        .values_mut()
        .filter_map(|writes| {
            writes.sort_by_key(|w| w.0);
            let weights: Vec<usize> = (0..writes.len()).filter(|&i| writes[i].1).collect();
            // Weights 10, 25, 50, 100: the first and the fourth patch.
            let (first, last) = (*weights.first()?, *weights.get(STEPS.len() - 1)?);
            Some((last - first) as f64 / (STEPS.len() - 1) as f64)
        })
        .collect();
    if per_step.is_empty() {
        return Ok("no samples".into());
    }
    per_step.sort_by(f64::total_cmp);
    Ok(format!(
        "{:.1} / {:.1} (n={})",
        per_step[per_step.len() / 2],
        per_step[per_step.len() - 1],
        per_step.len()
    ))
}

/// Promoted: phase Succeeded, and the weights went 0 → 10 → 25 → 50 → 100 → 0.
fn promoted(seen: &Seen, active: &[String]) -> usize {
    active
        .iter()
        .filter(|n| {
            seen.phases.get(*n) == Some(&Phase::Succeeded)
                && seen.weights.get(*n).is_some_and(|w| w.len() == STEPS.len() + 2)
        })
        .count()
}

fn main() {
    devcluster::bench_main("scale bench", || run(Sizes::from_env()));
}
