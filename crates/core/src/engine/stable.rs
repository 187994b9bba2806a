//! Stable: no canary; all traffic on stable, the Deployment paused so a bump waits to be
//! judged, the canary scaled to zero. A template change starts a canary.

use super::Why;
use super::decider::{Cx, Decider, Next, go, ts};
use crate::engine::Action;
use crate::state::{CanaryAt, Outcome, State};
use crate::status::{AnalysisStatus, Phase, ReleaseRecord};
use crate::vocabulary::{ConditionType, Reason};
use crate::windows::Gate;

impl Decider {
    pub(super) fn on_stable(&mut self, cx: &Cx) -> Next {
        let (plan, target, world) = (cx.plan, cx.target, cx.world);
        let State::Stable { stable, last } = self.state.clone() else {
            return Next::Stay;
        };
        self.after_release(plan);
        if self.seen.world_weight.is_some_and(|w| w > 0) {
            // Canary weight where none should be (a sync restored an old VirtualService):
            // off at once, and the pods it reached drain before they go.
            let canary = world.canary.as_ref().and_then(|c| c.revision.clone());
            let last = last.unwrap_or(Outcome::Cancelled);
            self.event(
                true,
                Reason::TrafficReverted,
                "canary weight found while no canary runs: back on stable".into(),
            );
            let canary = canary.unwrap_or_default();
            return self.drain(Why::CanaryWeightFound, &stable, &canary, last, plan.scale_down_delay);
        }
        self.pause_target(Some(target), true);
        if let Some(canary) = world.canary.as_ref().filter(|c| c.pods.desired > 0) {
            if self.state_unknown {
                // The state was rebuilt without its drain: the canary's pods may have
                // carried traffic moments ago. They drain before they go, as after any release.
                self.state_unknown = false;
                let revision = canary.revision.clone().unwrap_or_default();
                let delay = plan.scale_down_delay;
                return self.drain(Why::StateRebuilt, &stable, &revision, Outcome::Cancelled, delay);
            }
            self.actions.push(Action::ApplyCanary {
                revision: canary.revision.clone().unwrap_or_else(|| target.revision.clone()),
                replicas: 0,
            });
        }
        if target.revision == stable {
            if self.state.phase() == Phase::Healthy {
                self.status.message = format!("stable runs revision {stable}");
            }
            return Next::Stay;
        }
        if self.status.rolled_back_revision.as_deref() == Some(target.revision.as_str()) {
            let why = match &self.status.rollback {
                Some(rb) if rb.revision == target.revision => {
                    format!(" at step {} ({}%): {}", rb.step, rb.weight, rb.reason)
                }
                _ => String::new(),
            };
            self.status.message = format!(
                "revision {} was rolled back{why}. Change the template or run `weir retry` to try it again",
                target.revision
            );
            return Next::Stay;
        }
        let what = format!("revision {} waits to start", target.revision);
        if self.window_closed(plan, Gate::Start, &what) {
            return Next::Stay;
        }
        self.start_canary(cx, &stable)
    }

    fn start_canary(&mut self, cx: &Cx, stable: &str) -> Next {
        let target = cx.target;
        self.event(
            false,
            Reason::CanaryStarted,
            format!("template changed: canary of revision {} starts", target.revision),
        );
        self.actions.retain(|a| !matches!(a, Action::ApplyCanary { .. }));
        self.status.analysis = Some(AnalysisStatus::default());
        self.status.rollback = None;
        self.status.judged_here = true;
        self.status.release = Some(ReleaseRecord {
            revision: target.revision.clone(),
            image: target.image.clone(),
            started: ts(self.now),
            step: 1,
            ..ReleaseRecord::default()
        });
        let started = format!("revision {} started", target.revision);
        self.set_condition(ConditionType::Progressing, true, Reason::CanaryStarted, &started);
        let at = CanaryAt {
            stable: stable.to_string(),
            canary: target.revision.clone(),
            step: 0,
            weight: 0,
            reference_replicas: target.pods.desired,
        };
        let scaling = State::Scaling {
            at,
            since: self.now,
            drain_until: None,
        };
        go(scaling, Why::TemplateChanged)
    }
}
