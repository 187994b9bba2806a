//! Analysing: the step's weight is written; the judge looks at every tick. A pass moves
//! to the next step (or promotion) once its release window is open and its
//! confirmations said yes; a breach past the failure limit rolls back; no verdict by
//! the deadline rolls back too.

use std::time::Duration;

use jiff::Timestamp;

use super::decider::{Cx, Decider, Next, after, go, parse_ts, state_of, ts, until};
use super::hooks::{Said, confirmation};
use super::promoting::ROLLOUT_POLL;
use super::rollback::Rollback;
use super::scaling::first_look;
use super::{Action, AnalysisRequest, MeshConfirmation, Why};
use crate::judge::{self, LastLook, MetricInput, Reading, StepClock, StepCounts, Verdict};
use crate::plan::Plan;
use crate::spec::JudgeKind;
use crate::state::{CanaryAt, State};
use crate::status::{AnalysisStatus, RolloutStatus, StepEvidence};
use crate::vocabulary::Reason;
use crate::windows::Gate;

/// Is a look at the metrics due now? The controller asks before querying Prometheus.
/// While analysing: at every tick. While scaling after a restart: at once (then at every
/// tick while it fails), because no weight is raised before a fresh look
/// (`RolloutStatus::judged_here`). Not while the mesh has not confirmed the step's
/// weight: the step has not begun.
pub fn analysis_request(plan: &Plan, status: &RolloutStatus, now: Timestamp) -> Option<AnalysisRequest> {
    let since = match state_of(status) {
        State::Analysing {
            awaiting_mesh: true, ..
        } if status.judged_here => return None,
        State::Analysing { started, .. } => started,
        State::Scaling { since, .. } if !status.judged_here => since,
        _ => return None,
    };
    let next = status
        .analysis
        .as_ref()
        .and_then(|a| parse_ts(&a.next_check_at))
        .unwrap_or(now);
    if next > now {
        return None;
    }
    let window = match plan.judge {
        JudgeKind::Sequential => until(since, now).max(Duration::from_secs(1)),
        JudgeKind::Threshold => plan.interval,
    };
    Some(AnalysisRequest {
        window,
        interval: plan.interval,
    })
}

/// How often a step whose weight the mesh has not confirmed looks again, should the
/// route's status change not wake it (a missed watch event).
const MESH_RECHECK: Duration = Duration::from_secs(5);

/// Where a step that passed at 0-based `index` goes: the next step, the same step when
/// it passed below its weight (`spec.steps` changed mid-step: the weight is raised and
/// judged again), or `None`: promotion.
pub(super) fn next_step(plan: &Plan, at: &CanaryAt, index: usize) -> Option<usize> {
    let index = index.min(plan.last_step());
    match at.weight < plan.step(index).weight {
        true => Some(index),
        false => (index < plan.last_step()).then_some(index + 1),
    }
}

/// The release window a step that passed at `index` goes through.
pub(super) fn gate_after(plan: &Plan, at: &CanaryAt, index: usize) -> Gate {
    match next_step(plan, at, index) {
        Some(_) => Gate::Advance,
        None => Gate::Promote,
    }
}

/// The dates a step is judged by: when it is due (its duration) and its deadline.
struct StepDue {
    due: Timestamp,
    deadline: Timestamp,
}

impl Decider {
    /// Keep the canary sized and its weight in place, and judge each look.
    pub(super) fn on_analysing(&mut self, cx: &Cx) -> Next {
        let (plan, world) = (cx.plan, cx.world);
        let State::Analysing { started, .. } = self.state.clone() else {
            return Next::Stay;
        };
        if self.status.analysis.is_none() {
            self.status.analysis = Some(AnalysisStatus::default());
        }
        let needed = self.size_canary(cx);
        let Some(at) = self.at() else { return Next::Stay };
        if world.canary.as_ref().map(|c| c.pods.desired) != Some(needed) {
            self.actions.push(Action::ApplyCanary {
                revision: at.canary.clone(),
                replicas: needed,
            });
        }
        if let Some(reason) = self.rollback_requested(plan, &at, started) {
            return self.rollback(cx, Rollback::because(reason));
        }
        let index = at.step as usize;
        let step = plan.step(index);
        let due = after(started, step.duration);
        let deadline = after(due, plan.progress_deadline);
        // After a restart the weight is raised only after a fresh look (`restart_if_raised`).
        if self.state.awaiting_mesh() && self.status.judged_here {
            return self.await_mesh(cx, &at, started);
        }
        let Some(readings) = &world.readings else {
            self.keep_weight(at.weight);
            if let Some(restarted) = self.restart_if_raised(plan, &at) {
                return restarted;
            }
            let analysis = self.status.analysis.as_ref();
            let next = analysis.and_then(|a| parse_ts(&a.next_check_at)).unwrap_or(self.now);
            self.wake_at(next);
            return Next::Stay;
        };
        let clock = StepClock {
            elapsed: until(started, self.now),
            duration: step.duration,
        };
        let judgement = self.judge(plan, readings, clock);
        let against = matches!(judgement.verdict, Verdict::Breach { .. } | Verdict::Error);
        if !against {
            self.status.judged_here = true;
        }
        self.keep_weight(at.weight);
        if !against && let Some(restarted) = self.restart_if_raised(plan, &at) {
            return restarted;
        }
        let note = format!(
            "step {}/{} ({}%): {}",
            index + 1,
            plan.steps.len(),
            at.weight,
            judgement.reason
        );
        self.act_on(cx, judgement, note, StepDue { due, deadline })
    }

    /// A step whose weight was not in place (weir restarted between writing the status
    /// and writing the weight, and raises no weight before a fresh look) begins when the
    /// weight is written: its clock restarts, so no look taken at the lower weight passes
    /// the step.
    fn restart_if_raised(&mut self, plan: &Plan, at: &CanaryAt) -> Option<Next> {
        let raised = self.seen.world_weight.is_some_and(|w| w < at.weight)
            && self.actions.contains(&Action::SetCanaryWeight(at.weight));
        if !raised {
            return None;
        }
        self.status.message = format!(
            "step {}/{}: canary weight {}% written again after a restart; the step's analysis starts now",
            at.step + 1,
            plan.steps.len(),
            at.weight
        );
        let awaiting_mesh = self.seen.mesh != MeshConfirmation::NotWritten;
        Some(self.begin_step(plan, at, self.now, awaiting_mesh, Why::WeightWrittenAgain))
    }

    /// The step begins (again) at `started`: no look from before counts, the first is
    /// one `first_look` from now.
    fn begin_step(&mut self, plan: &Plan, at: &CanaryAt, started: Timestamp, awaiting_mesh: bool, why: Why) -> Next {
        let first_look = first_look(plan, at);
        if let Some(a) = self.status.analysis.as_mut() {
            a.next_check_at = Some(ts(after(self.now, first_look)));
            a.passed_at = None;
        }
        self.wake_at(after(self.now, first_look));
        let at = at.clone();
        go(
            State::Analysing {
                at,
                started,
                awaiting_mesh,
            },
            why,
        )
    }

    /// The step's weight is written; the mesh, which confirms what it applies, has not
    /// confirmed it: the step begins (its clock, its looks) when it does. A mesh that
    /// does not confirm within the progress deadline rolls the canary back: no step
    /// passes on traffic that may never have reached the canary.
    fn await_mesh(&mut self, cx: &Cx, at: &CanaryAt, since: Timestamp) -> Next {
        let plan = cx.plan;
        self.keep_weight(at.weight);
        let (step, steps) = (at.step + 1, plan.steps.len());
        let weight_seen = self.seen.world_weight == Some(at.weight);
        let pending = match (weight_seen, self.seen.mesh_pending()) {
            (true, None) => {
                let since = self.seen.mesh_confirmed_since().unwrap_or(self.now).min(self.now);
                self.status.message = format!(
                    "step {step}/{steps}: canary at {}%, confirmed by the mesh, analysing",
                    at.weight
                );
                return self.begin_step(plan, at, since, false, Why::MeshConfirmed);
            }
            (true, Some(why)) => why.to_string(),
            (false, _) => format!("weight {}% not yet seen in the routes", at.weight),
        };
        let deadline = after(since, plan.progress_deadline);
        if self.now >= deadline {
            let within = humantime::format_duration(plan.progress_deadline);
            let reason = format!(
                "the mesh did not confirm weight {}% within progressDeadline {within}: {pending}",
                at.weight
            );
            return self.rollback(cx, Rollback::because(reason));
        }
        let what = format!("step {step}/{steps}: the mesh has not confirmed weight {}%", at.weight);
        self.stuck_if_late(plan, Reason::DeadlineNear, &what, deadline);
        self.status.message = format!("{what}; the step's analysis starts once it does: {pending}");
        // The route's status wakes the Rollout; this is the fallback.
        self.wake_at(after(self.now, MESH_RECHECK).min(deadline));
        Next::Stay
    }

    /// Acts on one look's verdict: pass, breach, error or nothing yet.
    // Long: one arm per verdict (pass, breach, error, nothing yet), side by side.
    fn act_on(&mut self, cx: &Cx, judgement: judge::Judgement, note: String, step: StepDue) -> Next {
        let plan = cx.plan;
        let index = self.at().map(|a| a.step as usize).unwrap_or(0);
        let analysis = self.status.analysis.get_or_insert_with(AnalysisStatus::default);
        analysis.last_checked_at = Some(ts(self.now));
        analysis.metrics = judgement.metrics.clone();
        match judgement.verdict {
            Verdict::Pass { early } => {
                analysis.last_verdict = Some("Pass".into());
                analysis.consecutive_errors = 0;
                analysis.last_error = None;
                let when = if early { " early" } else { "" };
                self.passed = Some(format!("{note}; step passed{when}"));
                self.advance_within_windows(cx, index)
            }
            Verdict::Breach {
                decisive,
                metric,
                value,
                bound,
            } => {
                analysis.last_verdict = Some("Breach".into());
                analysis.failures += 1;
                let failures = analysis.failures;
                if decisive || failures > plan.failure_limit {
                    return self.rollback(cx, Rollback::on_breach(metric, value, bound, judgement.reason));
                }
                if analysis.passed_at.is_some() {
                    return self.advance_within_windows(cx, index);
                }
                let told = format!("{note}; breach {failures} of {} tolerated", plan.failure_limit);
                self.event(true, Reason::AnalysisBreach, told);
                self.hold(cx, note, step.deadline, plan.interval)
            }
            Verdict::Error => {
                analysis.last_verdict = Some("Error".into());
                analysis.consecutive_errors += 1;
                analysis.last_error = Some(judgement.reason.clone());
                let passed = analysis.passed_at.is_some();
                // One Event when Prometheus starts failing, not one per look.
                if analysis.consecutive_errors == 1 {
                    self.event(true, Reason::AnalysisError, note.clone());
                }
                if passed {
                    // No weight is raised on a look that saw nothing: wait on.
                    self.wait_for_window(plan, index, None);
                    return Next::Stay;
                }
                self.hold(cx, note, step.deadline, plan.tick)
            }
            Verdict::Inconclusive => {
                analysis.last_verdict = Some("Inconclusive".into());
                analysis.consecutive_errors = 0;
                if analysis.passed_at.is_some() {
                    // The step passed before; quiet looks (night traffic) do not undo it.
                    return self.advance_within_windows(cx, index);
                }
                let next = if plan.judge == JudgeKind::Threshold && self.now < step.due {
                    until(self.now, step.due)
                } else {
                    plan.tick
                };
                self.hold(cx, note, step.deadline, next)
            }
        }
    }

    /// A passed step gives way to the next step (or promotion) if its window is open and
    /// its confirmations said yes; otherwise it waits.
    fn advance_within_windows(&mut self, cx: &Cx, index: usize) -> Next {
        let plan = cx.plan;
        let Some(at) = self.at() else { return Next::Stay };
        let gate = gate_after(plan, &at, index);
        let what = format!("step {}/{} passed", index + 1, plan.steps.len());
        if self.window_closed(plan, gate, &what) {
            self.wait_for_window(plan, index, Some(gate));
            return Next::Stay;
        }
        match self.hooks_say(plan, confirmation(gate), &at.canary, index as u32 + 1) {
            Said::Yes => self.advance(cx, index),
            Said::No(reason) => self.rollback(cx, Rollback::because(reason)),
            Said::Waiting(asking) => {
                self.wait_for_window(plan, index, Some(gate));
                self.status.message = format!("{what}; {asking} (`weir promote` says yes too)");
                Next::Stay
            }
        }
    }

    /// A passed step waits for a window: the weight stays and the analysis goes on at
    /// every tick (a breach still rolls back), but the deadline does not run: the step
    /// has passed. `gate`: `None` when the look saw nothing and the window is not asked.
    fn wait_for_window(&mut self, plan: &Plan, index: usize, gate: Option<Gate>) {
        let now = ts(self.now);
        let next = after(self.now, plan.tick);
        if let Some(a) = self.status.analysis.as_mut() {
            a.passed_at.get_or_insert(now);
            a.next_check_at = Some(ts(next));
        }
        if let Some(at) = self.at() {
            self.keep_weight(at.weight);
        }
        if gate.is_none() {
            self.status.message = format!(
                "step {}/{} passed; waiting for a release window (the last look saw no data)",
                index + 1,
                plan.steps.len()
            );
        }
        // The pass is told by the WaitingForWindow Event ("step N/M passed: outside ..."),
        // not again with every look while it waits.
        self.passed = None;
        self.wake_at(next);
    }

    pub(super) fn judge(&self, plan: &Plan, readings: &[(String, Reading)], clock: StepClock) -> judge::Judgement {
        let evidence = self
            .status
            .analysis
            .as_ref()
            .map(|a| a.evidence.as_slice())
            .unwrap_or_default();
        let inputs: Vec<MetricInput> = plan
            .metrics
            .iter()
            .map(|m| MetricInput {
                plan: m,
                reading: readings
                    .iter()
                    .find(|(name, _)| *name == m.name)
                    .map(|(_, r)| r.clone())
                    .unwrap_or_else(|| Reading::Error("not queried".into())),
                history: evidence
                    .iter()
                    .filter(|e| e.metric == m.name)
                    .map(|e| StepCounts {
                        canary: e.canary,
                        baseline: e.baseline,
                    })
                    .collect(),
                last: self.last_look(&m.name),
            })
            .collect();
        judge::judge(plan.judge, &plan.sequential, &inputs, clock)
    }

    /// The step's previous look at a metric, from status (so it survives a restart).
    fn last_look(&self, metric: &str) -> Option<LastLook> {
        let m = self
            .status
            .analysis
            .as_ref()?
            .metrics
            .iter()
            .find(|m| m.name == metric)?;
        let (canary, baseline) = (m.canary_counts?, m.baseline_counts?);
        Some(LastLook {
            counts: StepCounts { canary, baseline },
            // Status written before the judge kept it: all of the step counts.
            clean_canary: m.clean_canary_counts.unwrap_or(canary),
        })
    }

    /// Hold the step: look again after `next`, roll back once the deadline passes.
    fn hold(&mut self, cx: &Cx, note: String, deadline: Timestamp, next: Duration) -> Next {
        let plan = cx.plan;
        if self.now >= deadline {
            let reason = format!(
                "no passing verdict within progressDeadline {} after the step was due; last: {note}",
                humantime::format_duration(plan.progress_deadline)
            );
            return self.rollback(cx, Rollback::because(reason));
        }
        let next_at = after(self.now, next).min(deadline);
        if let Some(a) = self.status.analysis.as_mut() {
            a.next_check_at = Some(ts(next_at));
        }
        if let Some(at) = self.at() {
            let what = format!("step {}/{}: no passing verdict yet", at.step + 1, plan.steps.len());
            self.stuck_if_late(plan, Reason::DeadlineNear, &what, deadline);
        }
        self.status.message = format!("holding: {note}");
        self.wake_at(next_at);
        Next::Stay
    }

    /// Records the step's evidence, then moves to the next step or to promotion.
    pub(super) fn advance(&mut self, cx: &Cx, index: usize) -> Next {
        let plan = cx.plan;
        self.unstuck();
        if let Some(a) = self.status.analysis.as_mut() {
            for m in &a.metrics {
                if let (Some(canary), Some(baseline)) = (m.canary_counts, m.baseline_counts) {
                    a.evidence.push(StepEvidence {
                        step: index as u32,
                        metric: m.name.clone(),
                        canary,
                        baseline,
                    });
                }
            }
            a.next_check_at = None;
            a.passed_at = None;
            a.metrics.clear();
        }
        let Some(at) = self.at() else { return Next::Stay };
        if let Some(next) = next_step(plan, &at, index) {
            let next = CanaryAt {
                step: next as u32,
                ..at
            };
            let scaling = State::Scaling {
                at: next,
                since: self.now,
                drain_until: None,
            };
            return go(scaling, Why::StepPassed);
        }
        if let Some(passed) = self.passed.take() {
            self.event(false, Reason::StepPassed, passed);
        }
        // Promotion: the stable track (the user's Deployment) rolls out the new template
        // while the canary keeps the traffic it has; traffic returns once stable is ready.
        self.pause_target(Some(cx.target), false);
        self.status.message = format!(
            "promoting revision {}: Deployment {} rolls out the new template",
            at.canary, plan.target
        );
        self.event(false, Reason::Promoting, self.status.message.clone());
        self.wake_at(after(self.now, ROLLOUT_POLL));
        let promoting = State::Promoting {
            at,
            since: self.now,
            stalled: false,
            interrupted_by: None,
        };
        go(promoting, Why::LastStepPassed)
    }
}
