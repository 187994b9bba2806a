//! The `.status` of a Rollout: everything weir needs to resume after a crash, and what a
//! person reads. Plain serde types; the product crate puts them on the custom resource.

use serde::{Deserialize, Serialize};

use crate::spec::WebhookKind;
pub use crate::state::Phase;
use crate::state::State;
use crate::vocabulary::{ConditionType, Reason};

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
    /// Canary weight of the state (percent of the managed stable+canary share).
    #[serde(default)]
    pub canary_weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStatus>,
    /// A revision rolled back and not to be tried again until the template changes or
    /// a person asks (`weir retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackRecord>,
    /// The release in progress: its revision, image and start (ends in `history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseRecord>,
    /// The last releases, newest first, at most `HISTORY_LIMIT`: what a person reads
    /// in the morning (`weir history`, `weir report`). Events expire; this does not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<ReleaseRecord>,
    /// The last `weir.dev/request` annotation acted on, so each request acts once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_request: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The last call of each webhook (`spec.webhooks`) and its answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookRecord>,
    /// Where the rollout is: the source of truth; the fields above project it.
    #[serde(default)]
    #[schemars(schema_with = "crate::state::schema")]
    pub state: State,
    /// `state`'s format (`crate::state::STATE_VERSION`); a status without it is older.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_version: Option<u32>,
    /// In memory only, never written: this controller process has itself seen a look of
    /// the judge that does not lean against the current canary (or started it). Until
    /// then it raises no weight, so a restart never raises one on old evidence.
    #[serde(skip)]
    #[schemars(skip)]
    pub judged_here: bool,
}

/// How a phase reads to the conventions of kstatus (`sigs.k8s.io/cli-utils`), Flux's
/// health checks and `kubectl wait --for=condition=Ready`: `Ready` True when the
/// desired revision serves and nothing is in progress, `Reconciling` True while weir
/// moves towards it, `Stalled` True when it cannot get there without a change (a
/// rollback, an invalid spec). kstatus reads Reconciling → InProgress, Stalled → Failed,
/// neither → Current. The README's phase table is this function.
pub fn readiness(phase: &Phase) -> (ConditionType, Reason, &'static str) {
    match phase {
        Phase::Healthy => (
            ConditionType::Ready,
            Reason::Stable,
            "no release in progress; stable serves",
        ),
        Phase::Succeeded => (ConditionType::Ready, Reason::Promoted, "the last release was promoted"),
        Phase::Initializing => (
            ConditionType::Reconciling,
            Reason::InProgress,
            "taking the Deployment over",
        ),
        Phase::Progressing | Phase::Promoting => (
            ConditionType::Reconciling,
            Reason::InProgress,
            "a release is in progress",
        ),
        Phase::Paused => (
            ConditionType::Reconciling,
            Reason::PausedByUser,
            "a person holds the canary at its step",
        ),
        Phase::Deleting => (ConditionType::Reconciling, Reason::Releasing, "handing everything back"),
        Phase::RolledBack => (
            ConditionType::Stalled,
            Reason::RolledBack,
            "the last release was rolled back; a new revision or weir retry moves on",
        ),
        Phase::InvalidSpec => (
            ConditionType::Stalled,
            Reason::InvalidSpec,
            "the Rollout cannot be acted on; see the message",
        ),
    }
}

impl RolloutStatus {
    /// Sets `Ready`, `Reconciling` and `Stalled` for the phase: exactly one is True
    /// (`readiness`). Their transition times move only when the phase class changes.
    pub fn set_readiness(&mut self, now: jiff::Timestamp) {
        let (which, reason, message) = readiness(&self.phase);
        // The two that are False carry the same reason: it says why they are not.
        for kind in [ConditionType::Ready, ConditionType::Reconciling, ConditionType::Stalled] {
            self.set_condition(kind, kind == which, reason, message, now);
        }
    }

    /// Sets a condition, moving its transition time only when its status changes.
    pub fn set_condition(
        &mut self,
        type_: ConditionType,
        ok: bool,
        reason: Reason,
        message: &str,
        now: jiff::Timestamp,
    ) {
        let (type_, reason) = (type_.as_str(), reason.as_str());
        let status = if ok { "True" } else { "False" };
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now.to_string();
                }
                c.status = status.into();
                c.reason = reason.into();
                c.message = message.into();
            }
            None => self.conditions.push(Condition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message: message.into(),
                last_transition_time: now.to_string(),
            }),
        }
    }

    /// The condition of a type, if set.
    pub fn condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_.as_str())
    }

    /// The status without what changes at every look of the judge: the last look's values
    /// and when to look next, and the message that quotes them. weir writes status when
    /// this part changes (a step, a verdict of another kind, a breach, a rollback); the
    /// looks in between stay in the controller's memory, so a step costs one status write,
    /// not one per tick. A restart forgets them and costs one early look, no more.
    pub fn decisive_part(&self) -> RolloutStatus {
        let mut s = self.clone();
        s.message.clear();
        s.judged_here = false;
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
    /// When the current step passed, if it waits for a release window to advance or
    /// promote (the deadline does not run meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed_at: Option<String>,
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
    /// Sequential judge: the canary's counts this step outside shared incidents (intervals
    /// between looks in which the baseline was over the bound), which the absolute test judges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_canary_counts: Option<Counts>,
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

/// Releases kept in `status.history`.
pub const HISTORY_LIMIT: usize = 20;

/// One release of a revision: when it started and ended, how, and the evidence that
/// decided it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseRecord {
    pub revision: String,
    /// The images of the Deployment's template, comma-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub started: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// Promoted, RolledBack or Cancelled, once ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// 1-based step the release reached.
    #[serde(default)]
    pub step: u32,
    /// The deciding evidence, in one line: the breach for a rollback, the last step's
    /// verdict for a promotion, why for a cancellation.
    #[serde(default)]
    pub evidence: String,
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

/// `WebhookRecord::answer` while the call is in flight.
pub const ASKED: &str = "Asked";

/// One webhook's last call: what it was asked and what it said.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: WebhookKind,
    pub revision: String,
    /// 1-based step the question was about.
    pub step: u32,
    /// How many times it was asked before about this step (a hold asks again).
    #[serde(default)]
    pub round: u32,
    /// Asked (no answer yet), Yes, No or NoAnswer.
    pub answer: String,
    /// The status code and the start of the body, or why there was no answer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(default)]
    pub attempts: u32,
    /// When it was asked, or when the answer came.
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

#[cfg(test)]
mod tests {
    use super::*;

    const PHASES: [Phase; 9] = [
        Phase::Initializing,
        Phase::Healthy,
        Phase::Progressing,
        Phase::Paused,
        Phase::Promoting,
        Phase::Succeeded,
        Phase::RolledBack,
        Phase::InvalidSpec,
        Phase::Deleting,
    ];

    #[test]
    fn every_phase_sets_exactly_one_of_ready_reconciling_stalled() {
        let t0: jiff::Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        for phase in PHASES {
            let mut s = RolloutStatus {
                phase: phase.clone(),
                ..Default::default()
            };
            s.set_readiness(t0);
            let on: Vec<_> = s.conditions.iter().filter(|c| c.status == "True").collect();
            assert_eq!(on.len(), 1, "{phase:?}: {:?}", s.conditions);
            assert_eq!(s.conditions.len(), 3, "{phase:?}");
        }
    }

    #[test]
    fn readiness_times_move_only_when_the_class_of_phase_changes() {
        let (t0, t1): (jiff::Timestamp, jiff::Timestamp) = (
            "2026-12-01T00:00:00Z".parse().unwrap(),
            "2026-12-01T01:00:00Z".parse().unwrap(),
        );
        let mut s = RolloutStatus {
            phase: Phase::Progressing,
            ..Default::default()
        };
        s.set_readiness(t0);
        s.phase = Phase::Promoting;
        s.set_readiness(t1);
        assert!(s.conditions.iter().all(|c| c.last_transition_time == t0.to_string()));
        s.phase = Phase::Succeeded;
        s.set_readiness(t1);
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.last_transition_time.clone()),
            ("True", t1.to_string())
        );
    }
}
