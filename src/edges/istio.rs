//! Istio's router: reads the user's VirtualService and finds the stable and canary
//! destinations of the routes weir manages (`routes` builds the JSON Patch that changes
//! those weights and nothing else). Also checks that the DestinationRule subsets (or the two
//! Services in host mode) really tell the stable pods from the canary pods.
//!
//! Pure functions over `serde_json::Value`: the objects are the user's, in whatever shape
//! Istio accepts, and everything weir does not understand must survive untouched.

use serde_json::Value;

use crate::api::{IstioRouting, Labels};
use crate::edges::routes::{ManagedRoute, Shape};

/// A destination host as written (`backend`, `backend.dev`, `backend.dev.svc.cluster.local`)
/// reduced to (name, namespace), short names resolved in the VirtualService's namespace.
fn service_of(host: &str, namespace: &str) -> (String, String) {
    let mut parts = host.split('.');
    let name = parts.next().unwrap_or_default().to_string();
    let ns = parts.next().unwrap_or(namespace).to_string();
    (name, ns)
}

fn same_service(a: &str, b: &str, namespace: &str) -> bool {
    service_of(a, namespace) == service_of(b, namespace)
}

/// How to recognize each destination.
#[derive(Clone, Debug, PartialEq)]
pub enum DestinationMatch {
    /// Subset mode: the DestinationRule's host with the stable / canary subset.
    Subsets {
        host: String,
        stable: String,
        canary: String,
    },
    /// Host mode: two Services.
    Hosts { stable: String, canary: String },
}

impl DestinationMatch {
    pub fn new(routing: &IstioRouting, destination_rule_host: Option<&str>) -> Option<DestinationMatch> {
        if let Some(dr) = &routing.destination_rule {
            return Some(DestinationMatch::Subsets {
                host: destination_rule_host?.to_string(),
                stable: dr.stable_subset.clone(),
                canary: dr.canary_subset.clone(),
            });
        }
        routing.hosts.as_ref().map(|h| DestinationMatch::Hosts {
            stable: h.stable_service.clone(),
            canary: h.canary_service.clone(),
        })
    }

    fn is(&self, destination: &Value, canary: bool, namespace: &str) -> bool {
        let host = destination.get("host").and_then(Value::as_str).unwrap_or_default();
        let subset = destination.get("subset").and_then(Value::as_str);
        match self {
            DestinationMatch::Subsets {
                host: h,
                stable,
                canary: c,
            } => same_service(host, h, namespace) && subset == Some(if canary { c.as_str() } else { stable.as_str() }),
            DestinationMatch::Hosts { stable, canary: c } => {
                same_service(host, if canary { c } else { stable }, namespace) && subset.is_none()
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            DestinationMatch::Subsets { host, stable, canary } => {
                format!("host {host} subsets {stable:?} and {canary:?}")
            }
            DestinationMatch::Hosts { stable, canary } => format!("hosts {stable:?} and {canary:?}"),
        }
    }
}

fn weight_of(route: &[Value], i: usize) -> u32 {
    match route.get(i).and_then(|d| d.get("weight")).and_then(Value::as_u64) {
        Some(w) => u32::try_from(w).unwrap_or(u32::MAX),
        // Istio: a lone destination without weight takes everything.
        None if route.len() == 1 => 100,
        None => 0,
    }
}

/// Finds the routes weir manages in a VirtualService.
///
/// `names`: the routes the Rollout lists; empty means every HTTP route that carries both
/// destinations. A listed route that is missing or lacks a destination is an error, as is
/// a VirtualService where no route carries both: weir reports, it does not guess.
// Long: each way a VirtualService can fail to fit is a precise message of its own.
pub fn managed_routes(vs: &Value, names: &[String], matcher: &DestinationMatch) -> Result<Vec<ManagedRoute>, String> {
    let vs_name = vs.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?");
    let namespace = vs
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let what = format!("VirtualService {namespace}/{vs_name}");
    let http = vs
        .pointer("/spec/http")
        .and_then(Value::as_array)
        .ok_or(format!("{what} has no HTTP routes"))?;
    for name in names {
        if !http.iter().any(|r| r.get("name").and_then(Value::as_str) == Some(name)) {
            return Err(format!("{what}: no HTTP route named {name:?}"));
        }
    }
    let mut managed = Vec::new();
    for (http_index, route) in http.iter().enumerate() {
        let route_name = route.get("name").and_then(Value::as_str).unwrap_or_default();
        let listed = names.is_empty() || names.iter().any(|n| n == route_name);
        if !listed {
            continue;
        }
        let dests = route
            .get("route")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let stable = dests
            .iter()
            .position(|d| matcher.is(d.get("destination").unwrap_or(&Value::Null), false, namespace));
        let canary = dests
            .iter()
            .position(|d| matcher.is(d.get("destination").unwrap_or(&Value::Null), true, namespace));
        let (Some(stable_index), Some(canary_index)) = (stable, canary) else {
            if !names.is_empty() {
                let missing = if stable.is_none() { "stable" } else { "canary" };
                return Err(format!(
                    "{what}: route {route_name:?} (http[{http_index}]) has no {missing} destination ({})",
                    matcher.describe()
                ));
            }
            continue;
        };
        let others: Vec<(usize, u32)> = (0..dests.len())
            .filter(|i| *i != stable_index && *i != canary_index)
            .map(|i| (i, weight_of(dests, i)))
            .collect();
        let route = ManagedRoute {
            shape: Shape::VirtualService,
            http_index,
            stable_index,
            canary_index,
            others,
            stable_weight: weight_of(dests, stable_index),
            canary_weight: weight_of(dests, canary_index),
        };
        if route.pair() == 0 {
            return Err(format!(
                "{what}: route http[{http_index}] gives stable and canary no weight, so there is nothing to split"
            ));
        }
        managed.push(route);
    }
    if managed.is_empty() {
        return Err(format!(
            "{what}: no HTTP route has both destinations ({})",
            matcher.describe()
        ));
    }
    Ok(managed)
}

fn labels_of(v: Option<&Value>) -> Labels {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn selects(selector: &Labels, pod: &Labels) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| pod.get(k) == Some(v))
}

/// Checks that a selector (subset labels or Service selector) picks the pods of its own
/// track and not the other's. `what` names it in the message.
fn check_selector(what: &str, selector: &Labels, own: &Labels, other: &Labels, track: &str) -> Result<(), String> {
    if !selects(selector, own) {
        return Err(format!(
            "{what} selects {selector:?}, which matches no {track} pod (the {track} pods carry {own:?}); \
             its share of traffic would go nowhere"
        ));
    }
    if selects(selector, other) {
        let other_track = if track == "stable" { "canary" } else { "stable" };
        return Err(format!(
            "{what} selects {selector:?}, which also matches the {other_track} pods; it cannot tell the tracks apart"
        ));
    }
    Ok(())
}

/// Subset mode: both subsets exist and each selects its own track only.
pub fn check_destination_rule(
    dr: &Value,
    stable_subset: &str,
    canary_subset: &str,
    stable_pods: &Labels,
    canary_pods: &Labels,
) -> Result<(), String> {
    let name = dr.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?");
    let namespace = dr
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let subsets = dr
        .pointer("/spec/subsets")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let find = |subset: &str| {
        subsets
            .iter()
            .find(|s| s.get("name").and_then(Value::as_str) == Some(subset))
            .map(|s| labels_of(s.get("labels")))
            .ok_or(format!("DestinationRule {namespace}/{name} has no subset {subset:?}"))
    };
    let stable = find(stable_subset)?;
    let canary = find(canary_subset)?;
    let what = |s: &str| format!("DestinationRule {namespace}/{name} subset {s:?}");
    check_selector(&what(stable_subset), &stable, stable_pods, canary_pods, "stable")?;
    check_selector(&what(canary_subset), &canary, canary_pods, stable_pods, "canary")
}

/// Host mode: each Service selects its own track only.
pub fn check_services(
    stable: (&str, &Labels),
    canary: (&str, &Labels),
    stable_pods: &Labels,
    canary_pods: &Labels,
) -> Result<(), String> {
    check_selector(
        &format!("Service {}", stable.0),
        stable.1,
        stable_pods,
        canary_pods,
        "stable",
    )?;
    check_selector(
        &format!("Service {}", canary.0),
        canary.1,
        canary_pods,
        stable_pods,
        "canary",
    )
}

/// The DestinationRule's `spec.host`, which the VirtualService's destinations name.
pub fn destination_rule_host(dr: &Value) -> Option<&str> {
    dr.pointer("/spec/host").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::routes::{observed_canary_percent, weight_patch};
    use serde_json::json;

    fn vs() -> Value {
        serde_json::from_str(
            r#"{
          "metadata": {"name": "backend", "namespace": "dev", "resourceVersion": "42"},
          "spec": {"hosts": ["backend"], "http": [
            {"name": "admin", "match": [{"uri": {"prefix": "/admin"}}],
             "route": [{"destination": {"host": "backend", "subset": "stable"}}]},
            {"name": "primary", "retries": {"attempts": 3}, "timeout": "5s",
             "route": [
               {"destination": {"host": "backend.dev.svc.cluster.local", "subset": "stable"}, "weight": 90},
               {"destination": {"host": "backend", "subset": "canary"}, "weight": 0},
               {"destination": {"host": "legacy"}, "weight": 10}]}
          ]}}"#,
        )
        .unwrap()
    }

    fn subsets() -> DestinationMatch {
        DestinationMatch::Subsets {
            host: "backend".into(),
            stable: "stable".into(),
            canary: "canary".into(),
        }
    }

    #[test]
    fn finds_only_routes_with_both_destinations_and_splits_what_others_leave() {
        let routes = managed_routes(&vs(), &[], &subsets()).unwrap();
        assert_eq!(routes.len(), 1);
        let r = &routes[0];
        assert_eq!((r.http_index, r.stable_index, r.canary_index), (1, 0, 1));
        assert_eq!(r.others, vec![(2, 10)]);
        assert_eq!(r.weights_for(50), (45, 45));
        assert_eq!(r.weights_for(100), (0, 90));
        assert_eq!(r.canary_percent(), 0);
    }

    #[test]
    fn weights_always_sum_to_the_pairs_and_others_keep_their_share() {
        let r = ManagedRoute {
            shape: Shape::VirtualService,
            http_index: 0,
            stable_index: 0,
            canary_index: 1,
            others: vec![(2, 7)],
            stable_weight: 93,
            canary_weight: 0,
        };
        for p in 0..=100 {
            let (s, c) = r.weights_for(p);
            assert_eq!(s + c, 93);
        }
        // Relative weights: stable 1 beside legacy 1 is half the traffic each.
        let small = ManagedRoute {
            others: vec![(2, 1)],
            stable_weight: 1,
            ..r
        };
        assert_eq!(small.scale(), 100);
        assert_eq!(small.weights_for(10), (90, 10), "10 % of stable's half");
        let vs = json!({"metadata": {"resourceVersion": "5"}});
        let patch = weight_patch(&vs, &[small], 10);
        assert_eq!(
            patch[1],
            json!({"op": "add", "path": "/spec/http/0/route/2/weight", "value": 100}),
            "legacy keeps half"
        );
    }

    #[test]
    fn a_listed_route_without_the_canary_destination_is_reported() {
        let err = managed_routes(&vs(), &["admin".into()], &subsets()).unwrap_err();
        assert!(
            err.contains("route \"admin\" (http[0]) has no canary destination"),
            "{err}"
        );
        let err = managed_routes(&vs(), &["nope".into()], &subsets()).unwrap_err();
        assert!(err.contains("no HTTP route named \"nope\""), "{err}");
    }

    #[test]
    fn the_patch_touches_only_the_two_weights_and_guards_the_version() {
        let v = vs();
        let routes = managed_routes(&v, &[], &subsets()).unwrap();
        let patch = weight_patch(&v, &routes, 25);
        assert_eq!(
            patch,
            json!([
                {"op": "replace", "path": "/metadata/resourceVersion", "value": "42"},
                {"op": "add", "path": "/spec/http/1/route/0/weight", "value": 67},
                {"op": "add", "path": "/spec/http/1/route/1/weight", "value": 23},
            ])
        );
    }

    #[test]
    fn host_mode_finds_the_two_services_and_checks_their_selectors() {
        let vs = json!({"metadata": {"name": "backend", "namespace": "dev"}, "spec": {"http": [{"route": [
            {"destination": {"host": "backend-stable.dev.svc.cluster.local"}, "weight": 80},
            {"destination": {"host": "backend-canary"}, "weight": 20}]}]}});
        let hosts = DestinationMatch::Hosts {
            stable: "backend-stable".into(),
            canary: "backend-canary".into(),
        };
        let routes = managed_routes(&vs, &[], &hosts).unwrap();
        assert_eq!(observed_canary_percent(&routes), 20);
        let l =
            |pairs: &[(&str, &str)]| -> Labels { pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
        let stable_pods = l(&[("app", "backend"), ("weir.dev/track", "stable")]);
        let canary_pods = l(&[("app", "backend"), ("weir.dev/track", "canary")]);
        let ok = check_services(
            ("backend-stable", &l(&[("weir.dev/track", "stable")])),
            ("backend-canary", &l(&[("weir.dev/track", "canary")])),
            &stable_pods,
            &canary_pods,
        );
        assert_eq!(ok, Ok(()));
        let e = check_services(
            ("backend-stable", &l(&[("app", "backend")])),
            ("backend-canary", &l(&[("weir.dev/track", "canary")])),
            &stable_pods,
            &canary_pods,
        )
        .unwrap_err();
        assert!(
            e.contains("Service backend-stable") && e.contains("also matches the canary pods"),
            "{e}"
        );
    }

    #[test]
    fn destination_rule_subsets_must_separate_the_tracks() {
        let dr: Value = serde_json::from_str(
            r#"{"metadata": {"name": "backend", "namespace": "dev"}, "spec": {"host": "backend", "subsets": [
              {"name": "stable", "labels": {"app": "backend", "weir.dev/track": "stable"}},
              {"name": "canary", "labels": {"app": "backend", "weir.dev/track": "canary"}},
              {"name": "v2", "labels": {"version": "v2"}},
              {"name": "all", "labels": {"app": "backend"}}]}}"#,
        )
        .unwrap();
        let stable: Labels = [("app", "backend"), ("weir.dev/track", "stable")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        let canary: Labels = [("app", "backend"), ("weir.dev/track", "canary")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        assert_eq!(
            check_destination_rule(&dr, "stable", "canary", &stable, &canary),
            Ok(())
        );
        let e = check_destination_rule(&dr, "stable", "v2", &stable, &canary).unwrap_err();
        assert!(e.contains("matches no canary pod"), "{e}");
        let e = check_destination_rule(&dr, "all", "canary", &stable, &canary).unwrap_err();
        assert!(e.contains("also matches the canary pods"), "{e}");
        let e = check_destination_rule(&dr, "stable", "gone", &stable, &canary).unwrap_err();
        assert!(e.contains("has no subset \"gone\""), "{e}");
    }
}
