//! A rollback: all traffic to stable in one write, the reason and evidence in status,
//! the canary drains.

use super::Why;
use super::decider::{Cx, Decider, Next, ts};
use crate::engine::Action;
use crate::state::Outcome;
use crate::status::RollbackRecord;
use crate::vocabulary::Reason;

/// Why a canary is rolled back: a reason in words and, for a breach, the evidence.
pub(super) struct Rollback {
    pub reason: String,
    pub breach: Option<Breach>,
}

/// The metric that breached, its value and the bound it broke.
pub(super) struct Breach {
    pub metric: String,
    pub value: Option<f64>,
    pub bound: String,
}

impl Rollback {
    pub fn because(reason: String) -> Rollback {
        Rollback { reason, breach: None }
    }

    pub fn on_breach(metric: String, value: Option<f64>, bound: String, reason: String) -> Rollback {
        Rollback {
            reason,
            breach: Some(Breach { metric, value, bound }),
        }
    }
}

/// A rollback's evidence in one line: the step, the metric, its value against the bound,
/// and the judge's reason.
pub(super) fn rollback_evidence(rb: &RollbackRecord) -> String {
    let metric = match (&rb.metric, rb.value, &rb.bound) {
        (Some(m), Some(v), Some(b)) => format!("{m} {v:.3} vs {b}: "),
        (Some(m), _, _) => format!("{m}: "),
        _ => String::new(),
    };
    format!(
        "rolled back at step {} ({}%): {metric}{}",
        rb.step, rb.weight, rb.reason
    )
}

impl Decider {
    pub(super) fn rollback(&mut self, cx: &Cx, rollback: Rollback) -> Next {
        let plan = cx.plan;
        let Some(at) = self.at() else { return Next::Stay };
        let weight = plan.steps.get(at.step as usize).map(|s| s.weight).unwrap_or(0);
        // All traffic to stable in one write; the canary is scaled down once it has drained.
        self.actions
            .retain(|a| !matches!(a, Action::ApplyCanary { .. } | Action::PauseTarget(false)));
        self.pause_target(Some(cx.target), true);
        let Rollback { reason, breach } = rollback;
        let message = format!(
            "rolled back revision {} at step {}/{} ({weight}%): {reason}",
            at.canary,
            at.step + 1,
            plan.steps.len()
        );
        self.event(true, Reason::RolledBack, message.clone());
        let (metric, value, bound) = match breach {
            Some(b) => (Some(b.metric), b.value, (!b.bound.is_empty()).then_some(b.bound)),
            None => (None, None, None),
        };
        self.status.rollback = Some(RollbackRecord {
            revision: at.canary.clone(),
            step: at.step + 1,
            weight,
            metric,
            value,
            bound,
            reason,
            at: ts(self.now),
        });
        self.status.rolled_back_revision = Some(at.canary.clone());
        self.status.message = message;
        let delay = plan.scale_down_delay;
        self.drain(Why::RolledBack, &at.stable, &at.canary, Outcome::RolledBack, delay)
    }
}
