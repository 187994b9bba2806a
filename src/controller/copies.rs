//! The watches' copies of the objects Rollouts name. Every Deployment, VirtualService,
//! DestinationRule, HTTPRoute and Service a watch brings is known here by its version;
//! the ones a Rollout names when the watch brings them (its target, its canary, its
//! routing objects, its Services) are also kept, stripped and compressed. A reconcile
//! reads its objects here, not from the API server (`objects::fetch` asks `copy` first).
//!
//! A copy may lag the API server: a watch delayed, or restarted and listing again. A
//! decision made on a stale copy cannot write wrongly: a weight patch tests the
//! `resourceVersion` it read, so it fails as a conflict; the Deployments are written by
//! server-side apply of the fields weir owns (the canary's template made from the
//! target's revision the decision named, checked before the write). A conflict makes the
//! next reconcile read afresh (`Afresh`), as does a deletion's proof that no traffic is
//! left: there a fresh read is the point.
//!
//! What the copies cannot tell is read (GET) and kept: before a watch's first list is
//! complete, and an object no Rollout named when its watch brought it (a Rollout created
//! since). Memory: ~60 bytes for each object a watch brings; a kept one adds its
//! stripped JSON deflated against a dictionary of what such objects have in common (a
//! Deployment of 1.4 KB in ~0.2 KB).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use serde_json::Value;

use crate::api::Rollout;
use crate::controller::index::{self, Named};
use crate::edges::kubernetes::Applied;
use crate::edges::objects::{self, Object};
use crate::plan::Names;

#[derive(Default)]
pub struct Copies(Mutex<HashMap<Named, Shelf>>);

/// One watch's objects.
#[derive(Default)]
struct Shelf {
    of: HashMap<u64, Copy>,
    /// Counts the lists: an object the current list did not bring is gone.
    list: u32,
    /// The first list is complete: an object the shelf does not know does not exist.
    synced: bool,
    /// When deletions were last pruned (`prune`).
    pruned: Option<Instant>,
}

struct Copy {
    version: u64,
    list: u32,
    /// The object, stripped, as deflated JSON; `None` when no Rollout named it.
    body: Option<Box<[u8]>>,
    /// Deleted (the watch said so) at this time: kept a while, so that a read that was
    /// answered before the deletion does not bring the object back.
    deleted: Option<Instant>,
}

/// How long a deletion is remembered: far longer than a read takes to come back.
const DELETION_KEPT: Duration = Duration::from_secs(300);

/// A resource version as a number, to tell the later of two: an etcd revision on every
/// API server weir knows (an opaque one is kept as its hash, ordered by chance); none as
/// the oldest.
fn version_number(version: Option<&str>) -> u64 {
    match version.unwrap_or_default() {
        "" => 0,
        version => version.parse().unwrap_or_else(|_| index::hash_of(version)),
    }
}

/// What the objects weir keeps have in common, to prime the deflate of each: field names
/// and the API server's defaults. Each copy refers to it instead of holding its own: a
/// Deployment of 1.4 KB is kept in ~0.2 KB (without it, ~0.7 KB). Changing it makes no
/// copy unreadable: copies live in one process.
const DICTIONARY: &[u8] = br#"{"apiVersion":"v1","kind":"Service","metadata":{"creationTimestamp":"","name":"","namespace":"","resourceVersion":"","uid":""},"spec":{"clusterIP":"","clusterIPs":[""],"internalTrafficPolicy":"Cluster","ipFamilies":["IPv4"],"ipFamilyPolicy":"SingleStack","ports":[{"name":"http","port":80,"protocol":"TCP","targetPort":8080}],"selector":{"app":""},"sessionAffinity":"None","type":"ClusterIP"},"status":{"loadBalancer":{}}}{"apiVersion":"gateway.networking.k8s.io/v1","kind":"HTTPRoute","metadata":{"generation":1,"name":"","namespace":""},"spec":{"parentRefs":[{"group":"","kind":"Service","name":""}],"rules":[{"name":"","backendRefs":[{"group":"","kind":"Service","name":"","port":80,"weight":100}],"matches":[{"path":{"type":"PathPrefix","value":"/"}}]}]},"status":{"parents":[{"conditions":[{"lastTransitionTime":"","message":"Route was valid","observedGeneration":1,"reason":"Accepted","status":"True","type":"Accepted"},{"lastTransitionTime":"","message":"All references resolved","observedGeneration":1,"reason":"ResolvedRefs","status":"True","type":"ResolvedRefs"}],"controllerName":"istio.io/gateway-controller","parentRef":{"group":"","kind":"Service","name":""}}]}}{"apiVersion":"networking.istio.io/v1","kind":"DestinationRule","metadata":{"creationTimestamp":"","generation":1,"name":"","namespace":"","resourceVersion":"","uid":""},"spec":{"host":"","subsets":[{"labels":{"weir.dev/track":"stable"},"name":"stable"},{"labels":{"weir.dev/track":"canary"},"name":"canary"}]}}{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{"creationTimestamp":"","generation":1,"name":"","namespace":"","resourceVersion":"","uid":""},"spec":{"gateways":["mesh"],"hosts":[""],"http":[{"name":"primary","route":[{"destination":{"host":"","subset":"stable","port":{"number":80}},"weight":100},{"destination":{"host":"","subset":"canary","port":{"number":80}},"weight":0}]}]},"status":{"conditions":[{"lastTransitionTime":"","message":"","reason":"","status":"True","type":"Reconciled"}],"observedGeneration":"1"}}{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"annotations":{"deployment.kubernetes.io/revision":"1","weir.dev/revision":""},"creationTimestamp":"","generation":1,"labels":{"app":"","weir.dev/rollout":""},"name":"","namespace":"","ownerReferences":[{"apiVersion":"weir.dev/v1alpha1","blockOwnerDeletion":true,"controller":true,"kind":"Rollout","name":"","uid":""}],"resourceVersion":"","uid":""},"spec":{"paused":true,"progressDeadlineSeconds":600,"replicas":1,"revisionHistoryLimit":10,"selector":{"matchLabels":{"app":"","weir.dev/track":"stable"}},"strategy":{"rollingUpdate":{"maxSurge":"25%","maxUnavailable":"25%"},"type":"RollingUpdate"},"template":{"metadata":{"creationTimestamp":null,"labels":{"app":"","weir.dev/track":"stable"}},"spec":{"containers":[{"image":"","imagePullPolicy":"IfNotPresent","name":"","ports":[{"containerPort":8080,"protocol":"TCP"}],"resources":{},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File"}],"dnsPolicy":"ClusterFirst","restartPolicy":"Always","schedulerName":"default-scheduler","securityContext":{},"terminationGracePeriodSeconds":30}}},"status":{"availableReplicas":1,"conditions":[{"lastTransitionTime":"","lastUpdateTime":"","message":"Deployment has minimum availability.","reason":"MinimumReplicasAvailable","status":"True","type":"Available"},{"lastTransitionTime":"","lastUpdateTime":"","message":"ReplicaSet \"\" has successfully progressed.","reason":"NewReplicaSetAvailable","status":"True","type":"Progressing"}],"observedGeneration":1,"readyReplicas":1,"replicas":1,"updatedReplicas":1}}"#;

thread_local! {
    // A deflate state is ~300 KB: one per thread, reset for each copy.
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

fn deflated(json: &[u8]) -> Option<Box<[u8]>> {
    DEFLATE.with_borrow_mut(|deflate| {
        deflate.reset();
        deflate.set_dictionary(DICTIONARY).ok()?;
        let mut out = Vec::with_capacity(json.len() / 2 + 64);
        loop {
            let read = usize::try_from(deflate.total_in()).ok()?;
            let status = deflate
                .compress_vec(json.get(read..)?, &mut out, FlushCompress::Finish)
                .ok()?;
            if status == Status::StreamEnd {
                return Some(out.into_boxed_slice());
            }
            out.reserve(out.len().max(256));
        }
    })
}

fn inflated(body: &[u8]) -> Option<Vec<u8>> {
    INFLATE.with_borrow_mut(|inflate| {
        inflate.reset(false);
        inflate.set_dictionary(DICTIONARY).ok()?;
        let mut out = Vec::with_capacity(body.len() * 8);
        loop {
            let read = usize::try_from(inflate.total_in()).ok()?;
            let status = inflate
                .decompress_vec(body.get(read..)?, &mut out, FlushDecompress::Finish)
                .ok()?;
            match status {
                Status::StreamEnd => return Some(out),
                // No progress with room to spare: the copy is cut short.
                Status::BufError if out.len() < out.capacity() => return None,
                _ => out.reserve(out.len().max(1024)),
            }
        }
    })
}

/// Where an object lives in the copies.
fn place(object: Object<'_>) -> (Named, &str) {
    match object {
        Object::Deployment(name) => (Named::Target, name),
        Object::VirtualService(name) => (Named::VirtualService, name),
        Object::DestinationRule(name) => (Named::DestinationRule, name),
        Object::HttpRoute(name) => (Named::HttpRoute, name),
        Object::Service(name) => (Named::Service, name),
    }
}

/// What a watch brought.
pub struct Brought<'a> {
    pub named: Named,
    pub namespace: &'a str,
    pub name: &'a str,
    pub version: Option<&'a str>,
    /// The object as kept (stripped JSON), when a Rollout names it.
    pub kept: Option<Vec<u8>>,
}

impl Copies {
    fn shelves(&self) -> std::sync::MutexGuard<'_, HashMap<Named, Shelf>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a watch's object at `version` would change the copies: a later version, or
    /// the one kept without its body. Asked before the object is serialized and
    /// deflated, which most changes (echoes of weir's own writes) do not need.
    pub fn wants(&self, named: Named, namespace: &str, name: &str, version: Option<&str>) -> bool {
        let version = version_number(version);
        let shelves = self.shelves();
        let copy = shelves
            .get(&named)
            .and_then(|s| s.of.get(&index::key(named, namespace, name)));
        copy.is_none_or(|c| c.deleted.is_some() || version > c.version || (version == c.version && c.body.is_none()))
    }

    /// A watch brought an object; whether that is news. Its own version again, or an
    /// older one (a watch that lags behind weir's own write, whose answer is already
    /// here), is not: the echo of weir's own write wakes nothing.
    pub fn saw(&self, brought: Brought<'_>) -> bool {
        let key = index::key(brought.named, brought.namespace, brought.name);
        let version = version_number(brought.version);
        let body = brought.kept.and_then(|json| deflated(&json));
        let mut shelves = self.shelves();
        let shelf = shelves.entry(brought.named).or_default();
        let list = shelf.list;
        match shelf.of.get_mut(&key) {
            Some(copy) if copy.deleted.is_none() && version <= copy.version => {
                copy.list = list;
                if copy.version == version && copy.body.is_none() {
                    copy.body = body;
                }
                false
            }
            _ => {
                let copy = Copy {
                    version,
                    list,
                    body,
                    deleted: None,
                };
                shelf.of.insert(key, copy);
                true
            }
        }
    }

    /// A watch brought an object's deletion.
    pub fn deleted(&self, named: Named, namespace: &str, name: &str, version: Option<&str>) {
        let mut shelves = self.shelves();
        let shelf = shelves.entry(named).or_default();
        let now = Instant::now();
        let copy = Copy {
            version: version_number(version),
            list: shelf.list,
            body: None,
            deleted: Some(now),
        };
        shelf.of.insert(index::key(named, namespace, name), copy);
        shelf.prune(now);
    }

    /// A watch lists everything again.
    pub fn relisting(&self, named: Named) {
        let mut shelves = self.shelves();
        let shelf = shelves.entry(named).or_default();
        shelf.list = shelf.list.wrapping_add(1);
    }

    /// A watch's list is complete: the objects it did not bring were deleted meanwhile
    /// (their keys are returned); from now on the shelf knows every object of its kind.
    pub fn listed(&self, named: Named) -> Vec<u64> {
        let mut shelves = self.shelves();
        let shelf = shelves.entry(named).or_default();
        shelf.synced = true;
        let list = shelf.list;
        let gone: Vec<u64> = (shelf.of.iter())
            .filter(|(_, c)| c.list != list && c.deleted.is_none())
            .map(|(k, _)| *k)
            .collect();
        shelf.of.retain(|_, c| c.list == list && c.deleted.is_none());
        gone
    }

    /// The copy of `object` in `namespace`, as JSON: `Some(None)` when it does not exist,
    /// `None` when the copies cannot tell (read it).
    pub fn copy(&self, object: Object<'_>, namespace: &str) -> Option<Option<Vec<u8>>> {
        let (named, name) = place(object);
        let shelves = self.shelves();
        let shelf = shelves.get(&named)?;
        match shelf.of.get(&index::key(named, namespace, name)) {
            None if shelf.synced => Some(None),
            None => None,
            Some(copy) if copy.deleted.is_some() => Some(None),
            Some(copy) => {
                let json = inflated(copy.body.as_deref()?)?;
                // Two keys of equal hash (one in 2⁶⁴): the copy names another object.
                named_so(&json, namespace, name).then_some(Some(json))
            }
        }
    }

    /// What a read (or the answer to weir's own write) found of `object`, kept unless
    /// the copies hold a later version, or its deletion since.
    pub fn read(&self, object: Object<'_>, namespace: &str, found: Option<&Value>) {
        let Some(found) = found else { return };
        let (named, name) = place(object);
        let version = version_number(objects::version_of(found));
        let Some(body) = serde_json::to_vec(found).ok().and_then(|j| deflated(&j)) else {
            return;
        };
        let mut shelves = self.shelves();
        let shelf = shelves.entry(named).or_default();
        let list = shelf.list;
        let key = index::key(named, namespace, name);
        // Kept: a later version, or the same one (alive) whose copy was not kept.
        let keeps = |c: &Copy| version > c.version || (c.version == version && c.deleted.is_none());
        if shelf.of.get(&key).is_some_and(|c| !keeps(c)) {
            return;
        }
        let copy = Copy {
            version,
            list,
            body: Some(body),
            deleted: None,
        };
        shelf.of.insert(key, copy);
    }
}

impl Copies {
    /// What weir just wrote, as the API server answered: kept at once, so that the next
    /// look reads it and its echo from the watch is no news.
    pub fn record(&self, rollout: &Rollout, names: &Names, applied: &Applied) {
        let ns = rollout.namespace().unwrap_or_default();
        let value = |d: &Deployment, keep: fn(Value) -> Value| serde_json::to_value(d).ok().map(keep);
        match applied {
            Applied::Target(d) => {
                let target = value(d, objects::stripped_value);
                self.read(Object::Deployment(&names.target), &ns, target.as_ref());
            }
            Applied::Canary(Some(d)) => {
                let canary = value(d, objects::canary_value);
                self.read(Object::Deployment(&names.canary), &ns, canary.as_ref());
            }
            // Deleted: the watch brings the deletion.
            Applied::Canary(None) => {}
            Applied::Route(o) => {
                if let Some(router) = rollout.spec.traffic_routing.router() {
                    let route = objects::stripped_value(o.clone());
                    self.read(objects::route_object(router), &ns, Some(&route));
                }
            }
        }
    }
}

/// Whether the JSON of an object names `name` in `namespace`.
fn named_so(json: &[u8], namespace: &str, name: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Meta {
        metadata: Names,
    }
    #[derive(serde::Deserialize)]
    struct Names {
        name: Option<String>,
        namespace: Option<String>,
    }
    serde_json::from_slice::<Meta>(json).is_ok_and(|m| {
        m.metadata.name.as_deref() == Some(name) && m.metadata.namespace.as_deref().is_none_or(|n| n == namespace)
    })
}

impl Shelf {
    /// Forgets deletions older than `DELETION_KEPT`, at most once a minute.
    fn prune(&mut self, now: Instant) {
        if self
            .pruned
            .is_some_and(|p| now.duration_since(p) < Duration::from_secs(60))
        {
            return;
        }
        self.pruned = Some(now);
        self.of
            .retain(|_, c| c.deleted.is_none_or(|d| now.duration_since(d) < DELETION_KEPT));
    }
}

/// The copies as `objects::fetch` reads them.
impl objects::Copies for Copies {
    fn copy(&self, object: Object<'_>, namespace: &str) -> Option<Option<Vec<u8>>> {
        Copies::copy(self, object, namespace)
    }

    fn read(&self, object: Object<'_>, namespace: &str, found: Option<&Value>) {
        Copies::read(self, object, namespace, found)
    }
}

/// The copies for a read that must be fresh: every object is read from the API server,
/// and what it finds is kept.
pub struct Afresh<'a>(pub &'a Copies);

impl objects::Copies for Afresh<'_> {
    fn copy(&self, _: Object<'_>, _: &str) -> Option<Option<Vec<u8>>> {
        None
    }

    fn read(&self, object: Object<'_>, namespace: &str, found: Option<&Value>) {
        self.0.read(object, namespace, found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vs(name: &str, version: &str, weight: u32) -> Value {
        json!({"metadata": {"name": name, "namespace": "apps", "resourceVersion": version},
               "spec": {"http": [{"route": [{"weight": 100 - weight}, {"weight": weight}]}]}})
    }

    fn brought<'a>(name: &'a str, version: &'a str, kept: Option<Value>) -> Brought<'a> {
        Brought {
            named: Named::VirtualService,
            namespace: "apps",
            name,
            version: Some(version),
            kept: kept.map(|v| serde_json::to_vec(&v).expect("JSON")),
        }
    }

    fn weight_in(copies: &Copies, name: &str) -> Option<Option<u64>> {
        let json = copies.copy(Object::VirtualService(name), "apps")?;
        Some(json.map(|j| {
            let v: Value = serde_json::from_slice(&j).expect("JSON");
            v.pointer("/spec/http/0/route/1/weight")
                .and_then(Value::as_u64)
                .expect("a weight")
        }))
    }

    #[test]
    fn before_the_first_list_nothing_is_known_after_it_what_is_missing_does_not_exist() {
        let copies = Copies::default();
        assert_eq!(weight_in(&copies, "web"), None, "no watch yet: read it");
        copies.relisting(Named::VirtualService);
        assert!(copies.saw(brought("web", "5", Some(vs("web", "5", 10)))));
        assert!(copies.saw(brought("other", "6", None)), "not named: known, not kept");
        assert_eq!(weight_in(&copies, "api"), None, "the list is not complete");
        assert!(copies.listed(Named::VirtualService).is_empty());
        assert_eq!(weight_in(&copies, "web"), Some(Some(10)));
        assert_eq!(weight_in(&copies, "api"), Some(None), "listed: it does not exist");
        assert_eq!(weight_in(&copies, "other"), None, "known, not kept: read it");
        copies.read(Object::VirtualService("other"), "apps", Some(&vs("other", "6", 0)));
        assert_eq!(weight_in(&copies, "other"), Some(Some(0)), "kept once read");
    }

    #[test]
    fn a_later_version_replaces_an_echo_or_an_older_one_is_no_news() {
        let copies = Copies::default();
        copies.relisting(Named::VirtualService);
        copies.saw(brought("web", "5", Some(vs("web", "5", 10))));
        copies.listed(Named::VirtualService);
        // weir's own write: its answer is kept at once, its echo is no news.
        copies.read(Object::VirtualService("web"), "apps", Some(&vs("web", "7", 25)));
        assert!(
            !copies.wants(Named::VirtualService, "apps", "web", Some("7")),
            "nothing to keep"
        );
        assert!(!copies.saw(brought("web", "7", Some(vs("web", "7", 25)))), "the echo");
        assert!(copies.wants(Named::VirtualService, "apps", "web", Some("8")));
        assert!(
            !copies.saw(brought("web", "6", Some(vs("web", "6", 99)))),
            "a lagging watch"
        );
        assert_eq!(weight_in(&copies, "web"), Some(Some(25)), "not undone by the lag");
        assert!(copies.saw(brought("web", "8", Some(vs("web", "8", 50)))));
        assert_eq!(weight_in(&copies, "web"), Some(Some(50)));
        copies.read(Object::VirtualService("web"), "apps", Some(&vs("web", "7", 25)));
        assert_eq!(weight_in(&copies, "web"), Some(Some(50)), "a slow read keeps the later");
    }

    #[test]
    fn a_deletion_is_not_undone_by_a_read_answered_before_it() {
        let copies = Copies::default();
        copies.relisting(Named::VirtualService);
        copies.saw(brought("web", "5", Some(vs("web", "5", 10))));
        copies.listed(Named::VirtualService);
        copies.deleted(Named::VirtualService, "apps", "web", Some("9"));
        assert_eq!(weight_in(&copies, "web"), Some(None));
        copies.read(Object::VirtualService("web"), "apps", Some(&vs("web", "5", 10)));
        assert_eq!(weight_in(&copies, "web"), Some(None), "the read was older");
        assert!(copies.saw(brought("web", "12", Some(vs("web", "12", 0)))), "made again");
        assert_eq!(weight_in(&copies, "web"), Some(Some(0)));
    }

    #[test]
    fn a_relist_finds_what_went_meanwhile_and_keeps_what_stayed() {
        let copies = Copies::default();
        copies.relisting(Named::VirtualService);
        copies.saw(brought("web", "5", Some(vs("web", "5", 10))));
        copies.saw(brought("api", "6", Some(vs("api", "6", 0))));
        copies.listed(Named::VirtualService);
        copies.relisting(Named::VirtualService);
        assert!(!copies.saw(brought("web", "5", Some(vs("web", "5", 10)))), "unchanged");
        let gone = copies.listed(Named::VirtualService);
        assert_eq!(gone, vec![index::key(Named::VirtualService, "apps", "api")]);
        assert_eq!(weight_in(&copies, "api"), Some(None));
        assert_eq!(weight_in(&copies, "web"), Some(Some(10)));
    }

    #[test]
    fn a_copy_is_a_fraction_of_the_object() {
        let mut big = vs("web", "5", 10);
        big["spec"]["http"][0]["match"] = Value::Array(vec![json!({"headers": {"x-team": {"exact": "checkout"}}}); 20]);
        let json = serde_json::to_vec(&big).expect("JSON");
        let body = deflated(&json).expect("deflated");
        assert!(body.len() * 3 < json.len(), "{} of {}", body.len(), json.len());
        assert_eq!(inflated(&body).as_deref(), Some(json.as_slice()));
        let deployment = serde_json::to_vec(&json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "apps", "resourceVersion": "123456", "generation": 1,
                         "uid": "3f1c2a9e-7b8d-4e2f-9a1b-0c2d3e4f5a6b", "creationTimestamp": "2026-12-06T01:00:00Z",
                         "annotations": {"deployment.kubernetes.io/revision": "1"}},
            "spec": {"progressDeadlineSeconds": 600, "replicas": 3, "revisionHistoryLimit": 10,
                     "selector": {"matchLabels": {"app": "web"}},
                     "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}, "type": "RollingUpdate"},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
                         "image": "registry.example/web:1.4.2", "imagePullPolicy": "IfNotPresent", "name": "web",
                         "resources": {}, "terminationMessagePath": "/dev/termination-log",
                         "terminationMessagePolicy": "File"}], "dnsPolicy": "ClusterFirst", "restartPolicy": "Always",
                         "schedulerName": "default-scheduler", "securityContext": {}, "terminationGracePeriodSeconds": 30}}},
            "status": {"availableReplicas": 3, "observedGeneration": 1, "readyReplicas": 3, "replicas": 3, "updatedReplicas": 3}
        }))
        .expect("JSON");
        let body = deflated(&deployment).expect("deflated");
        assert!(
            body.len() * 4 < deployment.len(),
            "{} of {}",
            body.len(),
            deployment.len()
        );
        assert_eq!(inflated(&body).as_deref(), Some(deployment.as_slice()));
        let big: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        assert_eq!(
            inflated(&deflated(&big).expect("deflated")),
            Some(big),
            "past the first room"
        );
        assert_eq!(inflated(b"not deflate"), None);
    }
}
