//! Scaling: the canary's pods for the step are starting; the canary keeps the previous
//! step's weight. Once they are ready (and, at step 1, the pre-rollout webhooks said
//! yes) the step's weight is written and the step is analysed.

use std::time::Duration;

use jiff::Timestamp;

use super::decider::{Cx, Decider, Next, after, go, ts, until};
use super::hooks::Said;
use super::rollback::Rollback;
use super::{MeshConfirmation, Why};
use crate::engine::Action;
use crate::judge::{StepClock, Verdict};
use crate::plan::Plan;
use crate::spec::{JudgeKind, WebhookKind};
use crate::state::{CanaryAt, State};
use crate::status::AnalysisStatus;
use crate::vocabulary::Reason;

impl Decider {
    /// Make sure the canary has its pods, and write the weight once they are ready.
    pub(super) fn on_scaling(&mut self, cx: &Cx) -> Next {
        let (plan, world) = (cx.plan, cx.world);
        let State::Scaling { since, drain_until, .. } = self.state.clone() else {
            return Next::Stay;
        };
        self.confirm(cx, since);
        let needed = self.size_canary(cx);
        let Some(at) = self.at() else { return Next::Stay };
        if let Some(reason) = self.rollback_requested(plan, &at, since) {
            return self.rollback(cx, Rollback::because(reason));
        }
        let canary = world.canary.clone().unwrap_or_default();
        let runs_canary = canary.revision.as_deref() == Some(at.canary.as_str());
        let drain_until = drain_until.map(|t| self.drain_counted_from_the_mesh(t));
        if let Some(drain_until) = drain_until.filter(|t| *t > self.now)
            && !runs_canary
        {
            self.keep_weight(at.weight);
            self.status.message = format!(
                "step {}: the old canary drains before it runs revision {}",
                at.step + 1,
                at.canary
            );
            self.wake_at(drain_until);
            return Next::Stay;
        }
        let applied = runs_canary && canary.pods.desired == needed;
        if !applied {
            self.actions.retain(|a| !matches!(a, Action::ApplyCanary { .. }));
            self.actions.push(Action::ApplyCanary {
                revision: at.canary.clone(),
                replicas: needed,
            });
        }
        let mut asking = None;
        if applied && canary.ready_for(&at.canary, needed) && self.status.judged_here {
            // Before the first traffic, the pre-rollout webhooks (a smoke test) say yes.
            let said = match at.step {
                0 => self.hooks_say(plan, WebhookKind::PreRollout, &at.canary, 1),
                _ => Said::Yes,
            };
            match said {
                Said::Yes => return self.start_step(plan, at, canary.pods.available),
                Said::No(reason) => return self.rollback(cx, Rollback::because(reason)),
                Said::Waiting(message) => asking = Some(message),
            }
        }
        self.keep_weight(at.weight);
        self.not_started(cx, since, (needed, canary.pods.available), asking)
    }

    /// Replicas the canary needs for its step: the step's share of the replicas that
    /// carry all the traffic. That reference is stable's replica count when the canary
    /// started, raised when stable grows (an HPA answering more load) and never lowered
    /// while the canary runs: an HPA shrinks stable as the canary takes its load, and the
    /// canary must not shrink with it.
    pub(super) fn size_canary(&mut self, cx: &Cx) -> i32 {
        let Some(mut at) = self.at() else { return 1 };
        at.reference_replicas = at.reference_replicas.max(cx.target.pods.desired);
        let step = cx.plan.step(at.step as usize);
        let needed = Plan::canary_replicas(at.reference_replicas, step.weight);
        self.set_at(at);
        needed
    }

    /// After a restart: takes the verdict of a fresh look, when there is one, as leave to
    /// raise weights again unless it leans against the canary.
    fn confirm(&mut self, cx: &Cx, since: Timestamp) {
        if self.status.judged_here {
            return;
        }
        let plan = cx.plan;
        let Some(readings) = &cx.world.readings else { return };
        let index = self.at().map(|a| a.step as usize).unwrap_or(0);
        let clock = StepClock {
            elapsed: until(since, self.now),
            duration: plan.step(index).duration,
        };
        let judgement = self.judge(plan, readings, clock);
        let against = matches!(judgement.verdict, Verdict::Breach { .. } | Verdict::Error);
        self.status.judged_here = !against;
        if against {
            let a = self.status.analysis.get_or_insert_with(AnalysisStatus::default);
            a.last_checked_at = Some(ts(self.now));
            a.next_check_at = Some(ts(after(self.now, plan.tick)));
            a.last_error = Some(judgement.reason.clone());
            self.wake_at(after(self.now, plan.tick));
        }
    }

    /// The step could not start (pods not ready, a webhook not yet yes, no fresh look
    /// after a restart): rolls back once the progress deadline passed, else says why it waits.
    fn not_started(
        &mut self,
        cx: &Cx,
        since: Timestamp,
        (needed, available): (i32, i32),
        asking: Option<String>,
    ) -> Next {
        let plan = cx.plan;
        let Some(at) = self.at() else { return Next::Stay };
        let deadline = after(since, plan.progress_deadline);
        let within = humantime::format_duration(plan.progress_deadline);
        if self.now >= deadline {
            let reason = match (&asking, self.status.judged_here) {
                (Some(asking), _) => {
                    format!("the pre-rollout webhooks did not say yes within progressDeadline {within}: {asking}")
                }
                (None, true) => {
                    format!("canary pods not ready within progressDeadline {within}: {available} of {needed} available")
                }
                (None, false) => format!("no fresh look of the judge within progressDeadline {within} after a restart"),
            };
            return self.rollback(cx, Rollback::because(reason));
        }
        self.wake_at(deadline);
        let steps = plan.steps.len();
        let step = at.step + 1;
        let (reason, what) = match (&asking, self.status.judged_here) {
            (Some(_), _) => (Reason::DeadlineNear, "the pre-rollout webhooks have not said yes"),
            (None, true) => (Reason::WaitingForPods, "the canary's pods are not ready"),
            (None, false) => (Reason::DeadlineNear, "no fresh look of the judge since a restart"),
        };
        self.stuck_if_late(plan, reason, &format!("step {step}/{steps}: {what}"), deadline);
        self.status.message = match (asking, self.status.judged_here) {
            (Some(asking), _) => format!("step {step}/{steps}: canary pods ready, no traffic yet; {asking}"),
            (None, true) => format!(
                "step {step}/{steps}: waiting for canary pods ({available} of {needed} available) before sending {}% of traffic",
                plan.step(at.step as usize).weight
            ),
            (None, false) => {
                format!("step {step}/{steps}: weir restarted; it raises no weight before a fresh look of the judge")
            }
        };
        Next::Stay
    }

    /// The step's pods are ready: its weight is written and the judge starts looking.
    fn start_step(&mut self, plan: &Plan, at: CanaryAt, ready: i32) -> Next {
        let weight = plan.step(at.step as usize).weight;
        self.unstuck();
        self.set_weight(weight);
        if let Some(r) = self.status.release.as_mut() {
            r.step = at.step + 1;
        }
        let at = CanaryAt { weight, ..at };
        let first_look = first_look(plan, &at);
        if let Some(a) = self.status.analysis.as_mut() {
            a.next_check_at = Some(ts(after(self.now, first_look)));
        }
        self.wake_at(after(self.now, first_look));
        let (step, steps) = (at.step + 1, plan.steps.len());
        self.status.message = format!("step {step}/{steps}: canary at {weight}%, analysing");
        let mut note = format!("step {step}/{steps}: canary weight {weight}% ({ready} canary pods ready)");
        if let Some(passed) = self.passed.take() {
            note = format!("{note}; {passed}");
        }
        self.event(false, Reason::StepStarted, note);
        // A mesh that confirms what it applies (it writes status on the route) is waited
        // for before the step's clock runs (`on_analysing`).
        let awaiting_mesh = self.seen.mesh != MeshConfirmation::NotWritten;
        let analysing = State::Analysing {
            at,
            started: self.now,
            awaiting_mesh,
        };
        go(analysing, Why::PodsReady)
    }
}

/// When a step's first look is due: at the next tick (sequential), or once the step's
/// duration has passed (threshold: one look over the interval).
pub(super) fn first_look(plan: &Plan, at: &CanaryAt) -> Duration {
    match plan.judge {
        JudgeKind::Sequential => plan.tick,
        JudgeKind::Threshold => plan.step(at.step as usize).duration,
    }
}
