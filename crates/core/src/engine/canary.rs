//! What every canary state (Scaling, Analysing, Paused) checks first, before its own
//! handler: the template (reverted, or newer), a person's request, lost pods, an edit of
//! `spec.steps`, a pause.

use super::Why;
use super::decider::{Cx, Decider, Next, Verb, after, go, ts};
use super::rollback::Rollback;
use crate::state::{CanaryAt, Kind, Outcome, State};
use crate::status::AnalysisStatus;
use crate::vocabulary::Reason;

impl Decider {
    pub(super) fn canary_checks(&mut self, cx: &Cx) -> Next {
        let (target, world) = (cx.target, cx.world);
        let Some(at) = self.at() else { return Next::Stay };
        if target.revision == at.stable {
            return self.cancel(cx, &at);
        }
        if target.revision != at.canary {
            return self.replace(cx, &at);
        }
        if self.take_verb(Verb::Abort) {
            return self.rollback(cx, Rollback::because("aborted by request (weir abort)".into()));
        }
        self.pause_target(Some(target), true);
        if at.weight > 0 && world.canary.as_ref().is_none_or(|c| c.pods.available == 0) {
            let next = self.withdraw_from_lost_pods(&at);
            if let Next::Go(_) = next {
                return next;
            }
        }
        if let next @ Next::Go(_) = self.fit_to_steps(cx) {
            return next;
        }
        let Some(at) = self.at() else { return Next::Stay };
        if self.take_verb(Verb::Promote) {
            let index = at.step as usize;
            let note = format!("step {} passed by request (weir promote)", index + 1);
            self.event(false, Reason::PromoteRequested, note);
            self.confirmed_by_request(cx.plan, &at.canary, index);
            return self.advance(cx, index);
        }
        if world.pause_requested && self.state.kind() != Kind::Paused {
            return self.hold_paused(cx);
        }
        Next::Stay
    }

    /// `spec.steps` may change at any point of a release. The step in progress keeps its
    /// index; past the new end it becomes the new last step. A weight in place above that
    /// step's weight is lowered at once and the step starts over (taking traffic away needs
    /// no verdict); a weight below it is raised only once the step's analysis passed at
    /// the weight in place (`advance` stays on the step). So an edit never raises a weight
    /// without a passing verdict and never reads a step that is not there.
    fn fit_to_steps(&mut self, cx: &Cx) -> Next {
        let plan = cx.plan;
        let Some(mut at) = self.at() else { return Next::Stay };
        let index = (at.step as usize).min(plan.last_step());
        let weight = plan.step(index).weight;
        if index == at.step as usize && at.weight <= weight {
            return Next::Stay;
        }
        let lowered = at.weight > weight;
        let note = format!(
            "spec.steps changed: the release is at step {}/{} ({weight}%){}",
            index + 1,
            plan.steps.len(),
            match lowered {
                true => format!("; canary weight lowered from {}% and the step starts over", at.weight),
                false => String::new(),
            }
        );
        at.step = index as u32;
        if lowered {
            at.weight = weight;
        }
        self.event(false, Reason::StepsChanged, note);
        // A lowered step starts over at its weight, analysed from now: the weight in place
        // never passed there, so it is raised again only after a pass. Otherwise the state
        // keeps its kind and clock, at the step's new index.
        match &mut self.state {
            State::Paused { at: here, analysing } => {
                *analysing |= lowered;
                *here = at;
                return Next::Stay;
            }
            State::Analysing { at: here, .. } | State::Scaling { at: here, .. } if !lowered => {
                *here = at;
                return Next::Stay;
            }
            _ => {}
        }
        self.set_weight(at.weight);
        let a = self.status.analysis.get_or_insert_with(AnalysisStatus::default);
        a.passed_at = None;
        a.next_check_at = Some(ts(after(self.now, plan.tick)));
        go(
            State::Analysing {
                at,
                started: self.now,
                awaiting_mesh: false,
            },
            Why::StepsChanged,
        )
    }

    /// The template went back to stable: the canary is cancelled and drains.
    fn cancel(&mut self, cx: &Cx, at: &CanaryAt) -> Next {
        let note = format!(
            "template reverted to stable revision {}; canary {} cancelled",
            at.stable, at.canary
        );
        self.event(false, Reason::CanaryCancelled, note);
        self.pause_target(Some(cx.target), true);
        self.status.analysis = None;
        self.status.message = format!("canary {} cancelled: the template is back on stable", at.canary);
        let delay = cx.plan.scale_down_delay;
        self.drain(Why::TemplateReverted, &at.stable, &at.canary, Outcome::Cancelled, delay)
    }

    /// A newer template mid-canary: the old canary's traffic goes at once, its pods drain,
    /// then they run the newest revision from step 1.
    fn replace(&mut self, cx: &Cx, at: &CanaryAt) -> Next {
        let target = cx.target;
        let note = format!(
            "revision {} replaces {} mid-canary; analysis restarts at step 1",
            target.revision, at.canary
        );
        self.event(false, Reason::NewerRevision, note);
        let had_traffic = at.weight > 0 || self.seen.world_weight.is_some_and(|w| w > 0);
        self.set_weight(0);
        self.pause_target(Some(target), true);
        self.status.analysis = Some(AnalysisStatus::default());
        self.status.judged_here = true;
        let next = CanaryAt {
            canary: target.revision.clone(),
            step: 0,
            weight: 0,
            ..at.clone()
        };
        let scaling = State::Scaling {
            at: next,
            since: self.now,
            drain_until: had_traffic.then(|| after(self.now, cx.plan.scale_down_delay)),
        };
        go(scaling, Why::NewerRevision)
    }

    /// Never send traffic to a destination without ready pods: withdraw it and wait for
    /// the pods again (the progress deadline rolls back a canary that stays down). A
    /// paused canary stays paused, at weight 0.
    fn withdraw_from_lost_pods(&mut self, at: &CanaryAt) -> Next {
        let note = format!(
            "step {}: canary has no ready pods; its traffic is withdrawn",
            at.step + 1
        );
        self.event(true, Reason::CanaryNotReady, note);
        self.set_weight(0);
        let at = CanaryAt {
            weight: 0,
            ..at.clone()
        };
        if let State::Paused { at: here, .. } = &mut self.state {
            *here = at;
            return Next::Stay;
        }
        let scaling = State::Scaling {
            at,
            since: self.now,
            drain_until: None,
        };
        go(scaling, Why::PodsLost)
    }
}
