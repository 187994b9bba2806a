//! What both routers share: the routes weir manages in the user's routing object (a
//! VirtualService or an HTTPRoute), the canary percent they carry, and the JSON Patch
//! that sets it and changes nothing else.

use serde_json::{Value, json};

/// Which kind of routing object a route is in: where its weights live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `spec.http[i].route[j].weight`
    VirtualService,
    /// `spec.rules[i].backendRefs[j].weight`
    HttpRoute,
}

impl Shape {
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
