//! weir beside Flagger and Argo Rollouts on the same local cluster, the same Prometheus
//! and the same mesh simulator traffic, one after the other in one run. `make peers`
//! runs it (it builds both peers first; see `testcluster/peers.sh`), or:
//!
//!   WEIR_PEERS_CANARIES=100,1000 cargo bench --bench peers
//!
//! (`WEIR_PEERS=weir,flagger,argo` picks the controllers and their order.) For each size
//! N and each controller: N apps in a namespace of their own (one Deployment each, one
//! replica, `WEIR_PEERS_RPS` requests/s through its VirtualService, default 100: the
//! bench prints how many were served); the controller started out of cluster with its
//! own identity, watching only that namespace; once it has taken every app over, every
//! app is bumped (spread over one step), app 0 to a version that fails 30 % of its
//! requests. All judge the same bounds (success rate ≥ 99 %, p99 ≤ 500 ms) over steps
//! 10/25/50/100 % of `WEIR_PEERS_STEP` (default 20 s): Flagger with `threshold`
//! `WEIR_PEERS_THRESHOLD` (default 5, its tutorials' value) and metric windows of 1 m;
//! Argo Rollouts taking the Deployment over by `workloadRef`, routing by the same
//! DestinationRule subsets, with an inline analysis after each step (1-m windows, its
//! default `failureLimit` 0); weir with its default judge. The namespace is deleted
//! before the next controller's turn, so each runs against the same load.
//!
//! Measured from outside all three: RSS (from /proc), CPU-seconds (utime + stime), API
//! requests (the API server's audit log, per identity), weights (a watch of the
//! VirtualServices), the canary's readiness (a watch of what each controller reads for
//! it: weir's and Flagger's canary Deployment, Argo's canary ReplicaSet), failed requests
//! (the mesh simulator's count for the canary's workload). Without `--bench` (as
//! `cargo test --all-targets` runs it) it does nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use weir_testkit::Error;
use weir_testkit::devcluster::{self, LocalCluster, LocalPrometheus, Process};
use weir_testkit::meshsim::{self, MeshConfig};

const STEPS: [u32; 4] = [10, 25, 50, 100];
const BAD_APP: usize = 0;

struct Settings {
    sizes: Vec<usize>,
    step: Duration,
    threshold: u32,
    /// Requests per second the mesh simulator sends each app.
    rps: f64,
    /// The controllers measured, in this order.
    peers: Vec<Peer>,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |k: &str| std::env::var(k).ok();
        Settings {
            sizes: var("WEIR_PEERS_CANARIES")
                .unwrap_or_else(|| "100".into())
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect(),
            step: Duration::from_secs(var("WEIR_PEERS_STEP").and_then(|v| v.parse().ok()).unwrap_or(20)),
            threshold: var("WEIR_PEERS_THRESHOLD").and_then(|v| v.parse().ok()).unwrap_or(5),
            rps: var("WEIR_PEERS_RPS").and_then(|v| v.parse().ok()).unwrap_or(100.0),
            peers: var("WEIR_PEERS")
                .unwrap_or_else(|| "weir,flagger,argo".into())
                .split(',')
                .filter_map(|s| Peer::ALL.into_iter().find(|p| p.key() == s.trim()))
                .collect(),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Peer {
    Weir,
    Flagger,
    Argo,
}

/// Where the peers' binaries are (testcluster/peers.sh).
struct Builds {
    flagger: PathBuf,
    flagger_crds: PathBuf,
    argo: PathBuf,
    /// A directory of CRD manifests.
    argo_crds: PathBuf,
}

impl Peer {
    const ALL: [Peer; 3] = [Peer::Weir, Peer::Flagger, Peer::Argo];

    /// How `WEIR_PEERS` names it.
    fn key(self) -> &'static str {
        match self {
            Peer::Weir => "weir",
            Peer::Flagger => "flagger",
            Peer::Argo => "argo",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Peer::Weir => "weir",
            Peer::Flagger => "Flagger v1.44.0",
            Peer::Argo => "Argo Rollouts v1.10.2",
        }
    }

    fn namespace(self) -> &'static str {
        match self {
            Peer::Weir => "peer-weir",
            Peer::Flagger => "peer-flagger",
            Peer::Argo => "peer-argo",
        }
    }

    /// The workloads that serve an app's requests, both tracks.
    fn workloads(self, app: &str) -> Vec<String> {
        match self {
            Peer::Weir => vec![app.to_string(), format!("{app}-canary")],
            Peer::Flagger => vec![format!("{app}-primary"), app.to_string()],
            // Both ReplicaSets belong to the Rollout: one workload, two versions.
            Peer::Argo => vec![app.to_string()],
        }
    }

    /// What serves the canary's requests: a workload, and a version of it when the
    /// workload serves both tracks.
    fn canary(self, app: &str) -> (String, Option<&'static str>) {
        match self {
            Peer::Weir => (format!("{app}-canary"), None),
            // Flagger's canary is the user's own Deployment; `-primary` serves stable.
            Peer::Flagger => (app.to_string(), None),
            // Labelled by the Rollout's `canaryMetadata`.
            Peer::Argo => (app.to_string(), Some("canary")),
        }
    }

    /// The objects of one app, as YAML.
    fn app(self, ns: &str, app: &str, settings: &Settings) -> String {
        let step = format!("{}s", settings.step.as_secs());
        let deployment = |labels: &str| {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {app}, namespace: {ns}}}\n\
                 spec:\n  replicas: 1\n  selector: {{matchLabels: {{{labels}}}}}\n  template:\n    metadata: {{labels: {{{labels}}}}}\n\
                 \x20   spec: {{containers: [{{name: app, image: \"hello:1\"}}]}}\n"
            )
        };
        // Service, DestinationRule (its subsets given) and VirtualService, as weir and Argo
        // route: by subset, all on stable.
        let routing = |subsets: &str| {
            format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {app}, namespace: {ns}}}\nspec: {{selector: {{app: {app}}}, ports: [{{name: http, port: 80}}]}}\n\
                 ---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {app}, namespace: {ns}}}\n\
                 spec: {{host: {app}, subsets: {subsets}}}\n\
                 ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {app}, namespace: {ns}}}\n\
                 spec: {{hosts: [{app}], http: [{{name: primary, route: [{{destination: {{host: {app}, subset: stable}}, weight: 100}}, {{destination: {{host: {app}, subset: canary}}, weight: 0}}]}}]}}\n"
            )
        };
        match self {
            Peer::Weir => format!(
                "{}{}---\napiVersion: weir.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: {app}, namespace: {ns}}}\n\
                 spec:\n  targetRef: {{kind: Deployment, name: {app}}}\n  trafficRouting: {{istio: {{virtualService: {{name: {app}}}, destinationRule: {{name: {app}, stableSubset: stable, canarySubset: canary}}}}}}\n\
                 \x20 steps: [{{weight: 10}}, {{weight: 25}}, {{weight: 50}}, {{weight: 100}}]\n  progressDeadline: 10m\n  scaleDownDelay: 1s\n\
                 \x20 analysis:\n    interval: {step}\n    metrics:\n      - {{name: request-success-rate, min: 99}}\n      - {{name: request-duration, quantile: 0.99, max: 500ms}}\n",
                deployment(&format!("app: {app}, weir.dev/track: stable")),
                routing(
                    "[{name: stable, labels: {weir.dev/track: stable}}, {name: canary, labels: {weir.dev/track: canary}}]"
                )
            ),
            Peer::Flagger => format!(
                "{}---\napiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: {app}, namespace: {ns}}}\n\
                 spec:\n  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: {app}}}\n  progressDeadlineSeconds: 600\n  service: {{port: 80}}\n\
                 \x20 analysis:\n    interval: {step}\n    threshold: {}\n    stepWeights: [10, 25, 50, 100]\n    metrics:\n\
                 \x20     - {{name: request-success-rate, thresholdRange: {{min: 99}}, interval: 1m}}\n\
                 \x20     - {{name: request-duration, thresholdRange: {{max: 500}}, interval: 1m}}\n",
                deployment(&format!("app: {app}")),
                settings.threshold
            ),
            // Argo labels the subsets with its ReplicaSets' hashes itself.
            Peer::Argo => format!(
                "{}{}---\n{}\n",
                deployment(&format!("app: {app}")),
                routing("[{name: stable}, {name: canary}]"),
                argo_rollout(ns, app, settings)
            ),
        }
    }

    /// Objects the apps of a namespace share, as YAML.
    fn shared(self, ns: &str, prometheus: &str) -> Option<String> {
        (self == Peer::Argo).then(|| argo_analysis(ns, prometheus))
    }

    /// The phase of a release as its status tells it. Argo's `Healthy` is both "at rest"
    /// and "promoted": told apart by the stable ReplicaSet's hash, which promotion changes.
    fn phase_of(self, o: &DynamicObject) -> Option<String> {
        let status = o.data.get("status")?;
        let phase = status.get("phase")?.as_str()?;
        if self != Peer::Argo {
            return Some(phase.to_string());
        }
        if status.get("abort").and_then(Value::as_bool) == Some(true) {
            return Some("Aborted".into());
        }
        let stable = status.get("stableRS").and_then(Value::as_str);
        match (phase, stable) {
            ("Healthy", Some(rs)) if status.get("currentPodHash").and_then(Value::as_str) == Some(rs) => {
                Some(format!("Healthy {rs}"))
            }
            ("Healthy", _) => Some("Progressing".into()),
            _ => Some(phase.to_string()),
        }
    }

    /// Every app taken over and at rest, by its phase (`phase_of`).
    fn at_rest(self, phase: &str) -> bool {
        match self {
            Peer::Weir => phase == "Healthy",
            Peer::Flagger => phase == "Initialized",
            Peer::Argo => phase.starts_with("Healthy "),
        }
    }

    /// A release over: Some(true) promoted, Some(false) rolled back; `rest` is the
    /// phase the app had before the bump.
    fn outcome(self, phase: &str, rest: Option<&str>) -> Option<bool> {
        match (self, phase) {
            (Peer::Weir, "Succeeded") | (Peer::Flagger, "Succeeded") => Some(true),
            (Peer::Weir, "RolledBack") | (Peer::Flagger, "Failed") | (Peer::Argo, "Aborted") => Some(false),
            (Peer::Argo, p) if p.starts_with("Healthy ") && Some(p) != rest => Some(true),
            _ => None,
        }
    }

    fn resource(self) -> ApiResource {
        let (group, version, kind) = match self {
            Peer::Weir => ("weir.dev", "v1alpha1", "Rollout"),
            Peer::Flagger => ("flagger.app", "v1beta1", "Canary"),
            Peer::Argo => ("argoproj.io", "v1alpha1", "Rollout"),
        };
        ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
    }

    /// What the controller reads to know its canary is ready: weir's and Flagger's canary
    /// Deployment, Argo's canary ReplicaSet.
    fn canary_workload(self) -> ApiResource {
        match self {
            Peer::Weir | Peer::Flagger => ApiResource::erase::<Deployment>(&()),
            Peer::Argo => ApiResource::erase::<ReplicaSet>(&()),
        }
    }

    /// The app whose canary `o` (of `canary_workload`) is, if it runs the bumped image and
    /// has an available pod of it.
    fn ready_canary_of(self, o: &DynamicObject) -> Option<String> {
        let name = o.name_any();
        let app = match self {
            Peer::Weir => name.strip_suffix("-canary")?.to_string(),
            // The user's own Deployment is Flagger's canary; `-primary` is stable.
            Peer::Flagger if name.ends_with("-primary") => return None,
            Peer::Flagger => name,
            Peer::Argo => {
                let hash = o.labels().get("rollouts-pod-template-hash")?;
                name.strip_suffix(&format!("-{hash}"))?.to_string()
            }
        };
        let image = o.data.pointer("/spec/template/spec/containers/0/image")?.as_str()?;
        let count = |field: &str| {
            o.data
                .pointer(&format!("/status/{field}"))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        // A Deployment's counts are of its new template only once it observed it.
        let observed = o.data.pointer("/status/observedGeneration").and_then(Value::as_i64);
        let current = self == Peer::Argo || observed == o.metadata.generation;
        let updated = self == Peer::Argo || count("updatedReplicas") >= 1;
        (image.starts_with("hello:2") && current && updated && count("availableReplicas") >= 1).then_some(app)
    }

    fn start(self, cluster: &LocalCluster, builds: &Builds, prometheus: &str) -> Result<Process, Error> {
        let kubeconfig = cluster.kubeconfig_as(self.namespace())?;
        let ns = self.namespace();
        match self {
            Peer::Weir => {
                let port = devcluster::free_port()?;
                devcluster::spawn_with_env(
                    "weir",
                    Path::new(env!("CARGO_BIN_EXE_weir")),
                    &[
                        "controller".into(),
                        format!("--namespace={ns}"),
                        format!("--http-addr=127.0.0.1:{port}"),
                        format!("--prometheus={prometheus}"),
                    ],
                    cluster.dir(),
                    &[("KUBECONFIG", &kubeconfig.display().to_string()), ("RUST_LOG", "warn")],
                )
            }
            // Its metrics server listens on every interface of the network namespace
            // (`:port`, not configurable): `make peers` runs the bench in a namespace of
            // its own that has only loopback.
            Peer::Flagger => devcluster::spawn(
                "flagger",
                &builds.flagger,
                &[
                    format!("-kubeconfig={}", kubeconfig.display()),
                    "-mesh-provider=istio".into(),
                    format!("-metrics-server={prometheus}"),
                    format!("-namespace={ns}"),
                    format!("-port={}", devcluster::free_port()?),
                    "-log-level=info".into(),
                    "-enable-config-tracking=false".into(),
                ],
                cluster.dir(),
            ),
            // Its health and metrics servers listen on every interface too (see above).
            // Its client's rate limit as Flagger's default (its own, 40/s, would make a
            // turn at 1,000 apps last an hour); its log at `warn` as weir's: Argo logs
            // several lines per reconcile at `info`.
            Peer::Argo => devcluster::spawn(
                "argo-rollouts",
                &builds.argo,
                &[
                    format!("--kubeconfig={}", kubeconfig.display()),
                    "--namespaced".into(),
                    format!("--namespace={ns}"),
                    "--leader-elect=false".into(),
                    format!("--healthzPort={}", devcluster::free_port()?),
                    format!("--metricsPort={}", devcluster::free_port()?),
                    "--istio-api-version=v1".into(),
                    "--qps=100".into(),
                    "--burst=250".into(),
                    "--loglevel=warn".into(),
                ],
                cluster.dir(),
            ),
        }
    }
}

/// An Argo Rollout that takes the app's Deployment over (`workloadRef`, as Argo's
/// migration guide does; the bump still patches the Deployment) and routes by the
/// DestinationRule's subsets, as weir does: steps 10/25/50/100 %, each held one step
/// length and then judged by an analysis (inline, so that no step is taken without a
/// passing one, as weir and Flagger do; a background analysis would not hold the steps).
fn argo_rollout(ns: &str, app: &str, settings: &Settings) -> String {
    let pause = json!({"pause": {"duration": format!("{}s", settings.step.as_secs())}});
    let analysis = json!({"analysis": {
        "templates": [{"templateName": "success-and-latency"}],
        "args": [{"name": "app", "value": app}],
    }});
    let steps: Vec<Value> = STEPS
        .iter()
        .flat_map(|w| [json!({"setWeight": w}), pause.clone(), analysis.clone()])
        .collect();
    let rollout = json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": app, "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app}},
            "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app, "scaleDown": "onsuccess"},
            "progressDeadlineSeconds": 600,
            "strategy": {"canary": {
                // Tells the two tracks' pods apart in Istio's `destination_version`.
                "canaryMetadata": {"labels": {"version": "canary"}},
                "stableMetadata": {"labels": {"version": "stable"}},
                "trafficRouting": {"istio": {
                    "virtualService": {"name": app, "routes": ["primary"]},
                    "destinationRule": {"name": app, "canarySubsetName": "canary", "stableSubsetName": "stable"},
                }},
                "steps": steps,
            }},
        },
    });
    rollout.to_string()
}

/// The bounds the others judge, as an Argo AnalysisTemplate: each metric measured once,
/// over the last minute of the canary's requests (Flagger's window); one failed
/// measurement fails the step and aborts the release (Argo's default `failureLimit` 0:
/// Flagger's `threshold` has no equivalent for an inline analysis).
fn argo_analysis(ns: &str, prometheus: &str) -> String {
    let canary = format!(
        "reporter=\"destination\",destination_workload_namespace=\"{ns}\",destination_workload=\"{{{{args.app}}}}\",destination_version=\"canary\""
    );
    let metric = |name: &str, query: String, condition: &str| {
        json!({
            "name": name,
            "count": 1,
            "successCondition": condition,
            "provider": {"prometheus": {"address": prometheus, "query": query}},
        })
    };
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "success-and-latency", "namespace": ns},
        "spec": {
            "args": [{"name": "app"}],
            "metrics": [
                metric(
                    "request-success-rate",
                    format!(
                        "sum(rate(istio_requests_total{{{canary},response_code!~\"5.*\"}}[1m])) / sum(rate(istio_requests_total{{{canary}}}[1m]))"
                    ),
                    "result[0] >= 0.99",
                ),
                metric(
                    "request-duration",
                    format!(
                        "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{{{canary}}}[1m])) by (le))"
                    ),
                    "result[0] <= 500",
                ),
            ],
        },
    })
    .to_string()
}

/// What the bench's watches saw of one namespace, each stamped when it arrived.
#[derive(Default)]
struct Seen {
    /// Canary weight changes per app.
    weights: BTreeMap<String, Vec<(u32, Timestamp)>>,
    phases: BTreeMap<String, String>,
    /// When each app's canary was first ready (`Peer::ready_canary_of`).
    canary_ready: BTreeMap<String, Timestamp>,
}

/// The weight of the canary in a VirtualService: the destinations weir's subset or
/// Flagger's `-canary` host names.
fn canary_weight(vs: &DynamicObject) -> Option<u32> {
    let routes = vs.data.pointer("/spec/http/0/route")?.as_array()?;
    let canary = routes.iter().filter(|r| {
        let d = &r["destination"];
        d["subset"] == "canary" || d["host"].as_str().is_some_and(|h| h.ends_with("-canary"))
    });
    Some(canary.map(|r| r["weight"].as_u64().unwrap_or(0) as u32).sum())
}

fn watch(client: &Client, peer: Peer, seen: Arc<Mutex<Seen>>) -> Vec<tokio::task::JoinHandle<()>> {
    let ns = peer.namespace();
    let istio = ApiResource::from_gvk(&GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"));
    let s = seen.clone();
    let weights = watcher::watcher(
        Api::<DynamicObject>::namespaced_with(client.clone(), ns, &istio),
        Default::default(),
    )
    .default_backoff()
    .applied_objects()
    .for_each(move |vs| {
        if let Ok(vs) = vs
            && let Some(w) = canary_weight(&vs)
        {
            let mut seen = s.lock().unwrap_or_else(|e| e.into_inner());
            let changes = seen.weights.entry(vs.name_any()).or_default();
            if changes.last().map(|c| c.0).unwrap_or(0) != w {
                changes.push((w, Timestamp::now()));
            }
        }
        futures::future::ready(())
    });
    let resource = peer.resource();
    let p = seen.clone();
    let phases = watcher::watcher(
        Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource),
        Default::default(),
    )
    .default_backoff()
    .applied_objects()
    .for_each(move |o| {
        if let Ok(o) = o
            && let Some(phase) = peer.phase_of(&o)
        {
            let mut seen = p.lock().unwrap_or_else(|e| e.into_inner());
            seen.phases.insert(o.name_any(), phase);
        }
        futures::future::ready(())
    });
    let canaries = watcher::watcher(
        Api::<DynamicObject>::namespaced_with(client.clone(), ns, &peer.canary_workload()),
        Default::default(),
    )
    .default_backoff()
    .applied_objects()
    .for_each(move |o| {
        if let Ok(o) = o
            && let Some(app) = peer.ready_canary_of(&o)
        {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.canary_ready.entry(app).or_insert_with(Timestamp::now);
        }
        futures::future::ready(())
    });
    vec![tokio::spawn(weights), tokio::spawn(phases), tokio::spawn(canaries)]
}

fn secs(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64()
}

async fn wait_until<F>(what: &str, limit: Duration, mut done: F) -> Result<(), Error>
where
    F: FnMut() -> bool,
{
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return Err(Error::Setup(format!("{what}: not within {limit:?}")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// One controller's turn, as the table shows it.
struct Turn {
    takeover: f64,
    rss_idle: f64,
    rss_peak: f64,
    cpu_takeover: f64,
    cpu_releases: f64,
    requests_per_release: f64,
    writes_per_release: f64,
    /// Per release, by verb and resource, most first.
    requests_by_kind: String,
    promoted: usize,
    rolled_back: usize,
    first_shift: String,
    to_ready: String,
    ready_to_shift: String,
    lateness: String,
    bad_rollback: Option<f64>,
    bad_failed: u64,
    /// Requests the mesh simulator served per app and second while they released.
    served_per_app: f64,
    /// CPU-seconds of the cluster's processes and Prometheus while they released.
    cluster_cpu: String,
    /// The API server's time per request of the controller (but watches).
    server_time: String,
}

struct Bed<'a> {
    cluster: &'a LocalCluster,
    client: Client,
    prometheus: &'a str,
    prometheus_pid: Option<u32>,
    mesh: &'a meshsim::Mesh,
    builds: &'a Builds,
    settings: &'a Settings,
}

async fn create_apps(bed: &Bed<'_>, peer: Peer, n: usize) -> Result<(), Error> {
    let ns = peer.namespace();
    devcluster::apply_yaml(
        &bed.client,
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
    )
    .await?;
    if let Some(yaml) = peer.shared(ns, bed.prometheus) {
        devcluster::apply_yaml(&bed.client, &yaml).await?;
    }
    futures::stream::iter(0..n)
        .map(|i| {
            let yaml = peer.app(ns, &app_name(i), bed.settings);
            let client = bed.client.clone();
            async move { devcluster::apply_yaml(&client, &yaml).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<()>, Error>>()?;
    let deployments: Api<Deployment> = Api::namespaced(bed.client.clone(), ns);
    let start = Instant::now();
    loop {
        let ready = deployments
            .list(&Default::default())
            .await?
            .items
            .iter()
            .filter(|d| d.status.as_ref().and_then(|s| s.available_replicas) == Some(1))
            .count();
        if ready >= n {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(900) {
            return Err(Error::Setup(format!("{ready} of {n} apps available after 15 min")));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn app_name(i: usize) -> String {
    format!("app-{i:04}")
}

/// Bumps every app, spread evenly over one step: each patch at its own time, without
/// waiting for the ones before it (one after another they spread over minutes at 1,000
/// through a loaded API server). Returns when each app's patch was sent.
async fn bump_all(bed: &Bed<'_>, peer: Peer, n: usize) -> Result<BTreeMap<String, Timestamp>, Error> {
    let deployments: Api<Deployment> = Api::namespaced(bed.client.clone(), peer.namespace());
    let gap = bed.settings.step / n.max(1) as u32;
    let start = tokio::time::Instant::now();
    let bump = |i: usize| {
        let deployments = deployments.clone();
        async move {
            tokio::time::sleep_until(start + gap * i as u32).await;
            let image = if i == BAD_APP { "hello:2-crash" } else { "hello:2" };
            let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
            let sent = Timestamp::now();
            deployments
                .patch(&app_name(i), &PatchParams::default(), &Patch::Strategic(patch))
                .await?;
            Ok::<_, Error>((app_name(i), sent))
        }
    };
    // In time order, so at most this many wait for their time or their answer at once.
    let bumped = futures::stream::iter(0..n).map(bump).buffered(64);
    bumped.collect::<Vec<_>>().await.into_iter().collect()
}

async fn turn(bed: &Bed<'_>, peer: Peer, n: usize) -> Result<Turn, Error> {
    let ns = peer.namespace();
    create_apps(bed, peer, n).await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watches = watch(&bed.client, peer, seen.clone());
    let started = Instant::now();
    let process = peer.start(bed.cluster, bed.builds, bed.prometheus)?;
    let pid = process.pid();
    let peak = Arc::new(Mutex::new(0.0f64));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                if let Some((rss, _)) = devcluster::usage(pid) {
                    let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                    *p = p.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let phases = |seen: &Arc<Mutex<Seen>>| seen.lock().unwrap_or_else(|e| e.into_inner()).phases.clone();
    wait_until("takeover", Duration::from_secs(1200), || {
        let p = phases(&seen);
        p.len() == n && p.values().all(|ph| peer.at_rest(ph))
    })
    .await?;
    let takeover = started.elapsed().as_secs_f64();
    let rest = phases(&seen);
    tokio::time::sleep(Duration::from_secs(15)).await;
    let (rss_idle, cpu_takeover) = devcluster::usage(pid).unwrap_or_default();
    let bad = app_name(BAD_APP);
    let bad_before = bed.canary_served(peer, &bad);

    let (served_before, cpu_before) = (bed.all_served(peer, n), bed.cpu_seconds());
    let from = Timestamp::now();
    let bumped = bump_all(bed, peer, n).await?;
    let limit = bed.settings.step * 12 + Duration::from_secs(1200);
    let finished = wait_until("every release over", limit, || {
        let p = phases(&seen);
        (0..n).all(|i| {
            let app = app_name(i);
            p.get(&app)
                .is_some_and(|ph| peer.outcome(ph, rest.get(&app).map(String::as_str)).is_some())
        })
    })
    .await;
    let to = Timestamp::now();
    let (_, cpu_end) = devcluster::usage(pid).unwrap_or_default();
    let served = (bed.all_served(peer, n) - served_before) as f64 / n as f64 / secs(from, to);
    let cluster_cpu = bed
        .cpu_seconds()
        .into_iter()
        .map(|(name, used)| format!("{name} {:.0}", used - cpu_before.get(&name).copied().unwrap_or(0.0)));
    let cluster_cpu = cluster_cpu.collect::<Vec<_>>().join(", ");
    sampler.abort();
    let rss_peak = *peak.lock().unwrap_or_else(|e| e.into_inner());
    drop(process);
    for w in watches {
        w.abort();
    }
    if let Err(e) = finished {
        eprintln!("{}: {e} (measuring what finished)", peer.name());
    }
    let audited = devcluster::audited_requests(&bed.cluster.audit_log(), ns, from, to)?;
    let (requests, writes, kinds) = (audited.all, audited.writes, audited.kinds);
    let bad_after = bed.canary_served(peer, &bad);
    let (outcomes, timings, bad_rollback) = {
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        let outcomes: Vec<Option<bool>> = (0..n)
            .map(|i| {
                let app = app_name(i);
                let rest = rest.get(&app).map(String::as_str);
                seen.phases.get(&app).and_then(|p| peer.outcome(p, rest))
            })
            .collect();
        (
            outcomes,
            timings(&seen, &bumped, bed.settings.step),
            rollback_time(&seen, &bad, bumped.get(&bad)),
        )
    };
    let releases = outcomes.iter().filter(|o| o.is_some()).count().max(1) as f64;
    let mut kinds: Vec<(String, u64)> = kinds.into_iter().collect();
    kinds.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let requests_by_kind = kinds
        .iter()
        .map(|(k, n)| format!("{k} {:.1}", *n as f64 / releases))
        .collect::<Vec<_>>()
        .join(", ");
    delete_namespace(&bed.client, peer).await?;
    Ok(Turn {
        takeover,
        rss_idle,
        rss_peak,
        cpu_takeover,
        cpu_releases: cpu_end - cpu_takeover,
        requests_per_release: requests as f64 / releases,
        writes_per_release: writes as f64 / releases,
        requests_by_kind,
        promoted: outcomes.iter().filter(|o| **o == Some(true)).count(),
        rolled_back: outcomes.iter().filter(|o| **o == Some(false)).count(),
        first_shift: devcluster::spread_of(timings.first_shift, "s"),
        to_ready: devcluster::spread_of(timings.to_ready, "s"),
        ready_to_shift: devcluster::spread_of(timings.ready_to_shift, "s"),
        lateness: devcluster::spread_of(timings.lateness, "s"),
        bad_rollback,
        bad_failed: bad_after.1 - bad_before.1,
        served_per_app: served,
        cluster_cpu,
        server_time: devcluster::spread_of(audited.server_ms, "ms"),
    })
}

impl Bed<'_> {
    /// Requests the mesh simulator served the peer's `n` apps so far, both tracks.
    fn all_served(&self, peer: Peer, n: usize) -> u64 {
        let t = self.mesh.telemetry.lock().unwrap_or_else(|e| e.into_inner());
        let ns = peer.namespace();
        let apps = (0..n).map(app_name);
        apps.flat_map(|a| peer.workloads(&a)).map(|w| t.served(ns, &w).0).sum()
    }

    /// CPU-seconds so far of each process of the cluster, and of Prometheus.
    fn cpu_seconds(&self) -> BTreeMap<String, f64> {
        let mut used = self.cluster.cpu_seconds();
        let prometheus = self.prometheus_pid.and_then(devcluster::usage);
        used.insert("prometheus".into(), prometheus.map_or(0.0, |u| u.1));
        used
    }

    /// (requests, 5xx) the canary of `app` served so far.
    fn canary_served(&self, peer: Peer, app: &str) -> (u64, u64) {
        let t = self.mesh.telemetry.lock().unwrap_or_else(|e| e.into_inner());
        let (workload, version) = peer.canary(app);
        t.served_by(peer.namespace(), &workload, version)
    }
}

/// Per app but the broken one, from the bench's watches.
#[derive(Default)]
struct Timings {
    /// Bump → first canary weight.
    first_shift: Vec<f64>,
    /// The same split where the canary became ready: bump → ready (the controller's
    /// reaction and the cluster's work on the canary's pod), ready → first weight.
    to_ready: Vec<f64>,
    ready_to_shift: Vec<f64>,
    /// The time between two weight increases beyond the step's length (every controller
    /// starts a step's clock when it writes its weight).
    lateness: Vec<f64>,
}

fn timings(seen: &Seen, bumped: &BTreeMap<String, Timestamp>, step: Duration) -> Timings {
    let mut t = Timings::default();
    for (app, bump) in bumped {
        if app == &app_name(BAD_APP) {
            continue;
        }
        let Some(changes) = seen.weights.get(app) else { continue };
        let after: Vec<&(u32, Timestamp)> = changes.iter().filter(|(_, t)| t >= bump).collect();
        if let Some((_, first)) = after.iter().find(|(w, _)| *w > 0) {
            t.first_shift.push(secs(*bump, *first));
            if let Some(ready) = seen.canary_ready.get(app) {
                t.to_ready.push(secs(*bump, *ready));
                t.ready_to_shift.push(secs(*ready, *first));
            }
        }
        for pair in after.windows(2) {
            let ((w0, t0), (w1, t1)) = (pair[0], pair[1]);
            if *w0 > 0 && w1 > w0 {
                t.lateness.push(secs(*t0, *t1) - step.as_secs_f64());
            }
        }
    }
    t
}

/// Bump of the bad app → its canary weight back to 0 after it had some.
fn rollback_time(seen: &Seen, app: &str, bump: Option<&Timestamp>) -> Option<f64> {
    let bump = bump?;
    let changes = seen.weights.get(app)?;
    let mut had = false;
    for (w, t) in changes.iter().filter(|(_, t)| t >= bump) {
        had |= *w > 0;
        if had && *w == 0 {
            return Some(secs(*bump, *t));
        }
    }
    None
}

async fn delete_namespace(client: &Client, peer: Peer) -> Result<(), Error> {
    let ns = peer.namespace();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    // The controller is gone: its finalizers would hold the namespace forever.
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &peer.resource());
    if let Ok(list) = api.list(&Default::default()).await {
        for r in list.items {
            let patch = json!({"metadata": {"finalizers": null}});
            let _ = api
                .patch(&r.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    }
    namespaces.delete(ns, &Default::default()).await?;
    let start = Instant::now();
    while namespaces.get_opt(ns).await?.is_some() {
        if start.elapsed() > Duration::from_secs(600) {
            return Err(Error::Setup(format!("namespace {ns} not gone within 10 min")));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

fn builds() -> Result<Builds, Error> {
    let out = std::process::Command::new("bash")
        .arg(devcluster::repo_dir().join("testcluster/peers.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(Error::Setup(format!("testcluster/peers.sh failed ({})", out.status)));
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(PathBuf::from)
            .ok_or_else(|| Error::Setup(format!("testcluster/peers.sh printed no {key}")))
    };
    Ok(Builds {
        flagger: value("FLAGGER")?,
        flagger_crds: value("FLAGGER_CRDS")?,
        argo: value("ARGO")?,
        argo_crds: value("ARGO_CRDS")?,
    })
}

fn print_table(n: usize, settings: &Settings, turns: &[(Peer, Turn)]) {
    println!(
        "\nweir and its peers: {n} canaries each, steps {STEPS:?} x {}s, one broken canary (30 % errors); Flagger threshold {}",
        settings.step.as_secs(),
        settings.threshold
    );
    let header: Vec<&str> = turns.iter().map(|(p, _)| p.name()).collect();
    println!("| measure | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(turns.len()));
    let row = |what: &str, f: &dyn Fn(&Turn) -> String| {
        let cells: Vec<String> = turns.iter().map(|(_, t)| f(t)).collect();
        println!("| {what} | {} |", cells.join(" | "));
    };
    row("take every app over", &|t| format!("{:.0} s", t.takeover));
    row("RSS idle (15 s after takeover)", &|t| format!("{:.1} MiB", t.rss_idle));
    row("RSS peak", &|t| format!("{:.1} MiB", t.rss_peak));
    row("CPU-seconds: takeover / releases", &|t| {
        format!("{:.1} / {:.1}", t.cpu_takeover, t.cpu_releases)
    });
    row("API requests per release (writes)", &|t| {
        format!("{:.1} ({:.1})", t.requests_per_release, t.writes_per_release)
    });
    row("promoted / rolled back", &|t| {
        format!("{} / {}", t.promoted, t.rolled_back)
    });
    row("image bump → first traffic shift, median / p99 / max", &|t| {
        t.first_shift.clone()
    });
    row("  of which bump → canary ready, median / p99 / max", &|t| {
        t.to_ready.clone()
    });
    row(
        "  of which canary ready → first traffic shift, median / p99 / max",
        &|t| t.ready_to_shift.clone(),
    );
    row("step longer than its length, median / p99 / max", &|t| {
        t.lateness.clone()
    });
    row("broken canary: bump → traffic back on stable", &|t| {
        t.bad_rollback
            .map(|s| format!("{s:.0} s"))
            .unwrap_or_else(|| "not rolled back".into())
    });
    row("broken canary: failed requests served", &|t| t.bad_failed.to_string());
    row("the API server's time per request, median / p99 / max", &|t| {
        t.server_time.clone()
    });
    row(
        &format!(
            "requests served per app per second while they release (set: {})",
            settings.rps
        ),
        &|t| format!("{:.1}", t.served_per_app),
    );
    for (peer, t) in turns {
        println!("\n{} API requests per release: {}", peer.name(), t.requests_by_kind);
        println!("CPU-seconds while {} released: {}", peer.name(), t.cluster_cpu);
    }
}

async fn run(settings: Settings) -> Result<(), Error> {
    let builds = builds()?;
    let bin = devcluster::binaries()?;
    for &n in &settings.sizes {
        let cluster = LocalCluster::start(&bin).await?;
        let client = cluster.client().await?;
        let repo = devcluster::repo_dir();
        let argo_crds = std::fs::read_dir(&builds.argo_crds)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|f| f != "kustomization.yaml"));
        let crds = [
            repo.join("testcluster/istio-crds.yaml"),
            repo.join("crds/rollout.yaml"),
            builds.flagger_crds.clone(),
        ];
        for file in crds.into_iter().chain(argo_crds) {
            devcluster::apply_yaml(&client, &std::fs::read_to_string(file)?).await?;
        }
        let mut config = MeshConfig::from_yaml(&std::fs::read_to_string(repo.join("testcluster/mesh.yaml"))?)?;
        config.rps = settings.rps;
        // Proxies that have every change at once: Flagger and Argo Rollouts do not wait
        // for the mesh's confirmation, and their numbers stay comparable with earlier runs.
        config.data_plane = Default::default();
        let listen: SocketAddr = "127.0.0.1:0".parse().map_err(|e| Error::Setup(format!("{e}")))?;
        let mesh = meshsim::start(client.clone(), config, listen, 7).await?;
        // Scraped every 5 s: thousands of workloads' histograms every second would load
        // the shared cores more than either controller.
        let prometheus = LocalPrometheus::start_every(&[mesh.addr.to_string()], Duration::from_secs(5))?;
        let bed = Bed {
            cluster: &cluster,
            client,
            prometheus: &prometheus.address,
            prometheus_pid: prometheus.pid(),
            mesh: &mesh,
            builds: &builds,
            settings: &settings,
        };
        let mut turns = Vec::new();
        for &peer in &settings.peers {
            eprintln!("{}: {n} canaries ...", peer.name());
            turns.push((peer, turn(&bed, peer, n).await?));
        }
        print_table(n, &settings, &turns);
    }
    Ok(())
}

fn main() {
    devcluster::bench_main("peer bench", || run(Settings::from_env()));
}
