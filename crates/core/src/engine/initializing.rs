//! Initializing: waiting to take over the Deployment.

use super::Why;
use super::decider::{Cx, Decider, Next, go};
use crate::state::{PRE_WEIR_REVISION, State};
use crate::vocabulary::Reason;

impl Decider {
    /// Takes the Deployment over once its own rollout is done. A Deployment the user
    /// paused with a template change not rolled out is taken over with that change
    /// pending: what its pods run is not the template, so the template is judged as a
    /// canary instead of being recorded as stable (and never shipping).
    pub(super) fn on_initializing(&mut self, cx: &Cx) -> Next {
        let (plan, target) = (cx.plan, cx.target);
        let pending = target.paused && !target.rolled_out();
        if !target.paused && !target.rolled_out() {
            self.status.message = format!(
                "waiting for Deployment {} to finish its own rollout ({}/{} updated, {} available) before taking it over",
                plan.target, target.pods.updated, target.pods.desired, target.pods.available
            );
            return Next::Stay;
        }
        let stable = if pending { PRE_WEIR_REVISION } else { &target.revision };
        let note = match pending {
            true => format!(
                "took over paused Deployment {} with a template change not rolled out: revision {} is judged as a canary",
                plan.target, target.revision
            ),
            false => format!("took over Deployment {} at revision {}", plan.target, target.revision),
        };
        self.event(false, Reason::Initialized, note);
        let stable = State::Stable {
            stable: stable.to_string(),
            last: None,
        };
        go(stable, Why::TookOver)
    }
}
