//! What both routers share: the routes weir manages in the user's routing object (a
//! VirtualService or an HTTPRoute), the canary percent they carry, and the JSON Patch
//! that sets it and changes nothing else.

use jiff::Timestamp;
use serde_json::{Value, json};
use weir_core::engine::MeshConfirmation;

/// Which kind of routing object a route is in: where its weights live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `spec.http[i].route[j].weight`
    VirtualService,
    /// `spec.rules[i].backendRefs[j].weight`
    HttpRoute,
}

impl Shape {
    pub fn kind(self) -> &'static str {
        match self {
            Shape::VirtualService => "VirtualService",
            Shape::HttpRoute => "HTTPRoute",
        }
    }

    pub fn weight_path(self, route: usize, destination: usize) -> String {
        match self {
            Shape::VirtualService => format!("/spec/http/{route}/route/{destination}/weight"),
            Shape::HttpRoute => format!("/spec/rules/{route}/backendRefs/{destination}/weight"),
        }
    }
}

/// One route weir manages: an HTTP route of a VirtualService (`spec.http[i]`, its
/// destinations `route[j]`) or a rule of an HTTPRoute (`spec.rules[i]`, its
/// `backendRefs[j]`).
///
/// Both routers' weights are relative: a destination gets its weight over the route's total.
/// weir splits the stable + canary pair's own weight between the two and leaves every
/// other destination's share of the route as it was. Where that pair's weight is too
/// small to express a percent (stable 1 beside legacy 1: weights that do not sum to
/// 100), the whole route is scaled up once, every weight by the same factor, so the
/// other destinations keep their share.
#[derive(Clone, Debug, PartialEq)]
pub struct ManagedRoute {
    pub shape: Shape,
    pub http_index: usize,
    pub stable_index: usize,
    pub canary_index: usize,
    /// The route's other destinations: (index, weight).
    pub others: Vec<(usize, u32)>,
    pub stable_weight: u32,
    pub canary_weight: u32,
}

impl ManagedRoute {
    /// The weight stable and canary split between them.
    pub fn pair(&self) -> u32 {
        self.stable_weight + self.canary_weight
    }

    /// The factor all weights of the route are scaled by so the pair has at least 100:
    /// 1 for routes whose weights sum to 100 (as Istio's examples do) or whose pair
    /// already has 100.
    pub fn scale(&self) -> u32 {
        let others: u32 = self.others.iter().map(|(_, w)| w).sum();
        match self.pair() {
            0 => 1,
            pair if pair >= 100 || pair + others == 100 => 1,
            pair => 100u32.div_ceil(pair),
        }
    }

    /// Canary weight as a percent of the pair's (what the Rollout's steps mean).
    pub fn canary_percent(&self) -> u32 {
        let pair = self.pair();
        (self.canary_weight * 100 + pair / 2).checked_div(pair).unwrap_or(0)
    }

    /// (stable, canary) weights for a canary percent; they sum to the pair's weight
    /// times `scale()`.
    pub fn weights_for(&self, percent: u32) -> (u32, u32) {
        let pair = self.pair() * self.scale();
        let canary = (pair * percent.min(100) + 50) / 100;
        (pair - canary, canary)
    }
}

/// The canary percent now in force: the highest over the managed routes, so a
/// half-written change is never read as "less canary traffic" than there is.
pub fn observed_canary_percent(routes: &[ManagedRoute]) -> u32 {
    routes.iter().map(ManagedRoute::canary_percent).max().unwrap_or(0)
}

/// The managed routes do not all carry the same canary percent (one was edited by hand
/// or by a sync): a write is due to bring every route to the state's weight.
pub fn routes_disagree(routes: &[ManagedRoute]) -> bool {
    let mut percents = routes.iter().map(ManagedRoute::canary_percent);
    let first = percents.next();
    percents.any(|p| Some(p) != first)
}

/// JSON Patch that sets the canary percent on every managed route. It carries the
/// resourceVersion it was computed from, which the API server treats as a precondition:
/// a concurrent edit fails with 409 Conflict instead of landing weights at stale
/// indices; the next reconcile recomputes.
pub fn weight_patch(vs: &Value, routes: &[ManagedRoute], percent: u32) -> Value {
    let mut ops = Vec::new();
    if let Some(rv) = vs.pointer("/metadata/resourceVersion") {
        ops.push(json!({"op": "replace", "path": "/metadata/resourceVersion", "value": rv}));
    }
    for r in routes {
        let scale = r.scale();
        for (i, w) in r.others.iter().filter(|_| scale > 1) {
            ops.push(json!({"op": "add", "path": r.shape.weight_path(r.http_index, *i), "value": w * scale}));
        }
        let (stable, canary) = r.weights_for(percent);
        for (i, w) in [(r.stable_index, stable), (r.canary_index, canary)] {
            ops.push(json!({"op": "add", "path": r.shape.weight_path(r.http_index, i), "value": w}));
        }
    }
    Value::Array(ops)
}

/// Whether the mesh confirmed the route's current generation, from the status it writes:
/// an HTTPRoute's `status.parents[]` (each of the route's parents Accepted at the route's
/// generation: Istio writes them once istiod has the route), a VirtualService's
/// `Reconciled` condition with `status.observedGeneration` (istiod's config
/// distribution status: every proxy acknowledged it; off unless `PILOT_ENABLE_STATUS`
/// and `PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING` are set). A route with no such status
/// is `NotWritten`. `now`: when this status is seen; the controller keeps the first time.
pub fn mesh_confirmation(shape: Shape, route: &Value, now: Timestamp) -> MeshConfirmation {
    let generation = route.pointer("/metadata/generation").and_then(as_i64);
    let name = route
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let pending = match shape {
        Shape::VirtualService => virtual_service_pending(route, generation),
        Shape::HttpRoute => http_route_pending(route, generation),
    };
    match pending {
        None => MeshConfirmation::NotWritten,
        Some(Some(why)) => MeshConfirmation::Pending(format!("{} {name}: {why}", shape.kind())),
        Some(None) => MeshConfirmation::Confirmed { since: now },
    }
}

/// Kubernetes writes generations as numbers; protobuf's JSON (Istio's status) as strings.
fn as_i64(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str()?.parse().ok())
}

fn condition<'a>(conditions: Option<&'a Value>, type_: &str) -> Option<&'a Value> {
    let list = conditions?.as_array()?;
    list.iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
}

/// `None`: no distribution status; `Some(None)`: confirmed; `Some(Some(why))`: pending.
fn virtual_service_pending(vs: &Value, generation: Option<i64>) -> Option<Option<String>> {
    let reconciled = condition(vs.pointer("/status/conditions"), "Reconciled")?;
    let observed = (vs.pointer("/status/observedGeneration"))
        .or_else(|| reconciled.get("observedGeneration"))
        .and_then(as_i64);
    let status = reconciled.get("status").and_then(Value::as_str).unwrap_or("Unknown");
    let message = reconciled.get("message").and_then(Value::as_str).unwrap_or_default();
    Some(match (observed == generation, status) {
        (true, "True") => None,
        (true, _) => Some(format!("Reconciled is {status} ({message})")),
        (false, _) => Some(format!(
            "status.observedGeneration {} is not generation {}",
            observed.unwrap_or(0),
            generation.unwrap_or(0)
        )),
    })
}

fn http_route_pending(route: &Value, generation: Option<i64>) -> Option<Option<String>> {
    let parents = route.pointer("/status/parents")?.as_array().filter(|p| !p.is_empty())?;
    let wanted = route
        .pointer("/spec/parentRefs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ref_name = |r: &Value| r.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    for parent in &wanted {
        let name = ref_name(parent);
        let status = parents
            .iter()
            .find(|p| p.get("parentRef").is_some_and(|r| ref_name(r) == name));
        let accepted = status.and_then(|s| condition(s.get("conditions"), "Accepted"));
        let Some(accepted) = accepted else {
            return Some(Some(format!("parent {name} has no Accepted condition yet")));
        };
        let observed = accepted.get("observedGeneration").and_then(as_i64);
        let state = accepted.get("status").and_then(Value::as_str).unwrap_or("Unknown");
        if observed != generation || state != "True" {
            return Some(Some(format!(
                "parent {name}: Accepted {state} at generation {}, the route is at {}",
                observed.unwrap_or(0),
                generation.unwrap_or(0)
            )));
        }
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-12-05T10:00:00Z".parse().unwrap()
    }

    fn http_route(generation: i64, parents: Value) -> Value {
        json!({
            "kind": "HTTPRoute",
            "metadata": {"name": "checkout", "generation": generation},
            "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "checkout"}]},
            "status": {"parents": parents},
        })
    }

    fn accepted(status: &str, generation: i64) -> Value {
        json!([{
            "parentRef": {"group": "", "kind": "Service", "name": "checkout"},
            "controllerName": "istio.io/gateway-controller",
            "conditions": [{"type": "Accepted", "status": status, "observedGeneration": generation}],
        }])
    }

    #[test]
    fn an_http_route_is_confirmed_when_every_parent_accepted_its_generation() {
        let at = |r: &Value| mesh_confirmation(Shape::HttpRoute, r, now());
        assert_eq!(
            at(&http_route(4, accepted("True", 4))),
            MeshConfirmation::Confirmed { since: now() }
        );
        let MeshConfirmation::Pending(why) = at(&http_route(5, accepted("True", 4))) else {
            panic!()
        };
        assert_eq!(
            why,
            "HTTPRoute checkout: parent checkout: Accepted True at generation 4, the route is at 5"
        );
        assert!(matches!(
            at(&http_route(4, accepted("False", 4))),
            MeshConfirmation::Pending(_)
        ));
        // No status: a mesh that writes none; the drain delay stands in.
        assert_eq!(at(&http_route(4, json!([]))), MeshConfirmation::NotWritten);
    }

    #[test]
    fn a_virtual_service_is_confirmed_by_istiods_reconciled_condition_at_its_generation() {
        let vs = |observed: Value, status: &str| {
            json!({
                "kind": "VirtualService",
                "metadata": {"name": "checkout", "generation": 7},
                "status": {"observedGeneration": observed, "conditions": [
                    {"type": "Reconciled", "status": status, "message": "61/122 complete", "reason": "stillPropagating"},
                ]},
            })
        };
        let at = |v: &Value| mesh_confirmation(Shape::VirtualService, v, now());
        // protobuf's JSON writes int64 as a string.
        assert_eq!(
            at(&vs(json!("7"), "True")),
            MeshConfirmation::Confirmed { since: now() }
        );
        let MeshConfirmation::Pending(why) = at(&vs(json!(7), "False")) else {
            panic!()
        };
        assert_eq!(why, "VirtualService checkout: Reconciled is False (61/122 complete)");
        assert!(matches!(at(&vs(json!("6"), "True")), MeshConfirmation::Pending(_)));
        let plain = json!({"kind": "VirtualService", "metadata": {"name": "checkout", "generation": 7}});
        assert_eq!(at(&plain), MeshConfirmation::NotWritten);
    }
}
