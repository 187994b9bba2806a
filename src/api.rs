//! The `Rollout` custom resource (`weir.dev/v1alpha1`): what a user declares, and the
//! status through which weir remembers everything it needs to resume after a crash.
//!
//! The schema carries the checks the API server can do (types, ranges, CEL rules that
//! span fields); `crate::validation` does the rest and reports it as `InvalidSpec`.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
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
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Rollout",
    namespaced,
    status = "RolloutStatus",
    shortname = "wro",
    cel,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".status.canaryWeight"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.stepDisplay"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.canaryRevision"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// The Deployment whose image bumps start a canary. weir never renames it.
    pub target_ref: TargetRef,
    pub traffic_routing: TrafficRouting,
    /// Canary weights, strictly increasing, each 1..=100. The canary is promoted after
    /// the last step passes its analysis.
    #[schemars(length(min = 1, max = 20))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.map(s, s.weight).isSorted() && self.all(s, self.exists_one(t, t.weight == s.weight))"
    ).message("step weights must be strictly increasing"))]
    pub steps: Vec<Step>,
    pub analysis: Analysis,
    /// How long a step may wait past its due time (for ready canary pods, for evidence
    /// from Prometheus) before the canary is rolled back. Default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub progress_deadline: Option<String>,
    /// After promotion, how long the old canary pods keep running once traffic has
    /// moved back to stable, so in-flight requests finish. Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub scale_down_delay: Option<String>,
    /// Pod label whose value (`stable` / `canary`) tells the two tracks apart.
    /// Default `weir.dev/track`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_label: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// Only `Deployment` is supported.
    #[x_kube(validation = kube::core::Rule::new("self == 'Deployment'").message("only kind Deployment is supported"))]
    pub kind: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficRouting {
    pub istio: IstioRouting,
}

/// The user's own VirtualService, and either DestinationRule subsets (subset mode) or two
/// Services (host mode) that tell the stable pods from the canary pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.destinationRule) != has(self.hosts)")
    .message("set exactly one of destinationRule (subset mode) or hosts (host mode)"))]
pub struct IstioRouting {
    pub virtual_service: VirtualServiceRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_rule: Option<DestinationRuleRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<HostServices>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Names of the HTTP routes weir manages. Empty: every HTTP route that has both
    /// the stable and the canary destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.stableSubset != self.canarySubset")
    .message("stableSubset and canarySubset must differ"))]
pub struct DestinationRuleRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 63))]
    pub stable_subset: String,
    #[schemars(length(min = 1, max = 63))]
    pub canary_subset: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.stableService != self.canaryService")
    .message("stableService and canaryService must differ"))]
pub struct HostServices {
    #[schemars(length(min = 1, max = 63))]
    pub stable_service: String,
    #[schemars(length(min = 1, max = 63))]
    pub canary_service: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Percent of the managed traffic sent to the canary during this step.
    #[schemars(range(min = 1, max = 100))]
    pub weight: u32,
    /// How long the step runs before it is judged; default `analysis.interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
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

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Analysis {
    /// Default duration of a step, and the query window of the threshold judge. Default 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub interval: Option<String>,
    /// How often the sequential judge looks at the counters. Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub tick: Option<String>,
    #[serde(default)]
    pub judge: JudgeKind,
    pub prometheus: PrometheusRef,
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
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SequentialParams {
    /// Probability of rolling back a canary that is no worse than `theta0` × baseline,
    /// however often weir looks. Default 0.005.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self > 0.0 && self < 0.5").message("alpha must be in (0, 0.5)"))]
    pub alpha: Option<f64>,
    /// Tolerated ratio of canary to baseline error rate. Default 1.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1.0").message("theta0 must be at least 1"))]
    pub theta0: Option<f64>,
    /// A step may end early once the canary is shown no worse than `delta` × baseline.
    /// Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self > 1.0").message("delta must be above 1"))]
    pub delta: Option<f64>,
    /// Shortest time a step runs before it may end early. Default 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub min_dwell: Option<String>,
    /// Fewest canary requests in a step before it may pass. Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusRef {
    /// Base URL of the Prometheus HTTP API, e.g. `http://prometheus.istio-system:9090`.
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('http://') || self.startsWith('https://')")
        .message("address must be an http:// or https:// URL"))]
    pub address: String,
    /// Secret in the Rollout's namespace with `token` (bearer) or `username` and
    /// `password` (basic auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Timeout of one query. Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub timeout: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    pub name: String,
}

/// One metric the canary is judged by. Built-in names: `request-success-rate` (percent,
/// bound with `min`) and `request-duration` (milliseconds at `quantile`, bound with
/// `max`). Any other name needs a `query`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max")
    .message("min must not exceed max"))]
#[x_kube(validation = kube::core::Rule::new("has(self.min) || has(self.max)")
    .message("a metric needs a min or a max bound"))]
pub struct Metric {
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// PromQL template for a custom metric. Variables: `{{namespace}}`, `{{target}}`,
    /// `{{canary}}`, `{{stable}}`, `{{interval}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// `request-duration` only: the quantile in (0, 1). Default 0.99.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self > 0.0 && self < 1.0").message("quantile must be in (0, 1)"))]
    pub quantile: Option<f64>,
}

// ----------------------------------------------------------------------------- status

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum Phase {
    /// Waiting to take over the Deployment (its own rollout is still in progress).
    #[default]
    Initializing,
    /// Stable runs the Deployment's template; nothing to do.
    Healthy,
    /// A canary is going through its steps.
    Progressing,
    /// A canary holds its step because a person asked (`weir pause`).
    Paused,
    /// The last step passed: the stable track is rolling out the new template.
    Promoting,
    /// The last canary was promoted; stable runs it.
    Succeeded,
    /// The last canary was rolled back; stable keeps serving the old template.
    RolledBack,
    /// The Rollout or the objects it names are unusable; see `message`.
    InvalidSpec,
}

/// Where the current step is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum StepState {
    /// Canary pods for this step's weight are being started.
    #[default]
    ScalingCanary,
    /// The weight is written; the judge is watching.
    Analysing,
}

/// Where the promotion is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum PromotionState {
    /// The Deployment was unpaused and rolls out the new template; canary keeps 100 %.
    #[default]
    RollingStable,
    /// Traffic is back on stable; the canary pods drain until `scaleDownDelay` ends.
    Draining,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: Phase,
    /// One line a person can act on: what weir does now and why.
    #[serde(default)]
    pub message: String,
    /// Hash of the pod template the stable track runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    /// Hash of the pod template under test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_revision: Option<String>,
    /// Index into `spec.steps` of the current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<u32>,
    /// `2/4` for kubectl's printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_display: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_state: Option<StepState>,
    /// When the current step's weight was written (analysis counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<String>,
    /// When the current step (or promotion phase) began waiting for something; the
    /// progress deadline counts from `max(due, this)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<String>,
    /// Canary weight weir last wrote (percent of the managed stable+canary share).
    #[serde(default)]
    pub canary_weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStatus>,
    /// A revision rolled back and not to be tried again until the template changes or
    /// a person asks (`weir retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackRecord>,
    /// The last `weir.dev/request` annotation acted on, so each request acts once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_request: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl RolloutStatus {
    /// The status without what changes at every look of the judge: the last look's values
    /// and when to look next, and the message that quotes them. weir writes status when
    /// this part changes (a step, a verdict of another kind, a breach, a rollback); the
    /// looks in between stay in the controller's memory, so a step costs one status write,
    /// not one per tick. A restart forgets them and costs one early look, no more.
    pub fn decisive_part(&self) -> RolloutStatus {
        let mut s = self.clone();
        s.message.clear();
        if let Some(a) = s.analysis.as_mut() {
            // Errors and breaches are news; a pass or "not yet" is what a step says anyway.
            if matches!(a.last_verdict.as_deref(), Some("Pass" | "Inconclusive")) {
                a.last_verdict = None;
            }
            a.last_checked_at = None;
            a.next_check_at = None;
            a.consecutive_errors = 0;
            a.last_error = None;
            a.metrics.clear();
        }
        s
    }
}

/// What the analysis of the current revision has seen so far.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    /// Breaches so far for this revision (threshold judge; counts against failureLimit).
    #[serde(default)]
    pub failures: u32,
    /// Prometheus errors in a row (down, timeout, bad query); they never count as breaches.
    #[serde(default)]
    pub consecutive_errors: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_check_at: Option<String>,
    /// Verdict of the last look: Pass, Breach, Inconclusive, Error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verdict: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricStatus>,
    /// Counts of each passed step, per metric: the sequential tests keep their evidence
    /// across steps (and across controller restarts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<StepEvidence>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepEvidence {
    /// 0-based step index.
    pub step: u32,
    pub metric: String,
    pub canary: Counts,
    pub baseline: Counts,
}

/// The evidence of one metric at the last look.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricStatus {
    pub name: String,
    /// Pass, Breach, Inconclusive or Error.
    pub verdict: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_counts: Option<Counts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_counts: Option<Counts>,
    /// Sequential judge: likelihood ratio against "canary no worse than theta0 × baseline".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
    pub reason: String,
}

/// Requests and bad requests (5xx, or slower than the latency bound) since the step began.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Default, schemars::JsonSchema)]
pub struct Counts {
    pub requests: u64,
    pub bad: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRecord {
    pub revision: String,
    /// 1-based step at which it happened, with its weight.
    pub step: u32,
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<String>,
    pub reason: String,
    pub at: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
}

impl RolloutSpec {
    pub fn track_label(&self) -> &str {
        self.track_label.as_deref().unwrap_or(DEFAULT_TRACK_LABEL)
    }
}

/// Labels as weir reads them off objects: a sorted map so outputs are deterministic.
pub type Labels = BTreeMap<String, String>;
