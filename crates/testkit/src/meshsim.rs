//! A mesh traffic simulator that stands in for the Envoy sidecars in the local cluster.
//!
//! It watches VirtualServices, DestinationRules, Gateway API HTTPRoutes, Services and
//! Pods; sends requests at a configured rate through each VirtualService's and each
//! HTTPRoute's default route, split by its weights, to the ready pods each destination
//! selects; decides each request's outcome from the
//! behaviour profile of the pod's image tag; and serves what Istio's sidecars would
//! report on `/metrics` (`istio_requests_total`, `istio_request_duration_milliseconds`).
//! A request routed to a destination without ready pods is answered 503 with response
//! flag `UH`, as Envoy does, and counted, so tests can assert nothing was sent to nothing.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Poisson};
use serde::Deserialize;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::Error;
use weir_core::plan::ISTIO_BUCKETS_MS;

/// How a version behaves, chosen by its image tag.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub error_ratio: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    /// Requests per second through each VirtualService.
    pub rps: f64,
    /// By image tag: a tag equal to the key or ending in `-<key>` uses it; else `default`.
    pub profiles: BTreeMap<String, Profile>,
    /// How the proxies learn of route changes; by default at once, with no status.
    #[serde(default)]
    pub data_plane: DataPlane,
}

/// How the simulated proxies learn of a route's change, as istiod pushes it: after a
/// delay, now and then not at all until the next resync (an Envoy that missed a push);
/// and the status Istio writes on the route once they have it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DataPlane {
    /// A change reaches the proxies this long after the API server has it.
    pub push_delay_ms: u64,
    /// The share of pushes missed: that change arrives with the next resync.
    pub missed_push_ratio: f64,
    /// How often the proxies resync every route (when pushes can be missed).
    pub resync_ms: u64,
    /// Once the proxies have a route's generation, write the status Istio writes: an
    /// HTTPRoute's `status.parents[]` Accepted at that generation; a VirtualService's
    /// `Reconciled` condition and `observedGeneration` (istiod's distribution status).
    pub write_status: bool,
}

impl MeshConfig {
    pub fn from_yaml(text: &str) -> Result<MeshConfig, Error> {
        Ok(serde_saphyr::from_str(text)?)
    }

    pub fn profile_for_image(&self, image: &str) -> Profile {
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
        let fallback = Profile {
            error_ratio: 0.0,
            p50_ms: 10.0,
            p99_ms: 50.0,
        };
        self.profiles
            .iter()
            .filter(|(k, _)| k.as_str() != "default")
            .find(|(k, _)| tag == k.as_str() || tag.ends_with(&format!("-{k}")))
            .or_else(|| self.profiles.get_key_value("default"))
            .map(|(_, p)| p.clone())
            .unwrap_or(fallback)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey {
    namespace: String,
    workload: String,
    version: String,
    service: String,
    code: u16,
    flags: &'static str,
}

/// Everything the simulator has counted since it started.
#[derive(Default, Debug)]
pub struct Telemetry {
    requests: BTreeMap<SeriesKey, u64>,
    /// Cumulative bucket counts, one per Istio bound, then +Inf; and the sum in ms.
    durations: BTreeMap<SeriesKey, (Vec<u64>, f64)>,
}

impl Telemetry {
    /// Counts a tick's requests of one series.
    fn add(&mut self, key: SeriesKey, tally: &Tally) {
        *self.requests.entry(key.clone()).or_default() += tally.requests;
        let (buckets, sum) = self
            .durations
            .entry(key)
            .or_insert_with(|| (vec![0; ISTIO_BUCKETS_MS.len() + 1], 0.0));
        // Cumulative: a request counts in its own bucket and every wider one.
        let mut below = 0;
        for (bucket, n) in buckets.iter_mut().zip(tally.in_bucket) {
            below += n;
            *bucket += below;
        }
        *sum += tally.sum_ms;
    }

    /// Requests answered 503 because the destination had no ready pod, in a namespace.
    pub fn no_ready_pods(&self, namespace: &str) -> u64 {
        self.requests
            .iter()
            .filter(|(k, _)| k.namespace == namespace && k.flags == "UH")
            .map(|(_, n)| n)
            .sum()
    }

    /// (requests, 5xx) served by a workload.
    pub fn served(&self, namespace: &str, workload: &str) -> (u64, u64) {
        self.served_by(namespace, workload, None)
    }

    /// (requests, 5xx) served by a workload's pods of one version (`version` label), or
    /// all of them.
    pub fn served_by(&self, namespace: &str, workload: &str, version: Option<&str>) -> (u64, u64) {
        let of = self.requests.iter().filter(|(k, _)| {
            k.namespace == namespace && k.workload == workload && version.is_none_or(|v| k.version == v)
        });
        of.fold((0, 0), |(n, e), (k, c)| (n + c, e + if k.code >= 500 { *c } else { 0 }))
    }

    /// The Prometheus text exposition, labelled as Istio's sidecars label.
    pub fn render(&self) -> String {
        let labels = |k: &SeriesKey| {
            format!(
                "reporter=\"destination\",source_workload=\"frontend\",destination_workload=\"{}\",destination_workload_namespace=\"{}\",destination_version=\"{}\",destination_service=\"{}.{}.svc.cluster.local\",response_code=\"{}\",response_flags=\"{}\"",
                k.workload, k.namespace, k.version, k.service, k.namespace, k.code, k.flags
            )
        };
        let mut out = String::from("# TYPE istio_requests_total counter\n");
        for (k, n) in &self.requests {
            out += &format!("istio_requests_total{{{}}} {n}\n", labels(k));
        }
        out += "# TYPE istio_request_duration_milliseconds histogram\n";
        for (k, (buckets, sum)) in &self.durations {
            let l = labels(k);
            for (i, bound) in ISTIO_BUCKETS_MS.iter().enumerate() {
                out += &format!(
                    "istio_request_duration_milliseconds_bucket{{{l},le=\"{bound}\"}} {}\n",
                    buckets[i]
                );
            }
            let total = buckets[ISTIO_BUCKETS_MS.len()];
            out += &format!("istio_request_duration_milliseconds_bucket{{{l},le=\"+Inf\"}} {total}\n");
            out += &format!("istio_request_duration_milliseconds_sum{{{l}}} {sum}\n");
            out += &format!("istio_request_duration_milliseconds_count{{{l}}} {total}\n");
        }
        out
    }
}

/// A running simulator; stops when dropped.
pub struct Mesh {
    pub telemetry: Arc<Mutex<Telemetry>>,
    pub addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn reflect<K>(api: Api<K>, writer: reflector::store::Writer<K>) -> JoinHandle<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    tokio::spawn(stream.for_each(|_| futures::future::ready(())))
}

fn reflect_dynamic(client: &Client, group: &str, kind: &str) -> (Store<DynamicObject>, JoinHandle<()>) {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1", kind));
    let writer = reflector::store::Writer::new(ar.clone());
    let reader = writer.as_reader();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    (reader, tokio::spawn(stream.for_each(|_| futures::future::ready(()))))
}

/// Starts the simulator: watches the cluster, sends traffic, serves `/metrics` on `listen`.
pub async fn start(client: Client, config: MeshConfig, listen: SocketAddr, seed: u64) -> Result<Mesh, Error> {
    let telemetry = Arc::new(Mutex::new(Telemetry::default()));
    let (pods_w, svc_w) = (
        reflector::store::Writer::<Pod>::default(),
        reflector::store::Writer::<Service>::default(),
    );
    let (pods, services) = (pods_w.as_reader(), svc_w.as_reader());
    let mut tasks = vec![
        reflect(Api::<Pod>::all(client.clone()), pods_w),
        reflect(Api::<Service>::all(client.clone()), svc_w),
    ];
    let (vss, t1) = reflect_dynamic(&client, "networking.istio.io", "VirtualService");
    let (drs, t2) = reflect_dynamic(&client, "networking.istio.io", "DestinationRule");
    // Where Gateway API is not installed the watch retries and the store stays empty.
    let (http_routes, t3) = reflect_dynamic(&client, "gateway.networking.k8s.io", "HTTPRoute");
    tasks.extend([t1, t2, t3]);

    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let served = telemetry.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let t = served.clone();
            async move { t.lock().map(|t| t.render()).unwrap_or_default() }
        }),
    );
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }));

    let world = World {
        vss,
        drs,
        http_routes,
        pods,
        services,
    };
    let (statuses, written) = futures::channel::mpsc::unbounded();
    if config.data_plane.write_status {
        tasks.push(tokio::spawn(write_statuses(client.clone(), written)));
    }
    let mut proxies = Proxies {
        plane: config.data_plane.clone(),
        applied: HashMap::new(),
        statuses,
        rng: StdRng::seed_from_u64(seed ^ 0x5eed),
    };
    let traffic = telemetry.clone();
    tasks.push(tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed);
        let tick = Duration::from_millis(100);
        let mut interval = tokio::time::interval(tick);
        loop {
            interval.tick().await;
            proxies.follow(&world);
            let plan = world.routes(&config, &proxies);
            if let Ok(mut t) = traffic.lock() {
                send(&plan, config.rps, tick, &mut rng, &mut t);
            }
        }
    }));
    Ok(Mesh { telemetry, addr, tasks })
}

struct World {
    vss: Store<DynamicObject>,
    drs: Store<DynamicObject>,
    http_routes: Store<DynamicObject>,
    pods: Store<Pod>,
    services: Store<Service>,
}

/// The ready pods a destination reaches that behave alike (same workload, version and
/// image): requests are counted per group and tick, not one by one, so that 1,000 apps
/// at 100 requests/s each cost the simulator little beside the cluster.
#[derive(Clone, Debug)]
struct Group {
    workload: String,
    version: String,
    profile: Profile,
    /// How many of the destination's ready pods are in this group.
    pods: u32,
}

/// One destination of a VirtualService's default route, resolved to its ready pods.
struct Destination {
    namespace: String,
    service: String,
    weight: u32,
    groups: Vec<Group>,
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The workload a pod belongs to, as Istio names it: its ReplicaSet without the template
/// hash (a Deployment's, or an Argo Rollout's: the two name the hash label apart).
fn workload_of(pod: &Pod) -> String {
    let labels = pod.labels();
    let hash = labels
        .get("pod-template-hash")
        .or_else(|| labels.get("rollouts-pod-template-hash"));
    let hash = hash.cloned().unwrap_or_default();
    pod.owner_references()
        .iter()
        .find(|o| o.kind == "ReplicaSet")
        .map(|o| o.name.strip_suffix(&format!("-{hash}")).unwrap_or(&o.name).to_string())
        .unwrap_or_else(|| pod.name_any())
}

fn ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The cluster as one tick sees it, indexed so that resolving every route costs time in
/// proportion to the objects, not to their square; it borrows the stores' objects.
struct Snapshot<'a> {
    /// Service selectors by (namespace, name).
    selectors: HashMap<(&'a str, &'a str), &'a BTreeMap<String, String>>,
    /// DestinationRule subsets by (namespace, host's short name).
    subsets: HashMap<(&'a str, &'a str), &'a Value>,
    /// Ready pods by namespace and by (namespace, label, value).
    pods_in: HashMap<&'a str, Vec<&'a Pod>>,
    pods_labelled: HashMap<(&'a str, &'a str, &'a str), Vec<&'a Pod>>,
}

/// What the stores held at the start of a tick.
struct Stores {
    services: Vec<Arc<Service>>,
    drs: Vec<Arc<DynamicObject>>,
    pods: Vec<Arc<Pod>>,
}

fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

impl<'a> Snapshot<'a> {
    fn of(stores: &'a Stores) -> Snapshot<'a> {
        let mut snapshot = Snapshot {
            selectors: HashMap::new(),
            subsets: HashMap::new(),
            pods_in: HashMap::new(),
            pods_labelled: HashMap::new(),
        };
        for svc in &stores.services {
            let name = svc.metadata.name.as_deref().unwrap_or_default();
            if let Some(selector) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) {
                snapshot.selectors.insert((namespace_of(&svc.metadata), name), selector);
            }
        }
        for dr in &stores.drs {
            let host = dr
                .data
                .pointer("/spec/host")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let short = host.split('.').next().unwrap_or_default();
            if let Some(subsets) = dr.data.pointer("/spec/subsets") {
                // The first one found wins, as a linear search over the store would.
                let key = (namespace_of(&dr.metadata), short);
                snapshot.subsets.entry(key).or_insert(subsets);
            }
        }
        for pod in stores.pods.iter().filter(|p| ready(p)) {
            let ns = namespace_of(&pod.metadata);
            for (k, v) in pod.labels() {
                let key = (ns, k.as_str(), v.as_str());
                snapshot.pods_labelled.entry(key).or_default().push(pod);
            }
            snapshot.pods_in.entry(ns).or_default().push(pod);
        }
        snapshot
    }

    /// The selector of a destination: its Service's, narrowed by its subset's labels;
    /// `None` when the Service or subset is unknown (Envoy answers 503: nothing ready).
    fn selector(&self, ns: &str, service: &str, subset: Option<&str>) -> Option<BTreeMap<String, String>> {
        // A Service without a selector has no endpoints Kubernetes manages.
        let mut selector = (*self.selectors.get(&(ns, service))?).clone();
        if let Some(subset) = subset {
            let subsets = self.subsets.get(&(ns, service))?;
            let labels = subsets
                .as_array()?
                .iter()
                .find(|s| s.get("name").and_then(Value::as_str) == Some(subset))?
                .get("labels")?;
            selector.extend(serde_json::from_value::<BTreeMap<String, String>>(labels.clone()).ok()?);
        }
        Some(selector)
    }

    /// The ready pods a destination reaches, grouped by how they behave.
    fn groups(&self, config: &MeshConfig, ns: &str, service: &str, subset: Option<&str>) -> Vec<Group> {
        let Some(selector) = self.selector(ns, service, subset) else {
            return vec![];
        };
        let candidates = match selector.iter().next() {
            Some((k, v)) => self.pods_labelled.get(&(ns, k.as_str(), v.as_str())),
            None => self.pods_in.get(ns),
        };
        let mut groups: Vec<Group> = vec![];
        for pod in candidates
            .into_iter()
            .flatten()
            .filter(|p| selects(&selector, p.labels()))
        {
            let labels = pod.labels();
            let version = labels.get("weir.dev/track").or_else(|| labels.get("version"));
            let image = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone());
            let group = Group {
                workload: workload_of(pod),
                version: version.cloned().unwrap_or_else(|| "unknown".into()),
                profile: config.profile_for_image(&image.unwrap_or_default()),
                pods: 1,
            };
            let same = |g: &&mut Group| {
                g.workload == group.workload && g.version == group.version && g.profile == group.profile
            };
            match groups.iter_mut().find(same) {
                Some(g) => g.pods += 1,
                None => groups.push(group),
            }
        }
        groups
    }
}

/// A route as the proxies have it.
struct Applied {
    route: Arc<DynamicObject>,
    generation: i64,
    /// A newer generation on its way, and when it arrives.
    coming: Option<(i64, tokio::time::Instant)>,
}

/// What the proxies have of each route (by kind/namespace/name), which may lag the API
/// server as `DataPlane` says; the traffic goes by this, not by the stores.
struct Proxies {
    plane: DataPlane,
    applied: HashMap<String, Applied>,
    statuses: futures::channel::mpsc::UnboundedSender<Arc<DynamicObject>>,
    rng: StdRng,
}

fn generation_of(o: &DynamicObject) -> i64 {
    o.metadata.generation.unwrap_or_default()
}

impl Proxies {
    /// Takes in what arrived by now, schedules the pushes of what changed, forgets
    /// deleted routes.
    fn follow(&mut self, world: &World) {
        let now = tokio::time::Instant::now();
        let mut seen = std::collections::HashSet::new();
        for route in world.vss.state().into_iter().chain(world.http_routes.state()) {
            let kind = route.types.as_ref().map(|t| t.kind.clone()).unwrap_or_default();
            let key = format!("{kind}/{}/{}", route.namespace().unwrap_or_default(), route.name_any());
            seen.insert(key.clone());
            let generation = generation_of(&route);
            let arrives = self.arrival(now);
            let applied = self.applied.entry(key).or_insert_with(|| Applied {
                route: route.clone(),
                generation: -1,
                coming: None,
            });
            match applied.coming {
                Some((g, at)) if g == generation && at <= now => {
                    applied.route = route.clone();
                    applied.generation = generation;
                    applied.coming = None;
                    if self.plane.write_status {
                        let _ = self.statuses.unbounded_send(route.clone());
                    }
                }
                Some((g, _)) if g == generation => {}
                _ if applied.generation == generation => applied.route = route.clone(),
                _ => applied.coming = Some((generation, arrives)),
            }
        }
        self.applied.retain(|k, _| seen.contains(k));
    }

    /// When a change pushed now reaches the proxies: after the push delay, or, for a
    /// missed push, at the next resync.
    fn arrival(&mut self, now: tokio::time::Instant) -> tokio::time::Instant {
        let plane = &self.plane;
        let missed = plane.missed_push_ratio > 0.0 && self.rng.random_bool(plane.missed_push_ratio.min(1.0));
        let delay = match missed {
            true => plane.resync_ms.max(plane.push_delay_ms),
            false => plane.push_delay_ms,
        };
        now + Duration::from_millis(delay)
    }

    fn routes_of(&self, kind: &str) -> impl Iterator<Item = &Arc<DynamicObject>> {
        let prefix = format!("{kind}/");
        (self.applied.iter())
            .filter(move |(k, a)| k.starts_with(&prefix) && a.generation >= 0)
            .map(|(_, a)| &a.route)
    }
}

/// Writes the status Istio writes once the proxies have a route's generation, each
/// route's apart: one namespace's flood of changes delays no other's status. One route's
/// writes go in order, and one superseded by a newer generation is skipped, so the last
/// status written is always the newest generation's.
async fn write_statuses(client: Client, routes: futures::channel::mpsc::UnboundedReceiver<Arc<DynamicObject>>) {
    type Newest = HashMap<String, (i64, Arc<tokio::sync::Mutex<()>>)>;
    let newest: Arc<Mutex<Newest>> = Arc::default();
    routes
        .for_each_concurrent(None, |route| {
            // By uid: a route deleted and made again starts its generations over.
            let key = route.uid().unwrap_or_default();
            let generation = generation_of(&route);
            let lock = {
                let mut newest = newest.lock().unwrap_or_else(|e| e.into_inner());
                let entry = newest.entry(key.clone()).or_insert((generation, Arc::default()));
                entry.0 = entry.0.max(generation);
                entry.1.clone()
            };
            let (client, newest) = (client.clone(), newest.clone());
            async move {
                let _in_order = lock.lock().await;
                let superseded = newest
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&key)
                    .is_some_and(|n| n.0 > generation);
                if !superseded {
                    write_status(client, route).await;
                }
            }
        })
        .await;
}

async fn write_status(client: Client, route: Arc<DynamicObject>) {
    let Some(types) = route.types.clone() else { return };
    let (group, version) = types.api_version.split_once('/').unwrap_or(("", &types.api_version));
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &types.kind));
    let api: Api<DynamicObject> = Api::namespaced_with(client, &route.namespace().unwrap_or_default(), &ar);
    let status = route_status(&types.kind, &route);
    let patch = kube::api::Patch::Merge(serde_json::json!({ "status": status }));
    // A write the API server refuses (restarting, say) is tried again, as istiod does.
    for _ in 0..20 {
        match api.patch_status(&route.name_any(), &Default::default(), &patch).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 404 => return,
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// The status of a route whose generation every proxy has.
fn route_status(kind: &str, route: &DynamicObject) -> Value {
    let generation = generation_of(route);
    let now = jiff::Timestamp::now().to_string();
    if kind != "HTTPRoute" {
        // istiod's distribution status: protobuf's JSON writes int64 as a string.
        return serde_json::json!({
            "observedGeneration": generation.to_string(),
            "conditions": [{"type": "Reconciled", "status": "True", "lastTransitionTime": now,
                            "message": "every proxy has it", "reason": "Reconciled"}],
        });
    }
    let refs = route
        .data
        .pointer("/spec/parentRefs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let condition = |type_: &str, reason: &str| {
        serde_json::json!({"type": type_, "status": "True", "reason": reason, "message": "",
                           "observedGeneration": generation, "lastTransitionTime": now})
    };
    let parents: Vec<Value> = refs
        .into_iter()
        .map(|parent| {
            serde_json::json!({
                "parentRef": parent,
                "controllerName": "istio.io/gateway-controller",
                "conditions": [condition("Accepted", "Accepted"), condition("ResolvedRefs", "ResolvedRefs")],
            })
        })
        .collect();
    serde_json::json!({ "parents": parents })
}

impl World {
    /// For every VirtualService: its default route (the first HTTP route without `match`)
    /// resolved to weighted destinations and their ready pods.
    fn routes(&self, config: &MeshConfig, proxies: &Proxies) -> Vec<Vec<Destination>> {
        let stores = Stores {
            services: self.services.state(),
            drs: self.drs.state(),
            pods: self.pods.state(),
        };
        let snapshot = Snapshot::of(&stores);
        let mut out = vec![];
        for vs in proxies.routes_of("VirtualService") {
            let ns = vs.namespace().unwrap_or_default();
            let Some(http) = vs.data.pointer("/spec/http").and_then(Value::as_array) else {
                continue;
            };
            let Some(route) = http
                .iter()
                .find(|r| r.get("match").is_none())
                .and_then(|r| r.get("route"))
                .and_then(Value::as_array)
            else {
                continue;
            };
            let lone = route.len() == 1;
            let dests = route
                .iter()
                .map(|d| {
                    let host = d
                        .pointer("/destination/host")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let service = host.split('.').next().unwrap_or_default().to_string();
                    let subset = d.pointer("/destination/subset").and_then(Value::as_str);
                    let weight = d
                        .get("weight")
                        .and_then(Value::as_u64)
                        .map(|w| w as u32)
                        .unwrap_or(if lone { 100 } else { 0 });
                    Destination {
                        groups: snapshot.groups(config, &ns, &service, subset),
                        namespace: ns.clone(),
                        service,
                        weight,
                    }
                })
                .collect();
            out.push(dests);
        }
        for route in proxies.routes_of("HTTPRoute") {
            out.extend(http_route_destinations(route, &snapshot, config));
        }
        out
    }
}

/// An HTTPRoute's default rule (the first whose matches take every request: none, or a
/// bare `PathPrefix /`, which the API server writes for none) resolved to weighted
/// Services and their ready pods, as a waypoint or a gateway would route it. Its parent
/// (a Service for mesh traffic, a Gateway for ingress) only says who sends the traffic.
fn http_route_destinations(
    route: &DynamicObject,
    snapshot: &Snapshot,
    config: &MeshConfig,
) -> Option<Vec<Destination>> {
    let ns = route.namespace().unwrap_or_default();
    let rules = route.data.pointer("/spec/rules").and_then(Value::as_array)?;
    let rule = rules.iter().find(|r| takes_everything(r.get("matches")))?;
    let backends = rule.get("backendRefs").and_then(Value::as_array)?;
    let destinations = backends
        .iter()
        .filter(|b| b.get("kind").and_then(Value::as_str).unwrap_or("Service") == "Service")
        .map(|b| {
            let service = b.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            let namespace = b.get("namespace").and_then(Value::as_str).unwrap_or(&ns).to_string();
            Destination {
                groups: snapshot.groups(config, &namespace, &service, None),
                weight: b.get("weight").and_then(Value::as_u64).map_or(1, |w| w as u32),
                namespace,
                service,
            }
        })
        .collect();
    Some(destinations)
}

fn takes_everything(matches: Option<&Value>) -> bool {
    let Some(matches) = matches.and_then(Value::as_array) else {
        return true;
    };
    matches.is_empty()
        || matches.iter().any(|m| {
            let path = m.get("path");
            let root = path.is_none_or(|p| p.get("value").and_then(Value::as_str).is_none_or(|v| v == "/"));
            let prefix = path
                .and_then(|p| p.get("type"))
                .and_then(Value::as_str)
                .is_none_or(|t| t == "PathPrefix");
            root && prefix && m.get("headers").is_none() && m.get("queryParams").is_none() && m.get("method").is_none()
        })
}

/// Requests of one series counted in a tick.
#[derive(Default)]
struct Tally {
    requests: u64,
    /// Per Istio bucket bound (not cumulative), then the sum of latencies in ms.
    in_bucket: [u64; ISTIO_BUCKETS_MS.len() + 1],
    sum_ms: f64,
}

impl Tally {
    fn add(&mut self, latency_ms: f64) {
        self.requests += 1;
        let bucket = ISTIO_BUCKETS_MS.iter().position(|b| latency_ms <= *b);
        self.in_bucket[bucket.unwrap_or(ISTIO_BUCKETS_MS.len())] += 1;
        self.sum_ms += latency_ms;
    }
}

/// Sends one tick's requests through every route and counts them.
fn send(routes: &[Vec<Destination>], rps: f64, tick: Duration, rng: &mut StdRng, t: &mut Telemetry) {
    for dests in routes {
        let total: u32 = dests.iter().map(|d| d.weight).sum();
        if total == 0 {
            continue;
        }
        let n = Poisson::new(rps * tick.as_secs_f64())
            .map(|p| p.sample(rng) as u64)
            .unwrap_or(0);
        // Per destination, per group and outcome (200, 500); index `groups.len()`: no pod.
        let mut tallies: Vec<Vec<[Tally; 2]>> = dests
            .iter()
            .map(|d| (0..=d.groups.len()).map(|_| Default::default()).collect())
            .collect();
        for _ in 0..n {
            let (d, dest) = pick(dests, |d| d.weight, rng.random_range(0..total));
            let pods: u32 = dest.groups.iter().map(|g| g.pods).sum();
            if pods == 0 {
                tallies[d][dest.groups.len()][1].add(0.1);
                continue;
            }
            let (g, group) = pick(&dest.groups, |g| g.pods, rng.random_range(0..pods));
            let (latency, failed) = outcome(&group.profile, rng);
            tallies[d][g][usize::from(failed)].add(latency);
        }
        for (dest, tallies) in dests.iter().zip(tallies) {
            record_tallies(dest, tallies, t);
        }
    }
}

/// The item a draw `pick` in [0, total weight) falls on, and its index; `items` is
/// not empty.
fn pick<T>(items: &[T], weight: fn(&T) -> u32, mut pick: u32) -> (usize, &T) {
    for (i, item) in items.iter().enumerate() {
        if pick < weight(item) {
            return (i, item);
        }
        pick -= weight(item);
    }
    (items.len() - 1, &items[items.len() - 1])
}

/// A request's latency in ms (log-normal with the profile's p50 and p99) and whether it
/// failed.
fn outcome(profile: &Profile, rng: &mut StdRng) -> (f64, bool) {
    let sigma = ((profile.p99_ms / profile.p50_ms).ln() / 2.326).max(1e-6);
    let latency = LogNormal::new(profile.p50_ms.ln(), sigma)
        .map(|d| d.sample(rng))
        .unwrap_or(profile.p50_ms);
    (latency, rng.random_bool(profile.error_ratio.clamp(0.0, 1.0)))
}

fn record_tallies(dest: &Destination, tallies: Vec<[Tally; 2]>, t: &mut Telemetry) {
    for (g, outcomes) in tallies.into_iter().enumerate() {
        for (failed, tally) in outcomes.into_iter().enumerate() {
            if tally.requests == 0 {
                continue;
            }
            let key = match dest.groups.get(g) {
                Some(group) => SeriesKey {
                    namespace: dest.namespace.clone(),
                    workload: group.workload.clone(),
                    version: group.version.clone(),
                    service: dest.service.clone(),
                    code: if failed == 1 { 500 } else { 200 },
                    flags: "-",
                },
                None => SeriesKey {
                    namespace: dest.namespace.clone(),
                    workload: "unknown".into(),
                    version: "unknown".into(),
                    service: dest.service.clone(),
                    code: 503,
                    flags: "UH",
                },
            };
            t.add(key, &tally);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_follow_the_image_tag() {
        let c = MeshConfig::from_yaml(
            "rps: 10\nprofiles:\n  default: {errorRatio: 0.001, p50Ms: 20, p99Ms: 80}\n  bad: {errorRatio: 0.05, p50Ms: 20, p99Ms: 80}\n",
        )
        .unwrap();
        assert_eq!(c.profile_for_image("nginxdemos/hello:0.4-bad").error_ratio, 0.05);
        assert_eq!(c.profile_for_image("registry:5000/hello:bad").error_ratio, 0.05);
        assert_eq!(c.profile_for_image("nginxdemos/hello:0.4").error_ratio, 0.001);
    }

    #[test]
    fn a_pods_workload_is_its_replica_sets_name_without_the_template_hash() {
        let pod = |hash_label: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": "web-7d9f-x1",
                    "labels": {hash_label: "7d9f"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f", "uid": "u"}],
                },
            }))
            .unwrap()
        };
        assert_eq!(workload_of(&pod("pod-template-hash")), "web", "a Deployment's");
        assert_eq!(
            workload_of(&pod("rollouts-pod-template-hash")),
            "web",
            "an Argo Rollout's"
        );
        assert_eq!(workload_of(&pod("other")), "web-7d9f", "a bare ReplicaSet's");
    }

    #[test]
    fn the_exposition_has_istios_names_buckets_and_labels() {
        let mut t = Telemetry::default();
        let key = |code, flags| SeriesKey {
            namespace: "dev".into(),
            workload: "backend".into(),
            version: "stable".into(),
            service: "backend".into(),
            code,
            flags,
        };
        let one = |latency_ms| {
            let mut tally = Tally::default();
            tally.add(latency_ms);
            tally
        };
        t.add(key(200, "-"), &one(42.0));
        t.add(key(503, "UH"), &one(0.1));
        let text = t.render();
        assert!(text.contains(r#"istio_requests_total{reporter="destination",source_workload="frontend",destination_workload="backend",destination_workload_namespace="dev""#));
        assert!(text.contains(r#"le="50"} 1"#) && text.contains(r#"le="25"} 0"#) && text.contains(r#"le="+Inf"} 1"#));
        assert_eq!(t.no_ready_pods("dev"), 1);
        assert_eq!(t.served("dev", "backend"), (2, 1));
    }

    #[test]
    fn a_tick_splits_requests_by_weight_and_counts_those_sent_to_nothing() {
        let group = |workload: &str, error_ratio| Group {
            workload: workload.into(),
            version: workload.into(),
            profile: Profile {
                error_ratio,
                p50_ms: 20.0,
                p99_ms: 80.0,
            },
            pods: 2,
        };
        let dest = |service: &str, weight, groups| Destination {
            namespace: "dev".into(),
            service: service.into(),
            weight,
            groups,
        };
        let routes = vec![
            vec![
                dest("web-stable", 90, vec![group("web", 0.0)]),
                dest("web-canary", 10, vec![group("web-canary", 1.0)]),
            ],
            vec![dest("db", 100, vec![])],
        ];
        let (mut t, mut rng) = (Telemetry::default(), StdRng::seed_from_u64(1));
        for _ in 0..100 {
            send(&routes, 100.0, Duration::from_millis(100), &mut rng, &mut t);
        }
        let (stable, canary) = (t.served("dev", "web"), t.served("dev", "web-canary"));
        let all = stable.0 + canary.0;
        assert!((900..1100).contains(&all), "about 100/s for 10 s: {all}");
        assert!((50..150).contains(&canary.0), "about 10 %: {canary:?}");
        assert_eq!((stable.1, canary.1), (0, canary.0), "errors follow the profile");
        assert!(t.no_ready_pods("dev") > 900, "db has no pods: each request is a 503 UH");
        let text = t.render();
        let count = format!(
            r#"destination_workload="web",destination_workload_namespace="dev",destination_version="web",destination_service="web-stable.dev.svc.cluster.local",response_code="200",response_flags="-",le="+Inf"}} {}"#,
            stable.0
        );
        assert!(text.contains(&count), "+Inf counts every request");
    }
}
