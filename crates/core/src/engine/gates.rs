//! Release windows as the engine asks them: may this go on now?

use super::decider::Decider;
use crate::plan::Plan;
use crate::vocabulary::{ConditionType, Reason};
use crate::windows::Gate;

impl Decider {
    /// Is `gate` outside the Rollout's release windows now? Then the message says what
    /// waits and until when, the condition `WithinReleaseWindow` is False (an Event when
    /// it becomes so), and weir wakes when the window opens.
    pub(super) fn window_closed(&mut self, plan: &Plan, gate: Gate, what: &str) -> bool {
        let Some(windows) = &plan.windows else {
            return false;
        };
        if windows.open(gate, self.now) {
            let message = format!("may {} now: {}", gate.verb(), windows.describe(gate));
            self.set_condition(ConditionType::WithinReleaseWindow, true, Reason::Open, &message);
            return false;
        }
        let next = windows.next_open(gate, self.now);
        let opens = match next {
            Some(t) => format!("opens {}", windows.show(t)),
            None => "does not open within a year".into(),
        };
        let message = format!(
            "{what}: outside the release windows to {} ({}); the next {opens}",
            gate.verb(),
            windows.describe(gate)
        );
        let was_open = self
            .status
            .condition(ConditionType::WithinReleaseWindow)
            .is_none_or(|c| c.status == "True");
        if was_open {
            self.event(false, Reason::WaitingForWindow, message.clone());
        }
        self.set_condition(ConditionType::WithinReleaseWindow, false, Reason::Closed, &message);
        self.status.message = message;
        if let Some(t) = next {
            self.wake_at(t);
        }
        true
    }
}
