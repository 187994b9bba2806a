//! Promoting: the last step passed. The user's Deployment rolls out the canary's
//! template while the canary keeps its traffic; traffic returns to stable as fast as
//! stable has replicas for, then the canary drains.

use std::time::Duration;

use jiff::Timestamp;

use super::Why;
use super::decider::{Cx, Decider, Next, Verb, after};
use crate::plan::Plan;
use crate::state::{CanaryAt, Outcome, State};
use crate::vocabulary::Reason;

/// While the Deployment rolls out (promotion), look again this often besides its watch events.
pub(super) const ROLLOUT_POLL: Duration = Duration::from_secs(30);

/// The canary weight to move to while traffic returns to a ready stable at the end of a
/// promotion: the lowest (0, or a step's weight) for which stable has replicas enough —
/// at once without an HPA. With one, stable was shrunk while the canary carried its load
/// and only grows back with load: then one step down at a time, each once stable has
/// caught up with the share it has, so it is never short by more than one step's share.
pub fn ramp_down(plan: &Plan, at: &CanaryAt, stable_available: i32) -> u32 {
    let carries = |canary_weight: u32| {
        i64::from(stable_available) * 100 >= i64::from(at.reference_replicas) * i64::from(100 - canary_weight.min(100))
    };
    let lower: Vec<u32> = std::iter::once(0)
        .chain(plan.steps.iter().map(|s| s.weight))
        .filter(|w| *w < at.weight)
        .collect();
    if let Some(w) = lower.iter().copied().find(|w| carries(*w)) {
        return w;
    }
    match (carries(at.weight), lower.last()) {
        (true, Some(next)) => *next,
        _ => at.weight,
    }
}

/// The promotion's clock: since when, and whether its deadline was told.
#[derive(Clone, Copy)]
struct Clock {
    since: Timestamp,
    stalled: bool,
}

impl Decider {
    /// The Deployment rolls out the canary's template; the canary keeps its traffic until
    /// every stable replica is updated and available. A revert rolls the Deployment back
    /// the same way and cancels; a newer template is stopped (paused) and reported.
    pub(super) fn on_promoting(&mut self, cx: &Cx) -> Next {
        let (plan, target) = (cx.plan, cx.target);
        let State::Promoting {
            at,
            since,
            stalled,
            interrupted_by,
        } = self.state.clone()
        else {
            return Next::Stay;
        };
        let clock = Clock { since, stalled };
        if self.take_verb(Verb::Abort) {
            let note = format!(
                "revision {} passed every step and Deployment {} is rolling it out; revert its template to roll back",
                at.canary, plan.target
            );
            self.event(true, Reason::AbortRefused, note);
        }
        self.keep_weight(at.weight);
        if target.revision != at.canary && target.revision != at.stable {
            self.interrupt_promotion(cx, &at, interrupted_by);
            return Next::Stay;
        }
        let toward = target.revision.clone();
        self.pause_target(Some(target), false);
        if !target.rolled_out() || target.paused {
            self.wait_for_stable(cx, &at, clock);
            return Next::Stay;
        }
        // Stable is ready on its template. Traffic goes back to it as fast as it has
        // replicas for: at once without an HPA, step by step with one.
        let next = ramp_down(plan, &at, target.pods.available);
        if next > 0 {
            self.step_back(cx, at, next, clock);
            return Next::Stay;
        }
        // All traffic back on stable, then re-pause so the next bump waits.
        self.pause_target(Some(target), true);
        let outcome = match toward == at.canary {
            true => Outcome::Promoted,
            false => {
                let note = format!(
                    "template reverted to {toward} during promotion; canary {} cancelled",
                    at.canary
                );
                self.event(false, Reason::CanaryCancelled, note);
                Outcome::Cancelled
            }
        };
        self.status.message = "promoting: traffic is back on stable; canary pods drain".into();
        self.drain(Why::StableReady, &toward, &at.canary, outcome, plan.scale_down_delay)
    }

    /// Moves traffic one hop back to stable (or holds it, when stable's HPA has not
    /// caught up with the share stable has now).
    fn step_back(&mut self, cx: &Cx, at: CanaryAt, next: u32, clock: Clock) {
        let target = cx.target;
        if next < at.weight {
            self.set_weight(next);
            let note = format!(
                "promoting: canary {}% -> {next}%: stable has {} of the {} replicas that carry all traffic",
                at.weight, target.pods.available, at.reference_replicas
            );
            self.event(false, Reason::TrafficToStable, note);
        }
        let at = CanaryAt { weight: next, ..at };
        self.wait_for_stable(cx, &at, clock);
        self.set_at(at);
    }

    fn wait_for_stable(&mut self, cx: &Cx, at: &CanaryAt, clock: Clock) {
        let (plan, target) = (cx.plan, cx.target);
        let deadline = after(clock.since, plan.progress_deadline);
        let stalled_now = !clock.stalled && self.now >= deadline;
        if stalled_now {
            let note = format!(
                "Deployment {} has not rolled out revision {} within progressDeadline {}; the canary keeps {}% until it does",
                plan.target,
                target.revision,
                humantime::format_duration(plan.progress_deadline),
                at.weight
            );
            self.event(true, Reason::PromotionStalled, note);
        }
        if let State::Promoting { stalled, .. } = &mut self.state {
            *stalled |= stalled_now;
        }
        self.status.message = format!(
            "promoting: Deployment {} has {}/{} replicas updated, {} available; canary keeps {}% until it is ready",
            plan.target, target.pods.updated, target.pods.desired, target.pods.available, at.weight
        );
        if !clock.stalled && !stalled_now {
            self.wake_at(deadline);
        }
        self.wake_at(after(self.now, ROLLOUT_POLL));
    }

    /// A template that is neither the canary's nor stable's appeared during promotion: it
    /// must not roll out unjudged, so the Deployment is paused again where it is.
    fn interrupt_promotion(&mut self, cx: &Cx, at: &CanaryAt, seen: Option<String>) {
        let (plan, target) = (cx.plan, cx.target);
        self.pause_target(Some(target), true);
        if seen.as_deref() != Some(target.revision.as_str()) {
            let note = format!(
                "template changed to {} while {} was being promoted: Deployment {} is paused so it does not roll out unjudged; canary {} keeps {}%. Set the template back to {} to finish the promotion, or to the stable one to cancel it",
                target.revision, at.canary, plan.target, at.canary, at.weight, at.canary
            );
            self.event(true, Reason::PromotionInterrupted, note);
        }
        if let State::Promoting { interrupted_by, .. } = &mut self.state {
            *interrupted_by = Some(target.revision.clone());
        }
        self.status.message = format!(
            "promotion of {} interrupted by template {}: set the template back to {} or to stable",
            at.canary, target.revision, at.canary
        );
    }
}
