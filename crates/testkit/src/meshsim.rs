//! A mesh traffic simulator that stands in for the Envoy sidecars in the local cluster.
//!
//! It watches VirtualServices, DestinationRules, Services and Pods; sends requests at a
//! configured rate through each VirtualService's default route, split by its weights, to
//! the ready pods each destination selects; decides each request's outcome from the
//! behaviour profile of the pod's image tag; and serves what Istio's sidecars would
//! report on `/metrics` (`istio_requests_total`, `istio_request_duration_milliseconds`).
//! A request routed to a destination without ready pods is answered 503 with response
//! flag `UH`, as Envoy does, and counted, so tests can assert nothing was sent to nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
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
}

impl MeshConfig {
    pub fn from_yaml(text: &str) -> Result<MeshConfig, Error> {
        Ok(serde_yaml::from_str(text)?)
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
    fn record(&mut self, key: SeriesKey, latency_ms: f64) {
        *self.requests.entry(key.clone()).or_default() += 1;
        let (buckets, sum) = self
            .durations
            .entry(key)
            .or_insert_with(|| (vec![0; ISTIO_BUCKETS_MS.len() + 1], 0.0));
        for (i, bound) in ISTIO_BUCKETS_MS.iter().enumerate() {
            if latency_ms <= *bound {
                buckets[i] += 1;
            }
        }
        buckets[ISTIO_BUCKETS_MS.len()] += 1;
        *sum += latency_ms;
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
        let of = self
            .requests
            .iter()
            .filter(|(k, _)| k.namespace == namespace && k.workload == workload);
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

fn reflect_dynamic(client: &Client, kind: &str) -> (Store<DynamicObject>, JoinHandle<()>) {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("networking.istio.io", "v1", kind));
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
    let (vss, t1) = reflect_dynamic(&client, "VirtualService");
    let (drs, t2) = reflect_dynamic(&client, "DestinationRule");
    tasks.extend([t1, t2]);

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
        pods,
        services,
    };
    let traffic = telemetry.clone();
    tasks.push(tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed);
        let tick = Duration::from_millis(100);
        let mut interval = tokio::time::interval(tick);
        loop {
            interval.tick().await;
            let plan = world.routes();
            if let Ok(mut t) = traffic.lock() {
                send(&config, &plan, tick, &mut rng, &mut t);
            }
        }
    }));
    Ok(Mesh { telemetry, addr, tasks })
}

struct World {
    vss: Store<DynamicObject>,
    drs: Store<DynamicObject>,
    pods: Store<Pod>,
    services: Store<Service>,
}

/// A ready pod as the simulator routes to it.
#[derive(Clone, Debug)]
struct Endpoint {
    workload: String,
    version: String,
    image: String,
}

/// One destination of a VirtualService's default route, resolved to its ready pods.
struct Destination {
    namespace: String,
    service: String,
    weight: u32,
    endpoints: Vec<Endpoint>,
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn workload_of(pod: &Pod) -> String {
    let hash = pod.labels().get("pod-template-hash").cloned().unwrap_or_default();
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

impl World {
    /// For every VirtualService: its default route (the first HTTP route without `match`)
    /// resolved to weighted destinations and their ready pods.
    fn routes(&self) -> Vec<Vec<Destination>> {
        let mut out = vec![];
        for vs in self.vss.state() {
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
                        endpoints: self.endpoints(&ns, &service, subset),
                        namespace: ns.clone(),
                        service,
                        weight,
                    }
                })
                .collect();
            out.push(dests);
        }
        out
    }

    fn endpoints(&self, ns: &str, service: &str, subset: Option<&str>) -> Vec<Endpoint> {
        let Some(svc) = self
            .services
            .state()
            .into_iter()
            .find(|s| s.namespace().as_deref() == Some(ns) && s.name_any() == service)
        else {
            return vec![];
        };
        let mut selector = svc.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
        if let Some(subset) = subset {
            let dr = self.drs.state().into_iter().find(|d| {
                d.namespace().as_deref() == Some(ns)
                    && d.data
                        .pointer("/spec/host")
                        .and_then(Value::as_str)
                        .and_then(|h| h.split('.').next())
                        == Some(service)
            });
            let labels = dr
                .as_ref()
                .and_then(|d| d.data.pointer("/spec/subsets").and_then(Value::as_array).cloned())
                .and_then(|subsets| {
                    subsets
                        .into_iter()
                        .find(|s| s.get("name").and_then(Value::as_str) == Some(subset))
                })
                .and_then(|s| s.get("labels").cloned());
            match labels.and_then(|l| serde_json::from_value::<BTreeMap<String, String>>(l).ok()) {
                Some(l) => selector.extend(l),
                // A subset Envoy does not know answers 503 NR; for our purpose: nothing ready.
                None => return vec![],
            }
        }
        self.pods
            .state()
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(ns) && ready(p) && selects(&selector, p.labels()))
            .map(|p| Endpoint {
                workload: workload_of(p),
                version: p
                    .labels()
                    .get("weir.dev/track")
                    .or_else(|| p.labels().get("version"))
                    .cloned()
                    .unwrap_or_else(|| "unknown".into()),
                image: p
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default(),
            })
            .collect()
    }
}

fn send(config: &MeshConfig, routes: &[Vec<Destination>], tick: Duration, rng: &mut StdRng, t: &mut Telemetry) {
    for dests in routes {
        let total: u32 = dests.iter().map(|d| d.weight).sum();
        if total == 0 {
            continue;
        }
        let n = Poisson::new(config.rps * tick.as_secs_f64())
            .map(|p| p.sample(rng) as u64)
            .unwrap_or(0);
        for _ in 0..n {
            let mut pick = rng.random_range(0..total);
            let Some(dest) = dests.iter().find(|d| {
                if pick < d.weight {
                    true
                } else {
                    pick -= d.weight;
                    false
                }
            }) else {
                continue;
            };
            if dest.endpoints.is_empty() {
                let key = SeriesKey {
                    namespace: dest.namespace.clone(),
                    workload: "unknown".into(),
                    version: "unknown".into(),
                    service: dest.service.clone(),
                    code: 503,
                    flags: "UH",
                };
                t.record(key, 0.1);
                continue;
            }
            let ep = &dest.endpoints[rng.random_range(0..dest.endpoints.len())];
            let profile = config.profile_for_image(&ep.image);
            let sigma = ((profile.p99_ms / profile.p50_ms).ln() / 2.326).max(1e-6);
            let latency = LogNormal::new(profile.p50_ms.ln(), sigma)
                .map(|d| d.sample(rng))
                .unwrap_or(profile.p50_ms);
            let code = if rng.random_bool(profile.error_ratio.clamp(0.0, 1.0)) {
                500
            } else {
                200
            };
            let key = SeriesKey {
                namespace: dest.namespace.clone(),
                workload: ep.workload.clone(),
                version: ep.version.clone(),
                service: dest.service.clone(),
                code,
                flags: "-",
            };
            t.record(key, latency);
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
        t.record(key(200, "-"), 42.0);
        t.record(key(503, "UH"), 0.1);
        let text = t.render();
        assert!(text.contains(r#"istio_requests_total{reporter="destination",source_workload="frontend",destination_workload="backend",destination_workload_namespace="dev""#));
        assert!(text.contains(r#"le="50"} 1"#) && text.contains(r#"le="25"} 0"#) && text.contains(r#"le="+Inf"} 1"#));
        assert_eq!(t.no_ready_pods("dev"), 1);
        assert_eq!(t.served("dev", "backend"), (2, 1));
    }
}
