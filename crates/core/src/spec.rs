//! What a user declares in a `Rollout` (`weir.dev/v1alpha1`): plain serde types with
//! their OpenAPI schema. The product crate wraps `RolloutSpec` into the custom resource;
//! the checks the API server can do (types, ranges, CEL rules that span fields) are in the
//! schema, `crate::plan` does the rest.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Label that tells stable pods from canary pods. The user's pod template carries
/// `weir.dev/track: stable`; weir's canary Deployment overrides it to `canary`.
pub const DEFAULT_TRACK_LABEL: &str = "weir.dev/track";
/// One-shot requests from a person (`weir promote|abort|retry`): `<verb>/<nonce>`.
pub const REQUEST_ANNOTATION: &str = "weir.dev/request";
/// While `"true"`, a canary in progress holds its step (`weir pause|resume`).
pub const PAUSED_ANNOTATION: &str = "weir.dev/paused";
/// Label put on the canary Deployment weir owns, naming its Rollout.
pub const ROLLOUT_LABEL: &str = "weir.dev/rollout";
/// Annotation on the canary Deployment: the revision its template runs.
pub const REVISION_ANNOTATION: &str = "weir.dev/revision";

const DURATION_RULE: &str = "duration(self) > duration('0s')";
const DURATION_MESSAGE: &str = "must be a positive duration such as 30s, 1m or 1h30m";

/// A canary release of one Deployment through an Istio VirtualService.
/// Kubernetes' object name (a DNS-1123 subdomain), as the API server checks it: names in
/// the CRD carry it, so a Rollout naming something no object can be named is refused
/// before weir sees it.
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A DNS-1123 label: Services, webhooks, receivers, providers, metrics.
pub const LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// The Deployment whose image bumps start a canary. weir never renames it. Fixed for
    /// the Rollout's life: its canary, its pods' labels and its history belong to that
    /// Deployment; for another one, delete the Rollout (everything is handed back) and
    /// create one.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "targetRef cannot change; delete the Rollout (traffic goes back to stable) and create one for the other Deployment"}]))]
    pub target_ref: TargetRef,
    pub traffic_routing: TrafficRouting,
    /// Canary weights, strictly increasing, each 1..=100. The canary is promoted after
    /// the last step passes its analysis.
    #[schemars(length(min = 1, max = 20))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self.map(s, s.weight).isSorted() && self.all(s, self.exists_one(t, t.weight == s.weight))", "message": "step weights must be strictly increasing"}]))]
    pub steps: Vec<Step>,
    pub analysis: Analysis,
    /// How long a step may wait past its due time (for ready canary pods, for evidence
    /// from Prometheus) before the canary is rolled back. Default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": DURATION_RULE, "message": DURATION_MESSAGE}]))]
    pub progress_deadline: Option<String>,
    /// After promotion, how long the old canary pods keep running once traffic has
    /// moved back to stable, so in-flight requests finish. Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": DURATION_RULE, "message": DURATION_MESSAGE}]))]
    pub scale_down_delay: Option<String>,
    /// Pod label whose value (`stable` / `canary`) tells the two tracks apart.
    /// Default `weir.dev/track`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_label: Option<String>,
    /// When a canary may start, advance and be promoted. Outside its windows weir does
    /// not start a canary, or holds it at a passed step (analysis goes on: a bad canary
    /// is still rolled back at any hour); the deadline does not run while it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_windows: Option<ReleaseWindows>,
    /// Receivers the cluster admin declared (Slack, Teams, a signed webhook) that hear
    /// of this Rollout's canaries: started, rolled back, promoted, waiting for a
    /// window, metrics failing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(min = 1, max = 63), pattern(LABEL_PATTERN)))]
    pub notify: Vec<String>,
    /// HTTP endpoints weir asks at points of a release, as Flagger users know them: a
    /// smoke test before any traffic, a yes before a step or the promotion, a hook after
    /// the release, and one that can ask for a rollback. Calls and answers are in
    /// `status.webhooks`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub webhooks: Vec<Webhook>,
}

/// One webhook: weir POSTs a JSON body (`name`, `namespace`, `webhook`, `type`,
/// `revision`, `step`, `metadata`, and for post-rollout `outcome`) and reads any 2xx
/// answer as yes, any other answer as no; no answer (connection error, timeout, 5xx
/// after the retries) counts as no as well.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// Names the webhook in status and Events; unique in the Rollout.
    #[schemars(length(min = 1, max = 63), pattern(LABEL_PATTERN))]
    pub name: String,
    #[serde(rename = "type")]
    pub kind: WebhookKind,
    /// `http://` or `https://` address the cluster admin allowed: by default a Service
    /// of the Rollout's own namespace (`http://smoke.<namespace>.svc:8080/`), or one of
    /// the admin's `allowedUrls`.
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// How long one attempt may take. Default 10s, at most 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": DURATION_RULE, "message": DURATION_MESSAGE}]))]
    pub timeout: Option<String>,
    /// Attempts after the first when there is no answer (connection error, timeout,
    /// 5xx), 1s apart doubling. Default 2, at most 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 5))]
    pub retries: Option<u32>,
    /// What a no means for `pre-rollout`, `confirm-step` and `confirm-promotion`: `hold`
    /// (the canary waits at its step, weir asks again every `analysis.interval`) or
    /// `rollback`. Default: `rollback` for pre-rollout, `hold` for the confirmations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<FailurePolicy>,
    /// Passed as is in the body's `metadata` (e.g. the command a load tester runs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub metadata: BTreeMap<String, String>,
}

/// When weir calls a webhook.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookKind {
    /// Once the canary's pods of step 1 are ready, before any traffic reaches them.
    PreRollout,
    /// When a step passed, before the next one's weight is written.
    ConfirmStep,
    /// When the last step passed, before the promotion.
    ConfirmPromotion,
    /// After the release ended (promoted or rolled back); its answer changes nothing.
    PostRollout,
    /// Asked every `analysis.interval` while the canary runs (its pods start, or it is
    /// analysed; not while paused or promoting): a yes rolls it back.
    Rollback,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum FailurePolicy {
    Hold,
    Rollback,
}

/// Weekly windows in one time zone, e.g. `start: ["Mon-Fri 01:00-05:00"]`. A window is
/// days (`Mon-Fri`, `Sat,Sun`, `daily`) and optionally a local time range (`22:00-06:00`
/// runs past midnight); an empty list means any time.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseWindows {
    /// IANA time zone, e.g. `Europe/Berlin`. Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub time_zone: Option<String>,
    /// When a new revision's canary may start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 64)))]
    pub start: Vec<String>,
    /// When a passed step may give way to the next.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 64)))]
    pub advance: Vec<String>,
    /// When the last passed step may give way to promotion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 64)))]
    pub promote: Vec<String>,
    /// Local dates (`2026-12-24`) or ranges (`2026-12-20/2027-01-03`) when nothing
    /// starts, advances or is promoted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 32)))]
    pub freeze: Vec<String>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// Only `Deployment` is supported.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == 'Deployment'", "message": "only kind Deployment is supported"}]))]
    pub kind: String,
    #[schemars(length(min = 1, max = 253), pattern(NAME_PATTERN))]
    pub name: String,
}

/// The router that carries the weights: Istio's VirtualService, or a Gateway API
/// HTTPRoute (the mesh's, parented by a Service, sidecar or ambient waypoint; or a
/// Gateway's, for ingress).
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "has(self.istio) != has(self.gatewayAPI)", "message": "set exactly one of istio or gatewayAPI"}]))]
pub struct TrafficRouting {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio: Option<IstioRouting>,
    #[serde(default, rename = "gatewayAPI", skip_serializing_if = "Option::is_none")]
    pub gateway_api: Option<GatewayApiRouting>,
}

/// One router of `TrafficRouting`, as the edges use it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Router<'a> {
    Istio(&'a IstioRouting),
    GatewayApi(&'a GatewayApiRouting),
}

impl TrafficRouting {
    /// The router the spec names; `None` when it names none (or both: the API server's
    /// rule refuses that, `plan` reports it).
    pub fn router(&self) -> Option<Router<'_>> {
        match (&self.istio, &self.gateway_api) {
            (Some(istio), None) => Some(Router::Istio(istio)),
            (None, Some(gateway)) => Some(Router::GatewayApi(gateway)),
            _ => None,
        }
    }
}

impl<'a> Router<'a> {
    /// The name of the object that carries the weights.
    pub fn route_name(self) -> &'a str {
        match self {
            Router::Istio(istio) => &istio.virtual_service.name,
            Router::GatewayApi(gateway) => &gateway.http_route.name,
        }
    }

    /// The two Services that tell stable from canary (host mode, Gateway API).
    pub fn services(self) -> Option<(&'a str, &'a str)> {
        match self {
            Router::Istio(istio) => istio
                .hosts
                .as_ref()
                .map(|h| (h.stable_service.as_str(), h.canary_service.as_str())),
            Router::GatewayApi(g) => Some((g.stable_service.as_str(), g.canary_service.as_str())),
        }
    }
}

/// A Gateway API HTTPRoute whose rules send to two Services, one per version: the
/// stable Service selects the stable pods, the canary Service the canary's (both made
/// by the user, as Istio's host mode; weir keeps its canary pods' track label so the
/// canary Service selects them). HTTPRoute routes to Services, not subsets.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "self.stableService != self.canaryService", "message": "stableService and canaryService must differ"}]))]
pub struct GatewayApiRouting {
    pub http_route: HttpRouteRef,
    #[schemars(length(min = 1, max = 63), pattern(LABEL_PATTERN))]
    pub stable_service: String,
    #[schemars(length(min = 1, max = 63), pattern(LABEL_PATTERN))]
    pub canary_service: String,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRef {
    #[schemars(length(min = 1, max = 253), pattern(NAME_PATTERN))]
    pub name: String,
    /// Names of the rules (`spec.rules[].name`) weir manages. Empty: every rule whose
    /// backendRefs have both Services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub rules: Vec<String>,
}

/// The user's own VirtualService, and either DestinationRule subsets (subset mode) or two
/// Services (host mode) that tell the stable pods from the canary pods.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "has(self.destinationRule) != has(self.hosts)", "message": "set exactly one of destinationRule (subset mode) or hosts (host mode)"}]))]
pub struct IstioRouting {
    pub virtual_service: VirtualServiceRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_rule: Option<DestinationRuleRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<HostServices>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceRef {
    #[schemars(length(min = 1, max = 253), pattern(NAME_PATTERN))]
    pub name: String,
    /// Names of the HTTP routes weir manages. Empty: every HTTP route that has both
    /// the stable and the canary destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "self.stableSubset != self.canarySubset", "message": "stableSubset and canarySubset must differ"}]))]
pub struct DestinationRuleRef {
    #[schemars(length(min = 1, max = 253), pattern(NAME_PATTERN))]
    pub name: String,
    #[schemars(length(min = 1, max = 63))]
    pub stable_subset: String,
    #[schemars(length(min = 1, max = 63))]
    pub canary_subset: String,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "self.stableService != self.canaryService", "message": "stableService and canaryService must differ"}]))]
pub struct HostServices {
    #[schemars(length(min = 1, max = 63), pattern(LABEL_PATTERN))]
    pub stable_service: String,
    #[schemars(length(min = 1, max = 63), pattern(LABEL_PATTERN))]
    pub canary_service: String,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Percent of the managed traffic sent to the canary during this step.
    #[schemars(range(min = 1, max = 100))]
    pub weight: u32,
    /// How long the step runs before it is judged; default `analysis.interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": DURATION_RULE, "message": DURATION_MESSAGE}]))]
    pub duration: Option<String>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub enum JudgeKind {
    /// Anytime-valid sequential test of the canary against the concurrent stable
    /// baseline, looked at every tick (the default).
    #[default]
    Sequential,
    /// Flagger-style: absolute bounds over one window per interval.
    Threshold,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// Default duration of a step, and the query window of the threshold judge. Default 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": DURATION_RULE, "message": DURATION_MESSAGE}]))]
    pub interval: Option<String>,
    /// How often the sequential judge looks at the counters. Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": DURATION_RULE, "message": DURATION_MESSAGE}]))]
    pub tick: Option<String>,
    #[serde(default)]
    pub judge: JudgeKind,
    /// The metric provider to query, by name: one the cluster admin declared to weir
    /// (`weir controller --providers`). A Rollout cannot name an address or a Secret.
    /// Default: the admin's default provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(LABEL_PATTERN))]
    pub provider: Option<String>,
    #[schemars(length(min = 1, max = 16))]
    pub metrics: Vec<Metric>,
    /// Threshold judge: breaches tolerated per revision (cumulative over all steps);
    /// one more rolls back. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub failure_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<SequentialParams>,
}

/// Parameters of the sequential judge; see the README's "How weir judges a canary".
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SequentialParams {
    /// Probability of rolling back a canary that is no worse than `theta0` × baseline,
    /// however often weir looks. Default 0.005.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self > 0.0 && self < 0.5", "message": "alpha must be in (0, 0.5)"}]))]
    pub alpha: Option<f64>,
    /// Tolerated ratio of canary to baseline error rate. Default 1.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self >= 1.0", "message": "theta0 must be at least 1"}]))]
    pub theta0: Option<f64>,
    /// A step may end early once the canary is shown no worse than `delta` × baseline.
    /// Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self > 1.0", "message": "delta must be above 1"}]))]
    pub delta: Option<f64>,
    /// Shortest time a step runs before it may end early. Default 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": DURATION_RULE, "message": DURATION_MESSAGE}]))]
    pub min_dwell: Option<String>,
    /// Fewest canary requests in a step before it may pass. Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
}

/// One metric the canary is judged by. Built-in names: `request-success-rate` (percent,
/// bound with `min`) and `request-duration` (milliseconds at `quantile`, bound with
/// `max`). Any other name needs a `query`.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
// No CEL rule on the bounds: the API server cannot type `max` for CEL (see `Bound`), so
// "min or max" and "min <= max" are checked by weir (InvalidSpec, `weir validate`).
pub struct Metric {
    /// Names the metric in status, Events and notifications: a DNS label (lowercase
    /// letters, digits, `-`), so it cannot carry markup into a chat message.
    #[schemars(length(min = 1, max = 63), pattern(LABEL_PATTERN))]
    pub name: String,
    /// A metric template the cluster admin declared (`weir controller --providers`), for
    /// PromQL beyond the built-in metrics: the admin owns the query, the Rollout passes
    /// `templateVariables`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<TemplateRef>,
    /// Values of the template's parameters, checked and escaped by the type the admin
    /// gave each.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub template_variables: BTreeMap<String, String>,
    /// PromQL of the Rollout's own, only in namespaces where the cluster admin allows it
    /// (and confined as the admin says: length, metric names, a selector pinned to the
    /// Rollout's namespace). Variables: `{{namespace}}`, `{{target}}`, `{{canary}}`,
    /// `{{stable}}`, `{{interval}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4000))]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// A number; for `request-duration` milliseconds (`500`) or a duration (`500ms`, `1.5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Bound>,
    /// `request-duration` only: the quantile in (0, 1). Default 0.99.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self > 0.0 && self < 1.0", "message": "quantile must be in (0, 1)"}]))]
    pub quantile: Option<f64>,
}

/// A metric template of the cluster admin's, by name.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateRef {
    #[schemars(length(min = 1, max = 63), pattern(LABEL_PATTERN))]
    pub name: String,
}

/// An upper bound: a number, or (for latency) a duration string such as `500ms` or `1.5s`.
///
/// A structural schema cannot say "number or string" (int-or-string refuses `0.1`), and
/// the API server gives CEL no type for an untyped node, so the field is untyped and
/// reading it never fails: whatever else a user writes there becomes `Unreadable`, which
/// the plan refuses naming the field. A value that failed to deserialize would instead
/// fail the whole list of Rollouts weir watches, stalling every other Rollout.
#[derive(Clone, Debug, PartialEq)]
pub enum Bound {
    Number(f64),
    Duration(String),
    /// Neither: what was found (`a map`, `a list`, `a boolean`).
    Unreadable(&'static str),
}

impl Bound {
    /// The bound as a plain number, when it is one.
    pub fn number(&self) -> Option<f64> {
        match self {
            Bound::Number(n) => Some(*n),
            _ => None,
        }
    }
}

impl From<f64> for Bound {
    fn from(n: f64) -> Self {
        Bound::Number(n)
    }
}

impl Serialize for Bound {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Bound::Number(n) => s.serialize_f64(*n),
            Bound::Duration(d) => s.serialize_str(d),
            // weir never writes a Rollout's spec; nothing unreadable is echoed back.
            Bound::Unreadable(_) => s.serialize_unit(),
        }
    }
}

impl<'de> Deserialize<'de> for Bound {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BoundVisitor)
    }
}

struct BoundVisitor;

impl<'de> serde::de::Visitor<'de> for BoundVisitor {
    type Value = Bound;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a number, or a duration such as 500ms or 1.5s")
    }
    fn visit_f64<E>(self, n: f64) -> Result<Bound, E> {
        Ok(Bound::Number(n))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Bound, E> {
        Ok(Bound::Number(n as f64))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Bound, E> {
        Ok(Bound::Number(n as f64))
    }
    fn visit_str<E>(self, text: &str) -> Result<Bound, E> {
        Ok(Bound::Duration(text.to_owned()))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Bound, E> {
        Ok(Bound::Unreadable("a boolean"))
    }
    // Skipped without recursion (IgnoredAny), however deep the value is nested.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Bound, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Bound::Unreadable("a list"))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Bound, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(Bound::Unreadable("a map"))
    }
}

impl schemars::JsonSchema for Bound {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Bound".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A number; for request-duration milliseconds (500) or a duration (500ms, 1.5s).",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

impl RolloutSpec {
    pub fn track_label(&self) -> &str {
        self.track_label.as_deref().unwrap_or(DEFAULT_TRACK_LABEL)
    }
}

/// Labels as weir reads them off objects: a sorted map so outputs are deterministic.
pub type Labels = BTreeMap<String, String>;

/// Parses a duration in Go's syntax, the one the API server's CEL `duration()` reads, so
/// a value the API server accepts is never refused here: decimal numbers with an
/// optional fraction, each followed by a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), such
/// as `500ms`, `1.5h` or `1h30m`. weir's durations are positive: a sign or zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration such as 30s, 1m30s, 1.5h or 500ms");
    let mut rest = text;
    let mut nanos = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if !number.bytes().any(|b| b.is_ascii_digit()) || number.matches('.').count() > 1 {
            return Err(bad());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        nanos += number.parse::<f64>().map_err(|_| bad())? * scale;
        rest = next;
    }
    if nanos < 1.0 {
        return Err(format!("{text:?} must be positive"));
    }
    if nanos > u64::MAX as f64 {
        return Err(format!("{text:?} is too long"));
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

/// One thing wrong with a spec: the path of its field under `spec` and what was expected
/// there. Printed as `spec.<field>: <problem>`, the form `kubectl` users know from the
/// API server's own refusals.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("spec.{field}: {problem}")]
pub struct SpecError {
    pub field: String,
    pub problem: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> SpecError {
        SpecError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// The problems a check found so far, in the order it found them.
#[derive(Debug, Default)]
pub struct Problems(Vec<SpecError>);

impl Problems {
    /// Records that `field` (its path under `spec`) has `problem`.
    pub fn at(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.0.push(SpecError::new(field, problem));
    }

    pub fn push(&mut self, error: SpecError) {
        self.0.push(error);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &SpecError> {
        self.0.iter()
    }

    pub fn into_vec(self) -> Vec<SpecError> {
        self.0
    }
}

/// Is this a Kubernetes object name (RFC 1123 subdomain)? Names are substituted into
/// PromQL, so this is also what keeps a Rollout from injecting PromQL.
pub fn is_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}
