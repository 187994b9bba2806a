//! Draining: traffic is off the canary; its pods keep running until in-flight requests
//! finish (`scaleDownDelay` after the weight write) and the routes show no canary
//! weight, then they go and the rollout is Stable.

use std::time::Duration;

use jiff::Timestamp;

use super::decider::{Decider, Next, after, go, ts};
use super::rollback::rollback_evidence;
use super::{Action, TargetState, Why, World};
use crate::plan::DEFAULT_SCALE_DOWN_DELAY;
use crate::state::{Outcome, State};
use crate::status::HISTORY_LIMIT;
use crate::vocabulary::{ConditionType, Reason};

impl Decider {
    /// The transition into Draining: traffic leaves the canary now (written as an intent
    /// with this state); its pods may go once the mesh has caught up, `delay` from now,
    /// whether or not the state says the canary had weight (the routes may have had some
    /// all the same).
    pub(super) fn drain(&mut self, why: Why, stable: &str, canary: &str, outcome: Outcome, delay: Duration) -> Next {
        self.unstuck();
        self.set_weight(0);
        let until = after(self.now, delay);
        self.wake_at(until);
        let draining = State::Draining {
            stable: stable.to_string(),
            canary: canary.to_string(),
            until,
            outcome,
        };
        go(draining, why)
    }

    /// A drain counts from the moment the mesh stops sending the canary requests, not
    /// from the decision that recorded it: while the routes still show canary weight (the
    /// write was lost to a crash, or a sync put weight back), or the mesh, which confirms
    /// what it applied, has not confirmed them at zero, the drain starts again from now.
    /// Where the mesh writes no status, the drain counts from the write.
    pub(super) fn drain_counted_from_the_mesh(&mut self, until: Timestamp) -> Timestamp {
        let delay = self.seen.drain_delay.unwrap_or(DEFAULT_SCALE_DOWN_DELAY);
        let at_zero = self.seen.world_weight == Some(0);
        let from = match (
            self.seen.world_weight,
            self.seen.mesh_pending(),
            self.seen.mesh_confirmed_since(),
        ) {
            (Some(w), ..) if w > 0 => self.now,
            (Some(0), Some(_), _) => self.now,
            (_, _, Some(since)) if at_zero => since,
            _ => return until,
        };
        let later = after(from, delay).max(until);
        if later == until {
            return until;
        }
        match &mut self.state {
            State::Draining { until, .. } => *until = later,
            State::Scaling { drain_until, .. } => *drain_until = Some(later),
            _ => {}
        }
        later
    }

    /// Weight 0 kept; after `until`, and only once the routes are seen with no canary
    /// weight, the canary is scaled to zero and the Rollout is Stable.
    pub(super) fn on_draining(&mut self, target: Option<&TargetState>, world: &World) -> Next {
        let State::Draining {
            stable,
            canary,
            until,
            outcome,
        } = self.state.clone()
        else {
            return Next::Stay;
        };
        self.set_weight(0);
        self.pause_target(target, true);
        let until = self.drain_counted_from_the_mesh(until);
        if let Some(why) = self.seen.mesh_pending() {
            // The route's status will wake the Rollout; `until` is the fallback.
            self.status.message = format!("the canary's pods go once the mesh confirms weight 0: {why}");
        }
        if self.now < until {
            self.wake_at(until);
            return Next::Stay;
        }
        if self.seen.world_weight != Some(0) {
            // Not seen at zero yet (just written, or the routing is unusable): the pods
            // stay until no route can reach them.
            self.wake_at(after(self.now, Duration::from_secs(1)));
            return Next::Stay;
        }
        if let Some(c) = &world.canary
            && c.pods.desired > 0
        {
            self.actions.push(Action::ApplyCanary {
                revision: c.revision.clone().unwrap_or(canary),
                replicas: 0,
            });
        }
        if outcome == Outcome::Promoted {
            self.status.message = format!("revision {stable} promoted: stable runs it");
            self.event(false, Reason::Promoted, self.status.message.clone());
        }
        self.end_release(outcome);
        // A template changed meanwhile is looked at in the next reconcile, at once.
        self.wake_at(self.now);
        let stable = State::Stable {
            stable,
            last: Some(outcome),
        };
        go(stable, Why::Drained)
    }

    /// The release in progress goes into the history, with how it ended and why, and the
    /// conditions `kubectl wait` and Argo CD read are set.
    fn end_release(&mut self, outcome: Outcome) {
        let Some(mut record) = self.status.release.take() else {
            return;
        };
        let (name, evidence) = match outcome {
            Outcome::Promoted => (Reason::Promoted, format!("promoted after {} steps", record.step)),
            Outcome::RolledBack => (
                Reason::RolledBack,
                self.status.rollback.as_ref().map(rollback_evidence).unwrap_or_default(),
            ),
            Outcome::Cancelled => (
                Reason::Cancelled,
                "cancelled: the template changed or the Rollout could not go on".into(),
            ),
        };
        record.ended = Some(ts(self.now));
        record.outcome = Some(name.to_string());
        if record.evidence.is_empty() {
            record.evidence = evidence;
        }
        let message = format!("revision {}: {}", record.revision, record.evidence);
        self.set_condition(ConditionType::Progressing, false, name, &message);
        let promoted = outcome == Outcome::Promoted;
        self.set_condition(ConditionType::Promoted, promoted, name, &message);
        let rolled_back = outcome == Outcome::RolledBack;
        self.set_condition(ConditionType::RolledBack, rolled_back, name, &message);
        self.status.history.insert(0, record);
        self.status.history.truncate(HISTORY_LIMIT);
    }
}
