//! Paused: a person holds the canary at its step (`weir pause`); the weight stays, the
//! deadline does not run.

use super::Why;
use super::decider::{Cx, Decider, Next, go};
use crate::state::State;
use crate::vocabulary::Reason;

impl Decider {
    /// Held while the pause is asked for; resumed (its step's clock restarted) when not.
    pub(super) fn on_paused(&mut self, cx: &Cx) -> Next {
        if cx.world.pause_requested {
            return self.hold_paused(cx);
        }
        let State::Paused { at, analysing } = self.state.clone() else {
            return Next::Stay;
        };
        self.event(false, Reason::Resumed, format!("resumed at step {}", at.step + 1));
        // Evidence gathered before the pause still counts; the step restarts its clock.
        let resumed = match analysing {
            true => State::Analysing {
                at,
                started: self.now,
                awaiting_mesh: false,
            },
            false => State::Scaling {
                at,
                since: self.now,
                drain_until: None,
            },
        };
        go(resumed, Why::Resumed)
    }

    /// Holds the canary where it is: the weight stays, the message says so.
    pub(super) fn hold_paused(&mut self, cx: &Cx) -> Next {
        let Some(at) = self.at() else { return Next::Stay };
        let analysing = match &self.state {
            State::Paused { analysing, .. } => *analysing,
            State::Analysing { .. } => true,
            _ => false,
        };
        self.keep_weight(at.weight);
        self.status.message = format!(
            "paused by request at step {}/{} ({}% canary)",
            at.step + 1,
            cx.plan.steps.len(),
            at.weight
        );
        match self.state {
            State::Paused { .. } => Next::Stay,
            _ => go(State::Paused { at, analysing }, Why::PauseRequested),
        }
    }
}
