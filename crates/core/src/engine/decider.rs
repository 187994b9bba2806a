//! The decision in progress: the state, the status being written, what was seen, and
//! what the decision produces. The state handlers (one module per state) are methods on
//! `Decider`; this module holds what they share and the loop that moves the state.

use std::time::Duration;

use jiff::Timestamp;

use super::{Action, Decision, Event, MeshConfirmation, TargetState, Then, Why, World, allowed};
use crate::hooks::{HookAnswer, HookCall};
use crate::plan::Plan;
use crate::state::{CanaryAt, Kind, Outcome, STATE_VERSION, State};
use crate::status::{Phase, RolloutStatus};
use crate::vocabulary::{ConditionType, Reason};

/// What a decision reads, borrowed once: the plan, the user's Deployment, the world.
pub(super) struct Cx<'a> {
    pub plan: &'a Plan,
    pub target: &'a TargetState,
    pub world: &'a World,
}

/// A handler's answer: stay in the state (its data may have changed), or move.
pub(super) enum Next {
    Stay,
    Go(Transition),
}

/// The next state, and why.
pub(super) struct Transition {
    pub to: State,
    pub why: Why,
}

pub(super) fn go(to: State, why: Why) -> Next {
    Next::Go(Transition { to, why })
}

/// A verb of `weir.dev/request`, taken once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verb {
    Promote,
    Abort,
    Retry,
}

/// What the decision saw and does not change.
pub(super) struct Seen {
    /// The canary weight in the routes; `None` when the routing is unusable.
    pub world_weight: Option<u32>,
    pub routes_disagree: bool,
    pub steps_total: usize,
    /// Webhook answers the controller has.
    pub answers: Vec<HookAnswer>,
    pub deleting: bool,
    /// `scaleDownDelay`, when known.
    pub drain_delay: Option<Duration>,
    /// Whether the mesh confirmed the routes as seen.
    pub mesh: MeshConfirmation,
}

impl Seen {
    /// Why the mesh may still route by an older version of the routes: it writes status
    /// and has not confirmed the current one.
    pub fn mesh_pending(&self) -> Option<&str> {
        match &self.mesh {
            MeshConfirmation::Pending(why) => Some(why),
            _ => None,
        }
    }

    /// Since when the mesh has confirmed the routes as seen, where it confirms.
    pub fn mesh_confirmed_since(&self) -> Option<Timestamp> {
        match self.mesh {
            MeshConfirmation::Confirmed { since } => Some(since),
            _ => None,
        }
    }
}

pub(super) struct Decider {
    pub now: Timestamp,
    pub state: State,
    pub status: RolloutStatus,
    pub seen: Seen,
    // What the decision produces.
    pub actions: Vec<Action>,
    pub events: Vec<Event>,
    pub asks: Vec<HookCall>,
    pub wake: Option<Timestamp>,
    pub released: bool,
    /// Why the Rollout cannot be acted on, when it cannot.
    pub invalid: Option<String>,
    /// The verdict of a step that just passed, not yet told: the next step's
    /// `StepStarted` carries it when that step starts at once (one Event per step).
    pub passed: Option<String>,
    /// A `weir.dev/request` verb not yet acted on in this decision.
    pub request: Option<Verb>,
    /// The stored state's format is not this weir's (an upgrade or a downgrade): the
    /// state was rebuilt from the status's revisions and knows nothing of a drain.
    pub state_unknown: bool,
}

/// A decision chains at most this many transitions (the longest in the table is three:
/// Initializing → Stable → Scaling → Analysing); past it the decision ends where it is.
const MAX_TRANSITIONS: usize = 8;

/// The state a status stands for. A status of an older format (or none) is trusted for
/// its stable revision only: a canary it described is withdrawn and started again.
pub fn state_of(status: &RolloutStatus) -> State {
    if status.state_version == Some(STATE_VERSION) {
        return status.state.clone();
    }
    match &status.stable_revision {
        Some(stable) => State::Stable {
            stable: stable.clone(),
            last: None,
        },
        None => State::Initializing,
    }
}

impl Decider {
    pub fn new(status: &RolloutStatus, world: &World, now: Timestamp, steps_total: usize) -> Decider {
        Decider {
            now,
            state: state_of(status),
            status: status.clone(),
            seen: Seen {
                world_weight: world.traffic.as_ref().ok().copied(),
                routes_disagree: world.routes_disagree,
                steps_total,
                answers: world.hook_answers.clone(),
                deleting: false,
                drain_delay: None,
                mesh: world.mesh.clone(),
            },
            actions: Vec::new(),
            events: Vec::new(),
            asks: Vec::new(),
            wake: None,
            released: false,
            invalid: None,
            passed: None,
            request: None,
            state_unknown: status.state_version.is_some_and(|v| v != STATE_VERSION)
                || (status.state_version.is_none() && status.stable_revision.is_some()),
        }
    }

    /// A usable Rollout: checks what it names, takes a request, runs the state's handler
    /// and the transitions it leads to.
    pub fn run(&mut self, plan: &Plan, world: &World) {
        self.seen.drain_delay = Some(plan.scale_down_delay);
        let Some(target) = &world.target else {
            let message = format!("Deployment {} not found", plan.target);
            let next = self.unusable(Reason::TargetNotFound, &message, plan.scale_down_delay, world);
            return self.drive(next, None);
        };
        if let Some(problem) = world.traffic.as_ref().err().or(world.routing_conflict.as_ref()) {
            let next = self.unusable(Reason::TrafficRoutingInvalid, problem, plan.scale_down_delay, world);
            return self.drive(next, None);
        }
        self.set_condition(
            ConditionType::SpecValid,
            true,
            Reason::Valid,
            "the Rollout and the objects it names fit",
        );
        self.request = self.take_request(world);
        if self.request == Some(Verb::Retry)
            && let Some(rev) = self.status.rolled_back_revision.take()
        {
            self.event(
                false,
                Reason::RetryRequested,
                format!("revision {rev} will be tried again"),
            );
        }
        let cx = Cx { plan, target, world };
        let first = self.handle(&cx, true);
        self.drive(first, Some(&cx));
    }

    /// The current state's handler; for a canary state, after the checks every canary
    /// state makes first (`checks`).
    fn handle(&mut self, cx: &Cx, checks: bool) -> Next {
        match self.state.kind() {
            Kind::Initializing => self.on_initializing(cx),
            Kind::Stable => self.on_stable(cx),
            kind @ (Kind::Scaling | Kind::Analysing | Kind::Paused) => {
                if checks && let next @ Next::Go(_) = self.canary_checks(cx) {
                    return next;
                }
                match kind {
                    Kind::Scaling => self.on_scaling(cx),
                    Kind::Analysing => self.on_analysing(cx),
                    _ => self.on_paused(cx),
                }
            }
            Kind::Promoting => self.on_promoting(cx),
            Kind::Draining => self.on_draining(Some(cx.target), cx.world),
        }
    }

    /// The one place the state changes: applies `next` and the transitions it leads to,
    /// each checked against `TRANSITIONS`. Without `cx` (the Rollout cannot be acted on)
    /// no handler runs after a transition.
    pub fn drive(&mut self, mut next: Next, cx: Option<&Cx>) {
        let mut a_step_passed = false;
        for _ in 0..MAX_TRANSITIONS {
            let Next::Go(t) = next else { break };
            let (from, to) = (self.state.kind(), t.to.kind());
            let row = allowed(from, t.why, to);
            debug_assert!(row.is_some(), "{from} --{}--> {to} is not in TRANSITIONS", t.why);
            a_step_passed |= t.why == Why::StepPassed;
            self.state = t.to;
            next = match (row.map(|r| r.then), cx) {
                (Some(Then::Enter), Some(cx)) => self.handle(cx, false),
                (Some(Then::Recheck), Some(cx)) => self.handle(cx, true),
                _ => Next::Stay,
            };
        }
        // A pass not carried by the next step's StepStarted (its pods were not ready) is
        // told on its own, after what the next step did.
        if a_step_passed && let Some(passed) = self.passed.take() {
            self.event(false, Reason::StepPassed, passed);
        }
    }

    /// Projects the state into the status.
    pub fn finish(mut self) -> Decision {
        let s = &mut self.status;
        s.state_version = Some(STATE_VERSION);
        s.phase = match (&self.invalid, self.seen.deleting) {
            (_, true) => Phase::Deleting,
            (Some(_), false) => Phase::InvalidSpec,
            (None, false) => self.state.phase(),
        };
        s.set_readiness(self.now);
        if let Some(message) = &self.invalid {
            s.message = message.clone();
        }
        s.stable_revision = self.state.stable().map(str::to_string);
        s.canary_revision = self.state.canary().map(|at| at.canary.clone());
        s.current_step = self.state.canary().map(|at| at.step);
        s.canary_weight = self.state.weight();
        s.step_display = match (&self.state, self.state.canary()) {
            (State::Scaling { .. } | State::Analysing { .. } | State::Paused { .. }, Some(at)) => {
                Some(format!("{}/{}", at.step + 1, self.seen.steps_total))
            }
            _ => None,
        };
        s.state = self.state;
        let requeue_after = self.wake.map(|t| until(self.now, t).max(Duration::from_millis(100)));
        Decision {
            actions: self.actions,
            status: self.status,
            events: self.events,
            requeue_after,
            released: self.released,
            asks: self.asks,
        }
    }

    /// Returns the verb of a `weir.dev/request` not yet acted on, and marks it handled.
    fn take_request(&mut self, world: &World) -> Option<Verb> {
        let raw = world.request.as_ref()?;
        if self.status.handled_request.as_ref() == Some(raw) {
            return None;
        }
        self.status.handled_request = Some(raw.clone());
        match raw.split('/').next().unwrap_or_default() {
            "promote" => Some(Verb::Promote),
            "abort" => Some(Verb::Abort),
            "retry" => Some(Verb::Retry),
            other => {
                let note = format!("ignored request {other:?}: use promote, abort or retry");
                self.event(true, Reason::UnknownRequest, note);
                None
            }
        }
    }

    /// The request, if it is `verb`: taken, so a handler run again in the same decision
    /// does not act on it twice.
    pub fn take_verb(&mut self, verb: Verb) -> bool {
        let asked = self.request == Some(verb);
        if asked {
            self.request = None;
        }
        asked
    }

    /// A problem the user must fix. A canary in progress is withdrawn (traffic to stable,
    /// its pods drain): a half-understood Rollout must not keep traffic on an unjudged
    /// version with no deadline. Anything else waits as it is. One Warning Event per
    /// distinct message.
    pub fn unusable(&mut self, reason: Reason, message: &str, scale_down_delay: Duration, world: &World) -> Next {
        let mut message = message.to_string();
        let mut next = Next::Stay;
        if self.state.kind().is_canary() && reason != Reason::TargetNotFound {
            if let Some(at) = self.at() {
                message = format!(
                    "{message}; canary {} withdrawn: all traffic is back on stable",
                    at.canary
                );
                next = self.drain(
                    Why::Unusable,
                    &at.stable,
                    &at.canary,
                    Outcome::Cancelled,
                    scale_down_delay,
                );
            }
        } else if self.state.kind() == Kind::Draining {
            next = self.on_draining(world.target.as_ref(), world);
        }
        if self.status.phase != Phase::InvalidSpec || self.status.message != message {
            self.event(true, reason, message.clone());
        }
        self.set_condition(ConditionType::SpecValid, false, reason, &message);
        self.invalid = Some(message);
        next
    }

    // ------------------------------------------------------------ shared by the states

    pub fn wake_at(&mut self, t: Timestamp) {
        self.wake = Some(self.wake.map_or(t, |w| w.min(t)));
    }

    pub fn event(&mut self, warning: bool, reason: Reason, note: String) {
        self.events.push(Event { warning, reason, note });
    }

    pub fn set_condition(&mut self, type_: ConditionType, ok: bool, reason: Reason, message: &str) {
        self.status.set_condition(type_, ok, reason, message, self.now);
    }

    /// Targets a canary weight. A second call in the same decision updates the first
    /// action in place, so the order of writes (weight down before pods change) holds.
    pub fn set_weight(&mut self, weight: u32) {
        let earlier = self
            .actions
            .iter_mut()
            .find(|a| matches!(a, Action::SetCanaryWeight(_)));
        let seen = self.seen.world_weight;
        match earlier {
            Some(action) => *action = Action::SetCanaryWeight(weight),
            None if seen.is_some_and(|w| w != weight || self.seen.routes_disagree) => {
                self.actions.push(Action::SetCanaryWeight(weight))
            }
            None => {}
        }
    }

    /// Keeps the routes at the state's weight. More canary weight than the state says (a
    /// GitOps sync restored an old one) is taken away at once; less is given back only by
    /// a controller that judged the canary itself: after a restart, not before a fresh
    /// look that does not lean against it.
    pub fn keep_weight(&mut self, weight: u32) {
        match self.seen.world_weight {
            Some(w) if w > weight => self.set_weight(weight),
            Some(w) if (w < weight || self.seen.routes_disagree) && self.status.judged_here => self.set_weight(weight),
            _ => {}
        }
    }

    pub fn pause_target(&mut self, target: Option<&TargetState>, paused: bool) {
        if target.is_some_and(|t| t.paused != paused) {
            self.actions.retain(|a| !matches!(a, Action::PauseTarget(_)));
            self.actions.push(Action::PauseTarget(paused));
        }
    }

    pub fn at(&self) -> Option<CanaryAt> {
        self.state.canary().cloned()
    }

    /// Replaces the canary data of the current state (Scaling, Analysing, Paused,
    /// Promoting): the same state with new data, not a transition.
    pub fn set_at(&mut self, new: CanaryAt) {
        match &mut self.state {
            State::Scaling { at, .. }
            | State::Analysing { at, .. }
            | State::Paused { at, .. }
            | State::Promoting { at, .. } => *at = new,
            _ => {}
        }
    }

    /// A step that waits past half its progress deadline is stuck: told once (a Warning
    /// Event, the condition `Stuck`), so a person can act before the deadline rolls it
    /// back. Woken at that point otherwise.
    pub fn stuck_if_late(&mut self, plan: &Plan, reason: Reason, what: &str, deadline: Timestamp) {
        let half = jiff::SignedDuration::try_from(plan.progress_deadline / 2).unwrap_or_default();
        let near = deadline.checked_sub(half).unwrap_or(deadline);
        if self.now < near {
            return self.wake_at(near);
        }
        let message = format!("{what}; rolled back at {} unless it moves on", ts(deadline));
        let told = self
            .status
            .condition(ConditionType::Stuck)
            .is_some_and(|c| c.status == "True" && c.message == message);
        if !told {
            self.event(true, reason, message.clone());
        }
        self.set_condition(ConditionType::Stuck, true, reason, &message);
    }

    /// The step moved on (or the canary ended): no longer stuck.
    pub fn unstuck(&mut self) {
        if self
            .status
            .condition(ConditionType::Stuck)
            .is_some_and(|c| c.status == "True")
        {
            self.set_condition(ConditionType::Stuck, false, Reason::MovedOn, "the step moved on");
        }
    }
}

pub(super) fn ts(t: Timestamp) -> String {
    t.to_string()
}

pub(super) fn parse_ts(s: &Option<String>) -> Option<Timestamp> {
    s.as_deref().and_then(|s| s.parse().ok())
}

pub(super) fn after(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

pub(super) fn until(now: Timestamp, t: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO)
}
