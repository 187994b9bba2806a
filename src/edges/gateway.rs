//! Gateway API's router: reads the user's HTTPRoute and finds, in the rules weir
//! manages, the backendRefs of the stable and the canary Service (`routes` builds the
//! JSON Patch that changes those weights and nothing else: matches, filters, timeouts,
//! other backends and their share stay as they are).
//!
//! HTTPRoute routes to Services, not subsets: each version has a Service of its own.
//! A route parented by a Service is the mesh's (GAMMA: sidecars, or an ambient
//! waypoint); one parented by a Gateway is an ingress's; weir moves weights alike.

use serde_json::Value;

use crate::edges::routes::{ManagedRoute, Shape};

/// The HTTPRoute API weir speaks (Gateway API's standard channel, v1).
pub const GROUP: &str = "gateway.networking.k8s.io";
pub const VERSION: &str = "v1";

/// Whether a backendRef is the Service `service` of the route's namespace.
fn is_service(backend: &Value, service: &str, namespace: &str) -> bool {
    let field = |k: &str| backend.get(k).and_then(Value::as_str);
    field("kind").unwrap_or("Service") == "Service"
        && field("group").unwrap_or("").is_empty()
        && field("name") == Some(service)
        && field("namespace").is_none_or(|ns| ns == namespace)
}

/// A backendRef's weight: Gateway API's default is 1 (the API server writes it).
fn weight_of(backends: &[Value], i: usize) -> u32 {
    match backends.get(i).and_then(|b| b.get("weight")).and_then(Value::as_u64) {
        Some(w) => u32::try_from(w).unwrap_or(u32::MAX),
        None => 1,
    }
}

/// Finds the rules weir manages in an HTTPRoute.
///
/// `names`: the rules the Rollout lists (`spec.rules[].name`); empty means every rule
/// whose backendRefs have both Services. A listed rule that is missing or lacks a
/// Service is an error, as is an HTTPRoute where no rule has both.
// Long: each way an HTTPRoute can fail to fit is a precise message of its own.
pub fn managed_rules(route: &Value, names: &[String], stable: &str, canary: &str) -> Result<Vec<ManagedRoute>, String> {
    let text = |p: &str| route.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let (namespace, name) = (text("/metadata/namespace"), text("/metadata/name"));
    let what = format!("HTTPRoute {namespace}/{name}");
    let rules = (route.pointer("/spec/rules").and_then(Value::as_array)).ok_or(format!("{what} has no rules"))?;
    for wanted in names {
        if !rules
            .iter()
            .any(|r| r.get("name").and_then(Value::as_str) == Some(wanted))
        {
            return Err(format!("{what}: no rule named {wanted:?}"));
        }
    }
    let services = format!("Services {stable:?} and {canary:?}");
    let mut managed = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        let rule_name = rule.get("name").and_then(Value::as_str).unwrap_or_default();
        if !(names.is_empty() || names.iter().any(|n| n == rule_name)) {
            continue;
        }
        let backends = (rule.get("backendRefs").and_then(Value::as_array)).map_or(&[][..], Vec::as_slice);
        let find = |service: &str| backends.iter().position(|b| is_service(b, service, namespace));
        let (Some(stable_index), Some(canary_index)) = (find(stable), find(canary)) else {
            if !names.is_empty() {
                let missing = if find(stable).is_none() { stable } else { canary };
                return Err(format!(
                    "{what}: rule {rule_name:?} (rules[{index}]) has no backendRef to Service {missing:?}"
                ));
            }
            continue;
        };
        let others = (0..backends.len())
            .filter(|i| *i != stable_index && *i != canary_index)
            .map(|i| (i, weight_of(backends, i)))
            .collect();
        let managed_rule = ManagedRoute {
            shape: Shape::HttpRoute,
            http_index: index,
            stable_index,
            canary_index,
            others,
            stable_weight: weight_of(backends, stable_index),
            canary_weight: weight_of(backends, canary_index),
        };
        if managed_rule.pair() == 0 {
            return Err(format!(
                "{what}: rules[{index}] gives stable and canary no weight, so there is nothing to split"
            ));
        }
        managed.push(managed_rule);
    }
    match managed.is_empty() {
        true => Err(format!("{what}: no rule has backendRefs to both {services}")),
        false => Ok(managed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::routes::{observed_canary_percent, weight_patch};
    use serde_json::json;

    fn route(rules: Value) -> Value {
        json!({"metadata": {"name": "backend", "namespace": "shop", "resourceVersion": "7"}, "spec": {"parentRefs": [{"kind": "Service", "group": "", "name": "backend"}], "rules": rules}})
    }

    #[test]
    fn a_rule_with_both_services_is_managed_and_its_patch_touches_only_their_weights() {
        let r = route(json!([
            {"matches": [{"headers": [{"name": "x-beta", "value": "1"}]}], "backendRefs": [{"name": "backend-beta", "port": 80, "weight": 1}]},
            {"name": "main", "timeouts": {"request": "5s"}, "backendRefs": [
                {"name": "backend-stable", "port": 80, "weight": 1},
                {"name": "backend-canary", "port": 80, "weight": 0}]},
        ]));
        let rules = managed_rules(&r, &[], "backend-stable", "backend-canary").unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(observed_canary_percent(&rules), 0);
        // A pair of weight 1 is scaled to 100 so that a percent can be written.
        let patch = weight_patch(&r, &rules, 25);
        assert_eq!(
            patch,
            json!([
                {"op": "replace", "path": "/metadata/resourceVersion", "value": "7"},
                {"op": "add", "path": "/spec/rules/1/backendRefs/0/weight", "value": 75},
                {"op": "add", "path": "/spec/rules/1/backendRefs/1/weight", "value": 25},
            ])
        );
    }

    #[test]
    fn another_backend_keeps_its_share() {
        let r = route(json!([{"backendRefs": [
            {"name": "legacy", "port": 80, "weight": 20},
            {"name": "s", "port": 80, "weight": 80},
            {"name": "c", "port": 80, "weight": 0}]}]));
        let rules = managed_rules(&r, &[], "s", "c").unwrap();
        let patch = weight_patch(&r, &rules, 50);
        assert_eq!(
            patch[1],
            json!({"op": "add", "path": "/spec/rules/0/backendRefs/1/weight", "value": 40})
        );
        assert_eq!(
            patch[2],
            json!({"op": "add", "path": "/spec/rules/0/backendRefs/2/weight", "value": 40})
        );
        assert_eq!(patch.as_array().unwrap().len(), 3, "legacy untouched: {patch}");
    }

    #[test]
    fn backends_of_another_kind_or_namespace_are_not_the_services() {
        let r = route(json!([{"backendRefs": [
            {"name": "s", "port": 80, "namespace": "other"},
            {"name": "c", "port": 80, "kind": "ServiceImport", "group": "multicluster.x-k8s.io"}]}]));
        let e = managed_rules(&r, &[], "s", "c").unwrap_err();
        assert!(e.contains("no rule has backendRefs to both"), "{e}");
    }

    #[test]
    fn a_listed_rule_must_exist_and_have_both() {
        let r = route(json!([{"name": "main", "backendRefs": [{"name": "s", "port": 80}]}]));
        let e = managed_rules(&r, &["api".into()], "s", "c").unwrap_err();
        assert_eq!(e, "HTTPRoute shop/backend: no rule named \"api\"");
        let e = managed_rules(&r, &["main".into()], "s", "c").unwrap_err();
        assert!(e.contains("rules[0]) has no backendRef to Service \"c\""), "{e}");
        let r = route(
            json!([{"backendRefs": [{"name": "s", "port": 80, "weight": 0}, {"name": "c", "port": 80, "weight": 0}]}]),
        );
        assert!(managed_rules(&r, &[], "s", "c").unwrap_err().contains("no weight"));
    }
}
