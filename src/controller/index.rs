//! Which Rollouts name an object — as the Deployment they release, their VirtualService,
//! their DestinationRule — kept from the Rollout watch, so that a change of one object
//! among 10,000 finds its Rollouts without scanning every Rollout.
//!
//! An object is kept as a hash of its kind, namespace and name: about 50 bytes per
//! entry. Two objects of equal hash (a chance of one in 2⁶⁴ per pair) would only wake a
//! Rollout that has nothing to do.

use std::collections::BTreeSet;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::api::{Rollout, Router};

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum Named {
    Target,
    VirtualService,
    DestinationRule,
    HttpRoute,
    /// A stable or canary Service (Istio's host mode, Gateway API).
    Service,
}

/// How the index names a router's routing object.
pub fn route_kind(router: Router) -> Named {
    match router {
        Router::Istio(_) => Named::VirtualService,
        Router::GatewayApi(_) => Named::HttpRoute,
    }
}

/// (object hash, Rollout as "namespace/name").
type Entry = (u64, Arc<str>);

#[derive(Default)]
pub struct Index(Mutex<Entries>);

#[derive(Default)]
struct Entries {
    current: BTreeSet<Entry>,
    /// While the Rollout watch lists everything again: the index it is building.
    relisting: Option<BTreeSet<Entry>>,
}

/// The key of an object in the index and in the watches' copies (`copies`).
pub fn key(named: Named, namespace: &str, name: &str) -> u64 {
    hash_of(&(named, namespace, name))
}

/// A 64-bit hash, for what weir keeps as a hash instead of a copy.
pub fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// The entries of one Rollout.
fn entries(r: &Rollout) -> Vec<Entry> {
    let ns = r.namespace().unwrap_or_default();
    let rollout: Arc<str> = Arc::from(format!("{ns}/{}", r.name_any()));
    let routing = &r.spec.traffic_routing;
    let mut named = vec![(Named::Target, r.spec.target_ref.name.as_str())];
    if let Some(router) = routing.router() {
        named.push((route_kind(router), router.route_name()));
    }
    if let Some(dr) = routing.istio.as_ref().and_then(|i| i.destination_rule.as_ref()) {
        named.push((Named::DestinationRule, dr.name.as_str()));
    }
    if let Some((stable, canary)) = routing.router().and_then(|r| r.services()) {
        named.extend([(Named::Service, stable), (Named::Service, canary)]);
    }
    named
        .into_iter()
        .map(|(kind, name)| (key(kind, &ns, name), rollout.clone()))
        .collect()
}

impl Index {
    /// Follows the Rollout watch. `previous`: the Rollout as the store held it before
    /// this event (what its entries were).
    pub fn follow(&self, event: &watcher::Event<Rollout>, previous: Option<&Rollout>) {
        let mut index = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Init => index.relisting = Some(BTreeSet::new()),
            watcher::Event::InitApply(r) => {
                if let Some(building) = index.relisting.as_mut() {
                    building.extend(entries(r));
                }
            }
            watcher::Event::InitDone => {
                if let Some(built) = index.relisting.take() {
                    index.current = built;
                }
            }
            watcher::Event::Apply(r) => {
                for old in previous.map(entries).unwrap_or_default() {
                    index.current.remove(&old);
                }
                index.current.extend(entries(r));
            }
            watcher::Event::Delete(r) => {
                for old in entries(r) {
                    index.current.remove(&old);
                }
            }
        }
    }

    /// The Rollouts that name this object.
    pub fn naming(&self, named: Named, namespace: &str, name: &str) -> Vec<ObjectRef<Rollout>> {
        self.naming_key(key(named, namespace, name))
    }

    /// The Rollouts that name the object of this `key`.
    pub fn naming_key(&self, h: u64) -> Vec<ObjectRef<Rollout>> {
        let index = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let from: Entry = (h, Arc::from(""));
        index
            .current
            .range((Bound::Included(from), Bound::Unbounded))
            .take_while(|(eh, _)| *eh == h)
            .filter_map(|(_, key)| key.split_once('/'))
            .map(|(ns, name)| ObjectRef::new(name).within(ns))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rollout(name: &str, target: &str, vs: &str) -> Rollout {
        serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name, "namespace": "apps"},
            "spec": {"targetRef": {"kind": "Deployment", "name": target},
                     "trafficRouting": {"istio": {"virtualService": {"name": vs},
                         "destinationRule": {"name": "dr", "stableSubset": "stable", "canarySubset": "canary"}}},
                     "steps": [{"weight": 50}], "analysis": {"metrics": []}}
        }))
        .expect("a Rollout")
    }

    fn names(refs: Vec<ObjectRef<Rollout>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn finds_the_rollouts_naming_an_object_and_follows_their_changes() {
        let index = Index::default();
        let (a, b) = (rollout("a", "web", "web"), rollout("b", "api", "web"));
        index.follow(&watcher::Event::Init, None);
        index.follow(&watcher::Event::InitApply(a.clone()), None);
        index.follow(&watcher::Event::InitApply(b.clone()), None);
        assert!(
            index.naming(Named::Target, "apps", "web").is_empty(),
            "not before the list is complete"
        );
        index.follow(&watcher::Event::InitDone, None);
        assert_eq!(names(index.naming(Named::Target, "apps", "web")), ["a"]);
        assert_eq!(names(index.naming(Named::VirtualService, "apps", "web")), ["a", "b"]);
        assert_eq!(names(index.naming(Named::DestinationRule, "apps", "dr")), ["a", "b"]);
        assert!(
            index.naming(Named::Target, "other", "web").is_empty(),
            "namespaces apart"
        );
        assert!(
            index.naming(Named::DestinationRule, "apps", "web").is_empty(),
            "kinds apart"
        );

        let a2 = rollout("a", "web2", "web");
        index.follow(&watcher::Event::Apply(a2.clone()), Some(&a));
        assert!(
            index.naming(Named::Target, "apps", "web").is_empty(),
            "the old target is let go"
        );
        assert_eq!(names(index.naming(Named::Target, "apps", "web2")), ["a"]);
        index.follow(&watcher::Event::Delete(b), None);
        assert_eq!(names(index.naming(Named::VirtualService, "apps", "web")), ["a"]);

        // A list again (the watch lost its place): the index is what the list says.
        index.follow(&watcher::Event::Init, None);
        index.follow(&watcher::Event::InitApply(rollout("c", "web", "c")), None);
        index.follow(&watcher::Event::InitDone, None);
        assert_eq!(names(index.naming(Named::Target, "apps", "web")), ["c"]);
        assert!(index.naming(Named::Target, "apps", "web2").is_empty());
    }
}
