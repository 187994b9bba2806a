//! The Rollout is deleted (the finalizer's cleanup): traffic back on stable, the canary
//! drains, then weir lets go of the Deployment, removes the canary, and the finalizer
//! goes — only once the routes, freshly read, show no traffic left on the canary.

use std::time::Duration;

use super::decider::{Decider, Next, after};
use super::promoting::ramp_down;
use super::{Action, Why, World};
use crate::plan::Plan;
use crate::state::{CanaryAt, Kind, Outcome, State};
use crate::vocabulary::Reason;

/// How soon a deletion that has not yet seen the canary's traffic gone looks again.
const RELEASE_RETRY: Duration = Duration::from_secs(5);
/// How soon a deletion stepping traffic back to stable looks again (a change of
/// stable's replicas wakes it sooner).
const RELEASE_STEP_POLL: Duration = Duration::from_secs(5);

impl Decider {
    pub(super) fn release(&mut self, plan: Option<&Plan>, world: &World, delay: Duration) -> Next {
        let canary = self.at().map(|at| at.canary).unwrap_or_default();
        let stable = self.state.stable().unwrap_or_default().to_string();
        let draining = self.state.kind() == Kind::Draining;
        if !draining && self.seen.world_weight.is_some_and(|w| w > 0) {
            if self.step_back_on_release(plan, world) {
                return Next::Stay;
            }
            self.status.message = "Rollout deleted: all traffic goes back to stable; the canary drains".into();
            self.event(false, Reason::Releasing, self.status.message.clone());
            return self.drain(Why::Deleted, &stable, &canary, Outcome::Cancelled, delay);
        }
        if let State::Draining { until, .. } = self.state {
            self.set_weight(0);
            let until = self.drain_counted_from_the_mesh(until);
            if self.now < until {
                self.wake_at(until);
                return Next::Stay;
            }
        }
        if let Err(why) = self.no_canary_traffic_shown(world) {
            // The finalizer stays: letting go now would garbage-collect the canary's
            // pods under whatever share the routes still send them.
            let message = format!("Rollout deleted: weir lets go once it sees no traffic on the canary: {why}");
            if self.status.message != message {
                self.event(true, Reason::ReleaseWaiting, message.clone());
            }
            self.status.message = message;
            self.wake_at(after(self.now, RELEASE_RETRY));
            return Next::Stay;
        }
        if world.target.is_some() {
            self.actions.push(Action::ReleaseTarget);
        }
        if world.canary.is_some() {
            self.actions.push(Action::RemoveCanary);
        }
        self.status.message = "Rollout deleted: traffic on stable, Deployment released".into();
        let note = "all traffic on stable; weir let go of the Deployment".into();
        self.event(false, Reason::Released, note);
        self.released = true;
        Next::Stay
    }

    /// A deleted Rollout whose canary was not judged bad (it is still a canary: scaling,
    /// analysing, paused or promoting) hands its traffic back one hop at a time while
    /// stable lacks the replicas for all of it. `false`: stable carries everything, or
    /// there is nothing to step (no plan, no Deployment, no canary pod that serves — a
    /// share sent to no pod fails anyway): drain at once.
    fn step_back_on_release(&mut self, plan: Option<&Plan>, world: &World) -> bool {
        let serving = world.canary.as_ref().is_some_and(|c| c.pods.available > 0);
        let kind = self.state.kind();
        let canary_state = serving && (kind.is_canary() || kind == Kind::Promoting);
        let (Some(plan), Some(target), Some(at), Some(weight)) =
            (plan, &world.target, self.at(), self.seen.world_weight)
        else {
            return false;
        };
        if !canary_state {
            return false;
        }
        let at = CanaryAt { weight, ..at };
        let next = ramp_down(plan, &at, target.pods.available);
        if next == 0 {
            return false;
        }
        if next < weight {
            self.set_weight(next);
            let note = format!(
                "Rollout deleted: canary {weight}% -> {next}%: stable has {} of the {} replicas that carry all traffic",
                target.pods.available, at.reference_replicas
            );
            self.event(false, Reason::TrafficToStable, note);
        }
        self.status.message =
            format!("Rollout deleted: traffic returns to stable as fast as its replicas allow (canary {next}%)");
        self.set_at(CanaryAt { weight: next, ..at });
        self.wake_at(after(self.now, RELEASE_STEP_POLL));
        true
    }

    /// The deletion's proof: the routes, freshly read, send nothing to the canary on
    /// every managed route (routes that cannot be read or understood prove nothing).
    fn no_canary_traffic_shown(&self, world: &World) -> Result<(), String> {
        // At rest weir's record is the proof: its last drain ended on weight 0 seen.
        let at_rest = matches!(self.state.kind(), Kind::Initializing | Kind::Stable);
        match (&world.traffic, self.seen.routes_disagree) {
            (Err(_), _) if at_rest => Ok(()),
            (Err(problem), _) => Err(format!("the routing cannot be read: {problem}")),
            (Ok(_), true) => Err("the managed routes carry different canary weights".into()),
            (Ok(w), false) if *w > 0 => Err(format!("the routes still send {w}% to the canary")),
            (Ok(_), false) => match self.seen.mesh_pending() {
                Some(why) if !at_rest => Err(format!("the mesh has not confirmed weight 0: {why}")),
                _ => Ok(()),
            },
        }
    }
}
