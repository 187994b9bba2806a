//! The words weir speaks in: Event reasons, condition types and condition reasons. One
//! typed vocabulary shared by the engine (which emits them), notifications (which pick
//! the reasons worth a message), telemetry (which counts them) and the Kubernetes
//! Events (which print them): a new reason is a new variant, and every `match` on
//! reasons that must know it fails to compile until it does.

use serde::{Deserialize, Serialize};
use strum::{Display, EnumIter, IntoStaticStr};

/// Why something happened: the `reason` of an Event or of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Display, IntoStaticStr, EnumIter, Serialize, Deserialize)]
pub enum Reason {
    // --- a release's course
    /// weir took over the Deployment.
    Initialized,
    /// The template changed: a canary starts.
    CanaryStarted,
    /// A step's weight is written; the judge looks.
    StepStarted,
    /// A step passed, told when the next step cannot start at once.
    StepPassed,
    /// The last step passed: the Deployment rolls out the canary's template.
    Promoting,
    /// Promotion: one hop of traffic back to stable (also on deletion).
    TrafficToStable,
    /// Promotion finished: stable runs the canary's revision.
    Promoted,
    /// The canary was judged bad (or aborted, or ran out of time): traffic on stable.
    RolledBack,
    /// The template went back to stable (or the Rollout could not go on): canary withdrawn.
    CanaryCancelled,
    /// A newer template replaced the canary mid-release.
    NewerRevision,
    /// `spec.steps` changed mid-release.
    StepsChanged,
    // --- waiting and trouble
    /// A release window is closed.
    WaitingForWindow,
    /// A confirmation webhook is asked.
    WaitingForConfirmation,
    /// A step is half way to its deadline without the canary's pods ready.
    WaitingForPods,
    /// A step is half way to its deadline without a verdict (or a webhook's yes).
    DeadlineNear,
    /// The canary lost its ready pods: its traffic is withdrawn.
    CanaryNotReady,
    /// A look breached a bound, within the failure limit.
    AnalysisBreach,
    /// Prometheus could not be read.
    AnalysisError,
    /// The Deployment did not roll out the promoted template within the deadline.
    PromotionStalled,
    /// A newer template appeared during promotion and was paused.
    PromotionInterrupted,
    /// Canary weight found while no canary runs: back on stable.
    TrafficReverted,
    /// A webhook said no and its policy holds the canary.
    WebhookHolds,
    /// A post-rollout webhook said no (told, nothing else happens).
    WebhookFailed,
    // --- what people asked (`weir.dev/request`, `weir.dev/paused`)
    PromoteRequested,
    RetryRequested,
    Resumed,
    /// `weir abort` during promotion: refused, revert the template instead.
    AbortRefused,
    /// A `weir.dev/request` weir does not know.
    UnknownRequest,
    // --- the Rollout cannot be acted on
    InvalidSpec,
    TargetNotFound,
    TrafficRoutingInvalid,
    // --- deletion
    Releasing,
    ReleaseWaiting,
    Released,
    // --- the controller (not the engine)
    /// A write of a decision failed; it is retried.
    ApplyFailed,
    /// A reconcile panicked; the Rollout is retried with backoff, the others go on.
    ReconcilePanicked,
    // --- condition reasons only
    /// No release in progress; the stable version serves everything.
    Stable,
    /// A release (or the takeover, or the deletion) is in progress.
    InProgress,
    /// A person holds the canary at its step.
    PausedByUser,
    /// `SpecValid=True`.
    Valid,
    /// `WithinReleaseWindow=True`.
    Open,
    /// `WithinReleaseWindow=False`.
    Closed,
    /// `Stuck=False`: the step moved on.
    MovedOn,
    /// `Progressing=False` etc.: the release was cancelled.
    Cancelled,
    /// `Applied=True`.
    Applied,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The condition types weir sets in `status.conditions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Display, IntoStaticStr, EnumIter)]
pub enum ConditionType {
    /// The Rollout and the objects it names fit.
    SpecValid,
    /// A release is in progress.
    Progressing,
    /// The last release was promoted.
    Promoted,
    /// The last release was rolled back.
    RolledBack,
    /// A release window lets the rollout go on.
    WithinReleaseWindow,
    /// A step waited past half its progress deadline.
    Stuck,
    /// `False` while a write of the last decision fails.
    Applied,
    // --- the conventions kstatus, Flux and `kubectl wait` read (see `status::readiness`)
    /// The desired revision serves all traffic and nothing is in progress.
    Ready,
    /// weir is moving the Rollout towards its desired state (a release, a takeover, a
    /// deletion).
    Reconciling,
    /// The desired state cannot be reached without a change of the Rollout or the
    /// cluster (rolled back, invalid).
    Stalled,
}

impl ConditionType {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    #[test]
    fn names_are_the_variants_and_round_trip() {
        for r in Reason::iter() {
            assert_eq!(r.to_string(), format!("{r:?}"));
            let back: Reason = serde_json::from_value(serde_json::json!(r.as_str())).unwrap();
            assert_eq!(back, r);
        }
        for c in ConditionType::iter() {
            assert_eq!(c.as_str(), format!("{c:?}"));
        }
    }
}
