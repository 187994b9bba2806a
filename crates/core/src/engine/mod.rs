//! The decision engine: Rollout plan + status + observed world + `now` in, actions + new
//! status + Events out. Pure: no kube, no HTTP, no clock reads, so every behaviour is a
//! readable scenario on a simulated clock (see `tests/engine_scenarios.rs`).
//!
//! A rollout is in one `State` at a time. Each state has a module here and a handler,
//! `on_<state>`, that decides within the state (targets, status, Events) and returns the
//! transition to take, if any: the next state and why. `Decider::drive` applies
//! transitions, checking each against `TRANSITIONS` below — every way a rollout can move,
//! in one table (the README's is generated from it). A transition either ends the
//! decision (`Wait`: its writes go first, the next reconcile goes on) or runs the new
//! state's handler at once (`Enter`), or runs the checks every canary state makes first
//! and then its handler (`Recheck`).
//!
//! Crash safety comes from three rules. Every action is a *target*, not a delta ("canary
//! weight is 25", "canary has 3 replicas"), so doing it twice is harmless. The new status
//! is written before the actions (`Decision::writes`), so a transition that takes traffic
//! away or promotes is an intent a restart completes. And a restarted controller raises
//! no weight before a fresh look of the judge (`RolloutStatus::judged_here`).

use std::time::Duration;

use jiff::Timestamp;

use crate::plan::{DEFAULT_SCALE_DOWN_DELAY, Plan};
use crate::spec::SpecError;
use crate::state::Kind::{self, *};
use crate::status::RolloutStatus;

mod analysing;
mod canary;
mod decider;
mod decision;
mod deletion;
mod draining;
mod gates;
mod hooks;
mod initializing;
mod paused;
mod promoting;
mod rollback;
mod scaling;
mod stable;
mod world;

pub use analysing::analysis_request;
pub use decider::state_of;
pub use decision::{Action, AnalysisRequest, Decision, Event, Write};
pub use promoting::ramp_down;
pub use world::{CanaryState, MeshConfirmation, Pods, TargetState, World};

use decider::Decider;

/// Why a rollout changes state: the middle column of `TRANSITIONS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::Display, strum::IntoStaticStr, strum::EnumIter)]
pub enum Why {
    TookOver,
    TemplateChanged,
    CanaryWeightFound,
    StateRebuilt,
    PodsReady,
    PodsLost,
    StepsChanged,
    WeightWrittenAgain,
    MeshConfirmed,
    StepPassed,
    LastStepPassed,
    PauseRequested,
    Resumed,
    NewerRevision,
    TemplateReverted,
    RolledBack,
    Unusable,
    StableReady,
    Drained,
    Deleted,
}

/// What a decision does right after a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::Display)]
pub enum Then {
    /// The decision ends in the new state; the next reconcile goes on from there.
    Wait,
    /// The new state's handler runs at once, on the same observations.
    Enter,
    /// The checks every canary state makes first run again, then the new state's handler.
    Recheck,
}

/// One row of the transition table.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub from: &'static [Kind],
    pub why: Why,
    pub to: Kind,
    pub then: Then,
    /// When it happens, in a person's words (the README's table).
    pub when: &'static str,
}

const fn row(from: &'static [Kind], why: Why, to: Kind, then: Then, when: &'static str) -> Row {
    Row {
        from,
        why,
        to,
        then,
        when,
    }
}

const CANARY: &[Kind] = &[Scaling, Analysing, Paused];
const CANARY_ACTIVE: &[Kind] = &[Scaling, Analysing];
const NOT_DRAINING: &[Kind] = &[Initializing, Stable, Scaling, Analysing, Paused, Promoting];

/// Every transition a rollout can take. `Decider::drive` refuses (in debug builds: the
/// tests, the crash explorer and the fuzzer panic) any transition not listed here.
#[rustfmt::skip]
pub const TRANSITIONS: &[Row] = &[
    row(&[Initializing], Why::TookOver,          Stable,    Then::Enter,   "the Deployment's own rollout is done (a paused one with a pending template: that template is judged as a canary)"),
    row(&[Stable],       Why::TemplateChanged,   Scaling,   Then::Enter,   "the template differs from stable and a release window is open"),
    row(&[Stable],       Why::CanaryWeightFound, Draining,  Then::Wait,    "canary weight found while no canary runs (a sync restored it): off at once, the pods drain"),
    row(&[Stable],       Why::StateRebuilt,      Draining,  Then::Wait,    "a status of another format and canary pods running: they drain before they go"),
    row(&[Scaling],      Why::PodsReady,         Analysing, Then::Wait,    "the step's pods are ready (at step 1 the pre-rollout webhooks said yes): its weight is written"),
    row(CANARY_ACTIVE,   Why::PodsLost,          Scaling,   Then::Recheck, "the canary has no ready pod: its traffic is withdrawn until it has"),
    row(CANARY_ACTIVE,   Why::StepsChanged,      Analysing, Then::Recheck, "spec.steps changed below the weight in place: lowered at once, the step starts over"),
    row(&[Analysing],    Why::WeightWrittenAgain, Analysing, Then::Wait,   "after a restart the step's weight is written again: its clock starts over"),
    row(&[Analysing],    Why::MeshConfirmed,     Analysing, Then::Wait,    "the mesh confirmed the step's weight (where it writes status on the route): the step's clock starts"),
    row(CANARY,          Why::StepPassed,        Scaling,   Then::Enter,   "the step passed (or `weir promote`), its window is open and its confirmations said yes"),
    row(CANARY,          Why::LastStepPassed,    Promoting, Then::Wait,    "the last step passed, as above: the Deployment rolls out the canary's template"),
    row(CANARY_ACTIVE,   Why::PauseRequested,    Paused,    Then::Wait,    "`weir pause`: the weight holds, the deadline stops"),
    row(&[Paused],       Why::Resumed,           Scaling,   Then::Enter,   "`weir resume` while the step's pods were starting"),
    row(&[Paused],       Why::Resumed,           Analysing, Then::Enter,   "`weir resume` while the step was analysed: its clock restarts"),
    row(CANARY,          Why::NewerRevision,     Scaling,   Then::Enter,   "a newer template mid-canary: the old canary's traffic goes, its pods drain, then step 1"),
    row(CANARY,          Why::TemplateReverted,  Draining,  Then::Wait,    "the template is back on stable: the canary is cancelled"),
    row(CANARY,          Why::RolledBack,        Draining,  Then::Wait,    "a breach, a deadline, `weir abort`, a webhook's no or a rollback webhook's yes"),
    row(CANARY,          Why::Unusable,          Draining,  Then::Wait,    "the spec or the objects it names became unusable: the canary is withdrawn"),
    row(&[Promoting],    Why::StableReady,       Draining,  Then::Wait,    "stable is ready on the canary's template (or back on its own after a revert)"),
    row(&[Draining],     Why::Drained,           Stable,    Then::Wait,    "scaleDownDelay passed since the weight write and the routes show no canary weight"),
    row(NOT_DRAINING,    Why::Deleted,           Draining,  Then::Wait,    "the Rollout was deleted while the routes send the canary traffic"),
];

/// The row that allows `from --why--> to`, if any.
pub fn allowed(from: Kind, why: Why, to: Kind) -> Option<&'static Row> {
    TRANSITIONS
        .iter()
        .find(|r| r.why == why && r.to == to && r.from.contains(&from))
}

/// The README's transition table, generated from `TRANSITIONS`.
pub fn transitions_markdown() -> String {
    let mut out = String::from("| from | why | to | then | when |\n|---|---|---|---|---|\n");
    for r in TRANSITIONS {
        let from: Vec<&str> = r.from.iter().map(|k| k.as_str()).collect();
        out += &format!(
            "| {} | {} | {} | {} | {} |\n",
            from.join(", "),
            r.why,
            r.to,
            r.then,
            r.when
        );
    }
    out
}

/// Decide what to do for one Rollout.
pub fn decide(
    plan: Result<&Plan, &[SpecError]>,
    generation: Option<i64>,
    status: &RolloutStatus,
    world: &World,
    now: Timestamp,
) -> Decision {
    let steps_total = plan.as_ref().map(|p| p.steps.len()).unwrap_or(0);
    let mut d = Decider::new(status, world, now, steps_total);
    d.status.observed_generation = generation;
    match plan {
        Err(errors) => {
            d.seen.drain_delay = Some(DEFAULT_SCALE_DOWN_DELAY);
            let next = d.unusable(
                crate::vocabulary::Reason::InvalidSpec,
                &errors.iter().map(SpecError::to_string).collect::<Vec<_>>().join("; "),
                DEFAULT_SCALE_DOWN_DELAY,
                world,
            );
            d.drive(next, None);
        }
        Ok(plan) => d.run(plan, world),
    }
    d.finish()
}

/// Decide how to hand everything back when the Rollout is deleted (the finalizer's
/// cleanup): all traffic to stable first (an intent in status), the canary drains for
/// `scale_down_delay`, then weir lets go of the Deployment, deletes the canary and the
/// finalizer goes.
///
/// `plan`, when the spec still plans: a canary not judged bad then hands its traffic back
/// as fast as stable has replicas for (`ramp_down`), as a promotion does — under an HPA
/// step by step, not all at once onto a stable the HPA shrank.
pub fn release(
    plan: Option<&Plan>,
    generation: Option<i64>,
    status: &RolloutStatus,
    world: &World,
    scale_down_delay: Duration,
    now: Timestamp,
) -> Decision {
    let mut d = Decider::new(status, world, now, 0);
    // The deletion is a generation of its own: observed, so GitOps tools stop waiting.
    d.status.observed_generation = generation;
    d.seen.deleting = true;
    d.seen.drain_delay = Some(scale_down_delay);
    let next = d.release(plan, world, scale_down_delay);
    d.drive(next, None);
    d.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    #[test]
    fn every_why_has_a_row_and_every_state_is_reached_and_left() {
        for why in Why::iter() {
            assert!(TRANSITIONS.iter().any(|r| r.why == why), "{why} has no row");
        }
        for kind in Kind::iter() {
            let left = TRANSITIONS.iter().any(|r| r.from.contains(&kind));
            let reached = kind == Initializing || TRANSITIONS.iter().any(|r| r.to == kind);
            assert!(left && reached, "{kind}: left {left}, reached {reached}");
        }
    }

    #[test]
    fn only_canary_states_are_rechecked() {
        for r in TRANSITIONS.iter().filter(|r| r.then == Then::Recheck) {
            assert!(r.to.is_canary(), "{:?}", r);
        }
    }
}
