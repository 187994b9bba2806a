//! Which mesh hosts (Services) each routing object routes, kept from the watches of
//! VirtualServices and HTTPRoutes: a Service that both a VirtualService and an
//! HTTPRoute route is ambiguous (Istio applies one of them, not both), so a Rollout
//! whose route is one of the two is refused, naming both — before a weight is written
//! into a route the mesh may ignore.
//!
//! A VirtualService routes the Services of its `spec.hosts`; an HTTPRoute the Services
//! of its `parentRefs` (GAMMA, mesh traffic). An HTTPRoute parented by a Gateway
//! (ingress) routes no mesh host.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use kube::ResourceExt;
use kube::api::DynamicObject;
use serde_json::Value;

use crate::controller::index::{self, Named};

/// A Service: (namespace, name).
type Host = (String, String);

/// A routing object: (kind, namespace, name).
type Router = (Named, String, String);

#[derive(Default)]
pub struct Hosts(Mutex<Routed>);

#[derive(Default)]
struct Routed {
    by_host: HashMap<Host, BTreeSet<Router>>,
    /// What each object routes, by its index key (what a relist reports vanished).
    by_object: HashMap<u64, (Router, Vec<Host>)>,
}

/// The Services a routing object routes.
pub fn hosts_of(named: Named, namespace: &str, object: &Value) -> Vec<Host> {
    let list = |p: &str| object.pointer(p).and_then(Value::as_array).cloned().unwrap_or_default();
    match named {
        Named::VirtualService => (list("/spec/hosts").iter())
            .filter_map(Value::as_str)
            .filter(|h| !h.contains('*'))
            .map(|h| service_of(h, namespace))
            .collect(),
        Named::HttpRoute => (list("/spec/parentRefs").iter())
            .filter(|p| p.get("kind").and_then(Value::as_str) == Some("Service"))
            .filter(|p| p.get("group").and_then(Value::as_str).unwrap_or("").is_empty())
            .filter_map(|p| {
                let name = p.get("name").and_then(Value::as_str)?;
                let ns = p.get("namespace").and_then(Value::as_str).unwrap_or(namespace);
                Some((ns.to_string(), name.to_string()))
            })
            .collect(),
        Named::Target | Named::DestinationRule | Named::Service => vec![],
    }
}

/// `backend`, `backend.shop`, `backend.shop.svc.cluster.local` → (shop, backend).
fn service_of(host: &str, namespace: &str) -> Host {
    let mut parts = host.split('.');
    let name = parts.next().unwrap_or_default().to_string();
    (parts.next().unwrap_or(namespace).to_string(), name)
}

impl Hosts {
    /// Follows a watch event of a VirtualService or an HTTPRoute.
    pub fn follow(&self, named: Named, o: &DynamicObject, deleted: bool) {
        if !matches!(named, Named::VirtualService | Named::HttpRoute) {
            return;
        }
        let (ns, name) = (o.namespace().unwrap_or_default(), o.name_any());
        let key = index::key(named, &ns, &name);
        let mut routed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        routed.forget(key);
        if !deleted {
            let hosts = hosts_of(named, &ns, &o.data);
            let router = (named, ns, name);
            for host in &hosts {
                routed.by_host.entry(host.clone()).or_default().insert(router.clone());
            }
            routed.by_object.insert(key, (router, hosts));
        }
    }

    /// Forgets objects a relist found deleted meanwhile (their index keys).
    pub fn forget(&self, gone: &[u64]) {
        let mut routed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for key in gone {
            routed.forget(*key);
        }
    }

    /// Why the route (`route`, of kind `named`) cannot be used: a host it routes is
    /// also routed by an object of the other kind.
    pub fn conflict(&self, named: Named, route: &Value) -> Option<String> {
        let text = |p: &str| route.pointer(p).and_then(Value::as_str).unwrap_or_default();
        let (ns, name) = (text("/metadata/namespace"), text("/metadata/name"));
        let routed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for host in hosts_of(named, ns, route) {
            let others = routed.by_host.get(&host).into_iter().flatten();
            if let Some((kind, other_ns, other)) = others.into_iter().find(|(k, ..)| *k != named) {
                return Some(format!(
                    "Service {}/{} is routed by both {} {ns}/{name} and {} {other_ns}/{other}: the mesh applies only one; \
                     remove one of them (for ambient mode, keep the HTTPRoute)",
                    host.0,
                    host.1,
                    kind_name(named),
                    kind_name(*kind)
                ));
            }
        }
        None
    }
}

fn kind_name(named: Named) -> &'static str {
    match named {
        Named::HttpRoute => "HTTPRoute",
        _ => "VirtualService",
    }
}

impl Routed {
    fn forget(&mut self, key: u64) {
        let Some((router, hosts)) = self.by_object.remove(&key) else {
            return;
        };
        for host in hosts {
            if let Some(routers) = self.by_host.get_mut(&host) {
                routers.remove(&router);
                if routers.is_empty() {
                    self.by_host.remove(&host);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(kind: &str, name: &str, spec: Value) -> DynamicObject {
        serde_json::from_value(
            json!({"apiVersion": "x/v1", "kind": kind, "metadata": {"name": name, "namespace": "shop"}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn a_service_routed_by_a_virtual_service_and_an_http_route_is_refused_naming_both() {
        let hosts = Hosts::default();
        let vs = object(
            "VirtualService",
            "legacy",
            json!({"hosts": ["checkout.shop.svc.cluster.local"]}),
        );
        let route = object(
            "HTTPRoute",
            "checkout",
            json!({"parentRefs": [{"group": "", "kind": "Service", "name": "checkout"}]}),
        );
        hosts.follow(Named::VirtualService, &vs, false);
        hosts.follow(Named::HttpRoute, &route, false);
        let route_value = serde_json::to_value(&route).unwrap();
        let e = hosts.conflict(Named::HttpRoute, &route_value).expect("a conflict");
        assert!(
            e.contains(
                "Service shop/checkout is routed by both HTTPRoute shop/checkout and VirtualService shop/legacy"
            ),
            "{e}"
        );
        let vs_value = serde_json::to_value(&vs).unwrap();
        assert!(
            hosts
                .conflict(Named::VirtualService, &vs_value)
                .unwrap()
                .contains("HTTPRoute shop/checkout")
        );
        // The VirtualService deleted (or found gone by a relist): no conflict left.
        hosts.forget(&[index::key(Named::VirtualService, "shop", "legacy")]);
        assert_eq!(hosts.conflict(Named::HttpRoute, &route_value), None);
    }

    #[test]
    fn a_gateways_route_and_other_services_do_not_conflict() {
        let hosts = Hosts::default();
        let vs = object("VirtualService", "checkout", json!({"hosts": ["checkout"]}));
        let ingress = object("HTTPRoute", "public", json!({"parentRefs": [{"name": "ingress"}]}));
        let other = object(
            "HTTPRoute",
            "cart",
            json!({"parentRefs": [{"group": "", "kind": "Service", "name": "cart"}]}),
        );
        for (named, o) in [
            (Named::VirtualService, &vs),
            (Named::HttpRoute, &ingress),
            (Named::HttpRoute, &other),
        ] {
            hosts.follow(named, o, false);
        }
        assert_eq!(
            hosts.conflict(Named::VirtualService, &serde_json::to_value(&vs).unwrap()),
            None
        );
        // An edit that moves the route onto checkout is seen; deleting it clears it.
        let moved = object(
            "HTTPRoute",
            "cart",
            json!({"parentRefs": [{"group": "", "kind": "Service", "name": "checkout"}]}),
        );
        hosts.follow(Named::HttpRoute, &moved, false);
        assert!(
            hosts
                .conflict(Named::VirtualService, &serde_json::to_value(&vs).unwrap())
                .is_some()
        );
        hosts.follow(Named::HttpRoute, &moved, true);
        assert_eq!(
            hosts.conflict(Named::VirtualService, &serde_json::to_value(&vs).unwrap()),
            None
        );
    }
}
