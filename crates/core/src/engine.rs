//! The decision engine: Rollout plan + status + observed world + `now` in, actions + new
//! status + Events out. Pure: no kube, no HTTP, no clock reads, so every behaviour is a
//! readable scenario on a simulated clock (see `tests/engine_scenarios.rs`).
//!
//! The rollout's state is `crate::state::State`; each reconcile moves it by the
//! transitions below and projects it into the status. Crash safety comes from three
//! rules. Every action is a *target*, not a delta ("canary weight is 25", "canary has 3
//! replicas"), so doing it twice is harmless. The new status is written before the
//! actions (`Decision::writes`), so a transition that takes traffic away or promotes is
//! an intent a restart completes. And a restarted controller raises no weight before a
//! fresh look of the judge (`RolloutStatus::judged_here`).

use std::time::Duration;

use jiff::Timestamp;

use crate::hooks::{HookAnswer, HookCall};
use crate::judge::{self, LastLook, MetricInput, Reading, StepClock, StepCounts, Verdict};
use crate::plan::{DEFAULT_SCALE_DOWN_DELAY, Plan};
use crate::spec::{JudgeKind, WebhookKind};
use crate::state::{CanaryAt, Outcome, PRE_WEIR_REVISION, STATE_VERSION, State};
use crate::status::{AnalysisStatus, HISTORY_LIMIT, Phase, ReleaseRecord, RollbackRecord, RolloutStatus, StepEvidence};
use crate::windows::Gate;

mod hooks;
use hooks::Said;

/// What the Deployment controller reports about a Deployment's pods.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Pods {
    /// `spec.replicas` (for the target: the HPA's choice when there is one).
    pub desired: i32,
    pub generation: i64,
    pub observed_generation: i64,
    /// `status.replicas`, `status.updatedReplicas`, `status.availableReplicas`.
    pub total: i32,
    pub updated: i32,
    pub available: i32,
}

impl Pods {
    /// At least `needed` pods run the current template and are available, and no pod of
    /// an older template is left.
    pub fn updated_and_available(&self, needed: i32) -> bool {
        self.observed_generation >= self.generation
            && self.updated >= needed
            && self.available >= needed
            && self.total == self.updated
    }
}

/// The user's Deployment as weir sees it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TargetState {
    /// Hash of `spec.template`.
    pub revision: String,
    /// The template's images, comma-separated (for the release history).
    pub image: Option<String>,
    pub paused: bool,
    pub pods: Pods,
}

impl TargetState {
    /// The Deployment runs its current template on every replica, all available.
    pub fn rolled_out(&self) -> bool {
        self.pods.updated == self.pods.desired && self.pods.updated_and_available(self.pods.desired)
    }
}

/// The canary Deployment weir owns (`<target>-canary`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct CanaryState {
    /// The `weir.dev/revision` annotation: which template it runs.
    pub revision: Option<String>,
    pub pods: Pods,
}

impl CanaryState {
    /// At least `needed` pods of `revision` are available and no pod of another revision is left.
    pub fn ready_for(&self, revision: &str, needed: i32) -> bool {
        self.revision.as_deref() == Some(revision) && self.pods.updated_and_available(needed)
    }
}

/// Everything weir observed for one Rollout, gathered by the I/O edges.
#[derive(Clone, Debug, PartialEq)]
pub struct World {
    /// `None`: the Deployment does not exist.
    pub target: Option<TargetState>,
    pub canary: Option<CanaryState>,
    /// The canary weight now in the VirtualService (the highest over the managed routes),
    /// or why the routing does not fit.
    pub traffic: Result<u32, String>,
    /// The managed routes carry different canary weights: one needs rewriting.
    pub routes_disagree: bool,
    /// The `weir.dev/request` annotation.
    pub request: Option<String>,
    /// The `weir.dev/paused` annotation is "true".
    pub pause_requested: bool,
    /// Metric readings, present when `analysis_request` said a look was due.
    pub readings: Option<Vec<(String, Reading)>>,
    /// Answers of webhook calls the controller made for earlier decisions' `asks`.
    pub hook_answers: Vec<HookAnswer>,
}

impl World {
    /// Nothing observed yet: what the engine gets for a spec too broken to observe by.
    pub fn unobserved() -> World {
        World {
            target: None,
            canary: None,
            traffic: Err("not observed".into()),
            routes_disagree: false,
            request: None,
            pause_requested: false,
            readings: None,
            hook_answers: Vec::new(),
        }
    }
}

/// A change to make in the cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Set `spec.paused` of the user's Deployment (paused, its template bumps do not roll out).
    PauseTarget(bool),
    /// Create or update the canary Deployment to run `revision` with `replicas` pods.
    ApplyCanary { revision: String, replicas: i32 },
    /// Write the canary weight (stable gets the rest) into the managed routes.
    SetCanaryWeight(u32),
    /// Let go of the user's Deployment: drop every field weir owns on it (`spec.paused`),
    /// so it is a plain Deployment again.
    ReleaseTarget,
    /// Delete the canary Deployment (deletion of the Rollout, after it drained; garbage
    /// collection would too, in its own time).
    RemoveCanary,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

/// One write of a decision, in the order it must be made.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Write<'a> {
    Status(&'a RolloutStatus),
    Act(&'a Action),
    Tell(&'a Event),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub status: RolloutStatus,
    pub events: Vec<Event>,
    /// When to look again if nothing watched changes; `None`: nothing is due (a timer
    /// per idle Rollout would be waste: the controller resyncs idle ones by a sweep).
    pub requeue_after: Option<Duration>,
    /// Deletion only: traffic is on stable, the canary drained, the Deployment let go of;
    /// the finalizer may be removed.
    pub released: bool,
    /// Webhook calls this decision waits for; the controller makes each once (by key) in
    /// the background and reports the answer in a later `World::hook_answers`.
    pub asks: Vec<HookCall>,
}

impl Decision {
    /// The writes of this decision, in order. The status comes first when its decisive
    /// part differs from `stored` (what the API server holds): the new state is the
    /// intent of the actions after it, so a crash between them leaves the intent, which
    /// the next controller completes. Events come last: they tell what was done.
    pub fn writes<'a>(&'a self, stored: &RolloutStatus) -> Vec<Write<'a>> {
        let mut writes = Vec::new();
        if self.status.decisive_part() != stored.decisive_part() {
            writes.push(Write::Status(&self.status));
        }
        writes.extend(self.actions.iter().map(Write::Act));
        writes.extend(self.events.iter().map(Write::Tell));
        writes
    }
}

/// What to ask Prometheus for, when a look is due.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnalysisRequest {
    /// Range of the counters: since the step began (sequential) or one interval (threshold).
    pub window: Duration,
    pub interval: Duration,
}

/// While the Deployment rolls out (promotion), look again this often besides its watch events.
const ROLLOUT_POLL: Duration = Duration::from_secs(30);
/// The condition that says whether a release window lets the rollout go on.
const WINDOW_CONDITION: &str = "WithinReleaseWindow";
/// The condition that says a step has waited past half its progress deadline.
const STUCK_CONDITION: &str = "Stuck";

fn ts(t: Timestamp) -> String {
    t.to_string()
}

/// A rollback's evidence in one line: the step, the metric, its value against the bound,
/// and the judge's reason.
fn rollback_evidence(rb: &RollbackRecord) -> String {
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

fn parse_ts(s: &Option<String>) -> Option<Timestamp> {
    s.as_deref().and_then(|s| s.parse().ok())
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

fn until(now: Timestamp, t: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO)
}

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

/// Is a look at the metrics due now? The controller asks before querying Prometheus.
/// While analysing: at every tick. While scaling after a restart: at once (then at every
/// tick while it fails), because no weight is raised before a fresh look
/// (`RolloutStatus::judged_here`).
pub fn analysis_request(plan: &Plan, status: &RolloutStatus, now: Timestamp) -> Option<AnalysisRequest> {
    let since = match state_of(status) {
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

/// The canary weight to move to while traffic returns to a ready stable at the end of a
/// promotion: the lowest (0, or a step's weight) for which stable has replicas enough —
/// at once without an HPA. With one, stable was shrunk while the canary carried its load
/// and only grows back with load: then one step down at a time, each once stable has
/// caught up with the share it has, so it is never short by more than one step's share.
pub fn ramp_down(plan: &Plan, at: &CanaryAt, stable_available: i32) -> u32 {
    let carries = |canary_weight: u32| {
        i64::from(stable_available) * 100 >= i64::from(at.reference_replicas) * i64::from(100 - canary_weight.min(100))
    };
    let lower: Vec<u32> = std::iter::once(0)
        .chain(plan.steps.iter().map(|s| s.weight))
        .filter(|w| *w < at.weight)
        .collect();
    if let Some(w) = lower.iter().copied().find(|w| carries(*w)) {
        return w;
    }
    match (carries(at.weight), lower.last()) {
        (true, Some(next)) => *next,
        _ => at.weight,
    }
}

/// Where a step that passed at 0-based `index` goes: the next step, the same step when
/// it passed below its weight (`spec.steps` changed mid-step: the weight is raised and
/// judged again), or `None`: promotion.
fn next_step(plan: &Plan, at: &CanaryAt, index: usize) -> Option<usize> {
    let index = index.min(plan.last_step());
    match at.weight < plan.step(index).weight {
        true => Some(index),
        false => (index < plan.last_step()).then_some(index + 1),
    }
}

/// The release window a step that passed at `index` goes through.
fn gate_after(plan: &Plan, at: &CanaryAt, index: usize) -> Gate {
    match next_step(plan, at, index) {
        Some(_) => Gate::Advance,
        None => Gate::Promote,
    }
}

/// Decide what to do for one Rollout.
pub fn decide(
    plan: Result<&Plan, &[String]>,
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
            d.drain_delay = Some(DEFAULT_SCALE_DOWN_DELAY);
            d.unusable("InvalidSpec", &errors.join("; "), DEFAULT_SCALE_DOWN_DELAY, world)
        }
        Ok(plan) => d.run(plan, world),
    }
    d.finish()
}

/// How soon a deletion that has not yet seen the canary's traffic gone looks again.
const RELEASE_RETRY: Duration = Duration::from_secs(5);

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
    status: &RolloutStatus,
    world: &World,
    scale_down_delay: Duration,
    now: Timestamp,
) -> Decision {
    let mut d = Decider::new(status, world, now, 0);
    d.deleting = true;
    d.drain_delay = Some(scale_down_delay);
    d.release(plan, world, scale_down_delay);
    d.finish()
}

/// How soon a deletion stepping traffic back to stable looks again (a change of
/// stable's replicas wakes it sooner).
const RELEASE_STEP_POLL: Duration = Duration::from_secs(5);

struct Decider {
    now: Timestamp,
    state: State,
    status: RolloutStatus,
    actions: Vec<Action>,
    events: Vec<Event>,
    wake: Option<Timestamp>,
    steps_total: usize,
    /// The canary weight in the VirtualService; `None` when the routing is unusable.
    world_weight: Option<u32>,
    routes_disagree: bool,
    /// The verdict of a step that just passed, not yet told: the next step's
    /// `StepStarted` carries it when that step starts at once (one Event per step).
    passed: Option<String>,
    /// Why the Rollout cannot be acted on, when it cannot.
    invalid: Option<String>,
    deleting: bool,
    released: bool,
    /// `scaleDownDelay`, when known.
    drain_delay: Option<Duration>,
    /// Webhook answers the controller has, and the calls this decision waits for.
    answers: Vec<HookAnswer>,
    asks: Vec<HookCall>,
    /// The stored state's format is not this weir's (an upgrade or a downgrade): the
    /// state was rebuilt from the status's revisions and knows nothing of a drain.
    state_unknown: bool,
}

impl Decider {
    fn new(status: &RolloutStatus, world: &World, now: Timestamp, steps_total: usize) -> Decider {
        Decider {
            now,
            state: state_of(status),
            status: status.clone(),
            actions: Vec::new(),
            events: Vec::new(),
            wake: None,
            steps_total,
            world_weight: world.traffic.as_ref().ok().copied(),
            routes_disagree: world.routes_disagree,
            passed: None,
            invalid: None,
            deleting: false,
            released: false,
            drain_delay: None,
            answers: world.hook_answers.clone(),
            asks: Vec::new(),
            state_unknown: status.state_version.is_some_and(|v| v != STATE_VERSION)
                || (status.state_version.is_none() && status.stable_revision.is_some()),
        }
    }

    /// Projects the state into the status.
    fn finish(mut self) -> Decision {
        let s = &mut self.status;
        s.state_version = Some(STATE_VERSION);
        s.phase = match (&self.invalid, self.deleting) {
            (_, true) => Phase::Deleting,
            (Some(_), false) => Phase::InvalidSpec,
            (None, false) => self.state.phase(),
        };
        if let Some(message) = &self.invalid {
            s.message = message.clone();
        }
        s.stable_revision = self.state.stable().map(str::to_string);
        s.canary_revision = self.state.canary().map(|at| at.canary.clone());
        s.current_step = self.state.canary().map(|at| at.step);
        s.canary_weight = self.state.weight();
        s.step_display = match (&self.state, self.state.canary()) {
            (State::Scaling { .. } | State::Analysing { .. } | State::Paused { .. }, Some(at)) => {
                Some(format!("{}/{}", at.step + 1, self.steps_total))
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

    fn wake_at(&mut self, t: Timestamp) {
        self.wake = Some(self.wake.map_or(t, |w| w.min(t)));
    }

    fn event(&mut self, warning: bool, reason: &str, note: String) {
        self.events.push(Event {
            warning,
            reason: reason.into(),
            note,
        });
    }

    fn set_condition(&mut self, type_: &str, ok: bool, reason: &str, message: &str) {
        self.status.set_condition(type_, ok, reason, message, self.now);
    }

    /// Targets a canary weight. A second call in the same decision updates the first
    /// action in place, so the order of writes (weight down before pods change) holds.
    fn set_weight(&mut self, weight: u32) {
        let earlier = self
            .actions
            .iter_mut()
            .find(|a| matches!(a, Action::SetCanaryWeight(_)));
        match earlier {
            Some(action) => *action = Action::SetCanaryWeight(weight),
            None if self.world_weight.is_some_and(|w| w != weight || self.routes_disagree) => {
                self.actions.push(Action::SetCanaryWeight(weight))
            }
            None => {}
        }
    }

    /// Keeps the VirtualService at the state's weight. More canary weight than the state
    /// says (a GitOps sync restored an old one) is taken away at once; less is given back
    /// only by a controller that judged the canary itself: after a restart, not before a
    /// fresh look that does not lean against it.
    fn keep_weight(&mut self, weight: u32) {
        match self.world_weight {
            Some(w) if w > weight => self.set_weight(weight),
            Some(w) if (w < weight || self.routes_disagree) && self.status.judged_here => self.set_weight(weight),
            _ => {}
        }
    }

    fn pause_target(&mut self, target: Option<&TargetState>, paused: bool) {
        if target.is_some_and(|t| t.paused != paused) {
            self.actions.retain(|a| !matches!(a, Action::PauseTarget(_)));
            self.actions.push(Action::PauseTarget(paused));
        }
    }

    fn at(&self) -> Option<CanaryAt> {
        self.state.canary().cloned()
    }

    /// Replaces the canary data of the current state (Scaling, Analysing, Paused, Promoting).
    fn set_at(&mut self, new: CanaryAt) {
        match &mut self.state {
            State::Scaling { at, .. }
            | State::Analysing { at, .. }
            | State::Paused { at, .. }
            | State::Promoting { at, .. } => *at = new,
            _ => {}
        }
    }

    /// A problem the user must fix. A canary in progress is withdrawn (traffic to stable,
    /// its pods drain): a half-understood Rollout must not keep traffic on an unjudged
    /// version with no deadline. Anything else waits as it is. One Warning Event per
    /// distinct message.
    fn unusable(&mut self, reason: &str, message: &str, scale_down_delay: Duration, world: &World) {
        let mut message = message.to_string();
        let canary = matches!(
            self.state,
            State::Scaling { .. } | State::Analysing { .. } | State::Paused { .. }
        );
        if canary && reason != "TargetNotFound" {
            if let Some(at) = self.at() {
                message = format!(
                    "{message}; canary {} withdrawn: all traffic is back on stable",
                    at.canary
                );
                self.drain(&at.stable, &at.canary, Outcome::Cancelled, scale_down_delay);
            }
        } else if matches!(self.state, State::Draining { .. }) {
            self.on_draining(world.target.as_ref(), world);
        }
        if self.status.phase != Phase::InvalidSpec || self.status.message != message {
            self.event(true, reason, message.clone());
        }
        self.set_condition("SpecValid", false, reason, &message);
        self.invalid = Some(message);
    }

    fn run(&mut self, plan: &Plan, world: &World) {
        self.drain_delay = Some(plan.scale_down_delay);
        let Some(target) = &world.target else {
            let message = format!("Deployment {} not found", plan.target);
            return self.unusable("TargetNotFound", &message, plan.scale_down_delay, world);
        };
        if let Err(problem) = &world.traffic {
            return self.unusable("TrafficRoutingInvalid", problem, plan.scale_down_delay, world);
        }
        self.set_condition("SpecValid", true, "Valid", "the Rollout and the objects it names fit");
        let request = self.take_request(world);
        if request.as_deref() == Some("retry")
            && let Some(rev) = self.status.rolled_back_revision.take()
        {
            self.event(false, "RetryRequested", format!("revision {rev} will be tried again"));
        }
        match self.state.clone() {
            State::Initializing => self.initialize(plan, target, world),
            State::Stable { stable, .. } => self.on_stable(plan, target, world, &stable),
            State::Scaling { .. } | State::Analysing { .. } | State::Paused { .. } => {
                self.on_canary(plan, target, world, request.as_deref())
            }
            State::Promoting { .. } => self.on_promoting(plan, target, request.as_deref()),
            State::Draining { .. } => self.on_draining(Some(target), world),
        }
    }

    /// Returns the verb of a `weir.dev/request` not yet acted on, and marks it handled.
    fn take_request(&mut self, world: &World) -> Option<String> {
        let raw = world.request.as_ref()?;
        if self.status.handled_request.as_ref() == Some(raw) {
            return None;
        }
        self.status.handled_request = Some(raw.clone());
        let verb = raw.split('/').next().unwrap_or_default().to_string();
        match verb.as_str() {
            "promote" | "abort" | "retry" => Some(verb),
            other => {
                self.event(
                    true,
                    "UnknownRequest",
                    format!("ignored request {other:?}: use promote, abort or retry"),
                );
                None
            }
        }
    }

    // ----------------------------------------------------------------- Initializing

    /// Takes the Deployment over once its own rollout is done. A Deployment the user
    /// paused with a template change not rolled out is taken over with that change
    /// pending: what its pods run is not the template, so the template is judged as a
    /// canary instead of being recorded as stable (and never shipping).
    fn initialize(&mut self, plan: &Plan, target: &TargetState, world: &World) {
        let pending = target.paused && !target.rolled_out();
        if !target.paused && !target.rolled_out() {
            self.status.message = format!(
                "waiting for Deployment {} to finish its own rollout ({}/{} updated, {} available) before taking it over",
                plan.target, target.pods.updated, target.pods.desired, target.pods.available
            );
            return;
        }
        let stable = if pending { PRE_WEIR_REVISION } else { &target.revision };
        let note = match pending {
            true => format!(
                "took over paused Deployment {} with a template change not rolled out: revision {} is judged as a canary",
                plan.target, target.revision
            ),
            false => format!("took over Deployment {} at revision {}", plan.target, target.revision),
        };
        self.event(false, "Initialized", note);
        self.state = State::Stable {
            stable: stable.to_string(),
            last: None,
        };
        self.on_stable(plan, target, world, stable);
    }

    // ----------------------------------------------------------------------- Stable

    /// No canary: all traffic on stable, the Deployment paused (so a bump waits to be
    /// judged), the canary scaled to zero. A template change starts a canary.
    fn on_stable(&mut self, plan: &Plan, target: &TargetState, world: &World, stable: &str) {
        self.after_release(plan);
        if self.world_weight.is_some_and(|w| w > 0) {
            // Canary weight where none should be (a sync restored an old VirtualService):
            // off at once, and the pods it reached drain before they go.
            let canary = world
                .canary
                .as_ref()
                .and_then(|c| c.revision.clone())
                .unwrap_or_default();
            let last = match &self.state {
                State::Stable { last, .. } => last.unwrap_or(Outcome::Cancelled),
                _ => Outcome::Cancelled,
            };
            self.event(
                true,
                "TrafficReverted",
                "canary weight found while no canary runs: back on stable".into(),
            );
            return self.drain(stable, &canary, last, plan.scale_down_delay);
        }
        self.pause_target(Some(target), true);
        if let Some(canary) = &world.canary
            && canary.pods.desired > 0
            && self.state_unknown
        {
            // The state was rebuilt without its drain: the canary's pods may have carried
            // traffic moments ago. They drain before they go, as after any release.
            self.state_unknown = false;
            let revision = canary.revision.clone().unwrap_or_default();
            return self.drain(stable, &revision, Outcome::Cancelled, plan.scale_down_delay);
        }
        if let Some(canary) = &world.canary
            && canary.pods.desired > 0
        {
            self.actions.push(Action::ApplyCanary {
                revision: canary.revision.clone().unwrap_or_else(|| target.revision.clone()),
                replicas: 0,
            });
        }
        if target.revision == stable {
            if self.state.phase() == Phase::Healthy {
                self.status.message = format!("stable runs revision {stable}");
            }
            return;
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
            return;
        }
        let what = format!("revision {} waits to start", target.revision);
        if self.window_closed(plan, Gate::Start, &what) {
            return;
        }
        self.start_canary(plan, target, world, stable);
    }

    /// Is `gate` outside the Rollout's release windows now? Then the message says what
    /// waits and until when, the condition `WithinReleaseWindow` is False (an Event when
    /// it becomes so), and weir wakes when the window opens.
    fn window_closed(&mut self, plan: &Plan, gate: Gate, what: &str) -> bool {
        let Some(windows) = &plan.windows else {
            return false;
        };
        if windows.open(gate, self.now) {
            let message = format!("may {} now: {}", gate.verb(), windows.describe(gate));
            self.set_condition(WINDOW_CONDITION, true, "Open", &message);
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
            .condition(WINDOW_CONDITION)
            .is_none_or(|c| c.status == "True");
        if was_open {
            self.event(false, "WaitingForWindow", message.clone());
        }
        self.set_condition(WINDOW_CONDITION, false, "Closed", &message);
        self.status.message = message;
        if let Some(t) = next {
            self.wake_at(t);
        }
        true
    }

    fn start_canary(&mut self, plan: &Plan, target: &TargetState, world: &World, stable: &str) {
        self.event(
            false,
            "CanaryStarted",
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
        self.set_condition("Progressing", true, "CanaryStarted", &started);
        let at = CanaryAt {
            stable: stable.to_string(),
            canary: target.revision.clone(),
            step: 0,
            weight: 0,
            reference_replicas: target.pods.desired,
        };
        self.state = State::Scaling {
            at,
            since: self.now,
            drain_until: None,
        };
        self.scale(plan, target, world);
    }

    // ----------------------------------------------------- Scaling, Analysing, Paused

    fn on_canary(&mut self, plan: &Plan, target: &TargetState, world: &World, request: Option<&str>) {
        let Some(at) = self.at() else { return };
        if target.revision == at.stable {
            return self.cancel(plan, &at, target);
        }
        if target.revision != at.canary {
            return self.replace(plan, &at, target, world);
        }
        if request == Some("abort") {
            let reason = "aborted by request (weir abort)".to_string();
            return self.rollback(plan, target, None, None, String::new(), reason);
        }
        self.pause_target(Some(target), true);
        if at.weight > 0 && world.canary.as_ref().is_none_or(|c| c.pods.available == 0) {
            self.withdraw_from_lost_pods(&at);
        }
        self.fit_to_steps(plan);
        let Some(at) = self.at() else { return };
        if request == Some("promote") {
            let index = at.step as usize;
            self.event(
                false,
                "PromoteRequested",
                format!("step {} passed by request (weir promote)", index + 1),
            );
            self.confirmed_by_request(plan, &at.canary, index);
            return self.advance(plan, target, world, index);
        }
        if world.pause_requested {
            return self.hold_paused(plan);
        }
        if let State::Paused { at, analysing } = self.state.clone() {
            self.event(false, "Resumed", format!("resumed at step {}", at.step + 1));
            // Evidence gathered before the pause still counts; the step restarts its clock.
            self.state = match analysing {
                true => State::Analysing { at, started: self.now },
                false => State::Scaling {
                    at,
                    since: self.now,
                    drain_until: None,
                },
            };
        }
        match self.state {
            State::Scaling { .. } => self.scale(plan, target, world),
            _ => self.analyse(plan, target, world),
        }
    }

    /// `spec.steps` may change at any point of a release. The step in progress keeps its
    /// index; past the new end it becomes the new last step. A weight in place above that
    /// step's weight is lowered at once and the step starts over (taking traffic away needs
    /// no verdict); a weight below it is raised only once the step's analysis passed at
    /// the weight in place (`advance` stays on the step). So an edit never raises a weight
    /// without a passing verdict and never reads a step that is not there.
    fn fit_to_steps(&mut self, plan: &Plan) {
        let Some(mut at) = self.at() else { return };
        let index = (at.step as usize).min(plan.last_step());
        let weight = plan.step(index).weight;
        if index == at.step as usize && at.weight <= weight {
            return;
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
        self.event(false, "StepsChanged", note);
        // A lowered step starts over at its weight, analysed from now: the weight in place
        // never passed there, so it is raised again only after a pass.
        self.state = match self.state.clone() {
            State::Paused { analysing, .. } => State::Paused {
                at,
                analysing: analysing || lowered,
            },
            State::Analysing { started, .. } if !lowered => State::Analysing { at, started },
            State::Scaling { since, drain_until, .. } if !lowered => State::Scaling { at, since, drain_until },
            _ => {
                self.set_weight(at.weight);
                let a = self.status.analysis.get_or_insert_with(AnalysisStatus::default);
                a.passed_at = None;
                a.next_check_at = Some(ts(after(self.now, plan.tick)));
                State::Analysing { at, started: self.now }
            }
        };
    }

    /// The template went back to stable: the canary is cancelled and drains.
    fn cancel(&mut self, plan: &Plan, at: &CanaryAt, target: &TargetState) {
        self.event(
            false,
            "CanaryCancelled",
            format!(
                "template reverted to stable revision {}; canary {} cancelled",
                at.stable, at.canary
            ),
        );
        self.pause_target(Some(target), true);
        self.status.analysis = None;
        self.status.message = format!("canary {} cancelled: the template is back on stable", at.canary);
        self.drain(&at.stable, &at.canary, Outcome::Cancelled, plan.scale_down_delay);
    }

    /// A newer template mid-canary: the old canary's traffic goes at once, its pods drain,
    /// then they run the newest revision from step 1.
    fn replace(&mut self, plan: &Plan, at: &CanaryAt, target: &TargetState, world: &World) {
        self.event(
            false,
            "NewerRevision",
            format!(
                "revision {} replaces {} mid-canary; analysis restarts at step 1",
                target.revision, at.canary
            ),
        );
        let had_traffic = at.weight > 0 || self.world_weight.is_some_and(|w| w > 0);
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
        self.state = State::Scaling {
            at: next,
            since: self.now,
            drain_until: had_traffic.then(|| after(self.now, plan.scale_down_delay)),
        };
        self.scale(plan, target, world);
    }

    /// Never send traffic to a destination without ready pods: withdraw it and wait for
    /// the pods again (the progress deadline rolls back a canary that stays down).
    fn withdraw_from_lost_pods(&mut self, at: &CanaryAt) {
        self.event(
            true,
            "CanaryNotReady",
            format!(
                "step {}: canary has no ready pods; its traffic is withdrawn",
                at.step + 1
            ),
        );
        self.set_weight(0);
        let at = CanaryAt {
            weight: 0,
            ..at.clone()
        };
        self.state = match &self.state {
            State::Paused { analysing, .. } => State::Paused {
                at,
                analysing: *analysing,
            },
            _ => State::Scaling {
                at,
                since: self.now,
                drain_until: None,
            },
        };
    }

    /// A person holds the canary: the weight stays, the deadline does not run.
    fn hold_paused(&mut self, plan: &Plan) {
        let Some(at) = self.at() else { return };
        let analysing = match &self.state {
            State::Paused { analysing, .. } => *analysing,
            State::Analysing { .. } => true,
            _ => false,
        };
        self.keep_weight(at.weight);
        self.status.message = format!(
            "paused by request at step {}/{} ({}% canary)",
            at.step + 1,
            plan.steps.len(),
            at.weight
        );
        self.state = State::Paused { at, analysing };
    }

    /// Replicas the canary needs for its step: the step's share of the replicas that
    /// carry all the traffic. That reference is stable's replica count when the canary
    /// started, raised when stable grows (an HPA answering more load) and never lowered
    /// while the canary runs: an HPA shrinks stable as the canary takes its load, and the
    /// canary must not shrink with it.
    fn size_canary(&mut self, plan: &Plan, target: &TargetState) -> i32 {
        let Some(mut at) = self.at() else { return 1 };
        at.reference_replicas = at.reference_replicas.max(target.pods.desired);
        let step = plan.step(at.step as usize);
        let needed = Plan::canary_replicas(at.reference_replicas, step.weight);
        self.set_at(at);
        needed
    }

    /// After a restart: takes the verdict of a fresh look, when there is one, as leave to
    /// raise weights again unless it leans against the canary.
    fn confirm(&mut self, plan: &Plan, world: &World, since: Timestamp) {
        if self.status.judged_here {
            return;
        }
        let Some(readings) = &world.readings else { return };
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

    /// Scaling: make sure the canary has its pods, and write the weight once they are ready.
    fn scale(&mut self, plan: &Plan, target: &TargetState, world: &World) {
        let State::Scaling { since, drain_until, .. } = self.state.clone() else {
            return;
        };
        self.confirm(plan, world, since);
        let needed = self.size_canary(plan, target);
        let Some(at) = self.at() else { return };
        if let Some(reason) = self.rollback_requested(plan, &at, since) {
            return self.rollback(plan, target, None, None, String::new(), reason);
        }
        let step = plan.step(at.step as usize);
        let canary = world.canary.clone().unwrap_or_default();
        let drain_until = drain_until.map(|t| self.drain_from_now_if_weighted(t));
        if let Some(drain_until) = drain_until.filter(|t| *t > self.now)
            && canary.revision.as_deref() != Some(at.canary.as_str())
        {
            self.keep_weight(at.weight);
            self.status.message = format!(
                "step {}: the old canary drains before it runs revision {}",
                at.step + 1,
                at.canary
            );
            return self.wake_at(drain_until);
        }
        let applied = canary.revision.as_deref() == Some(at.canary.as_str()) && canary.pods.desired == needed;
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
                Said::Yes => return self.start_step(plan, at, step.weight, canary.pods.available),
                Said::No(reason) => return self.rollback(plan, target, None, None, String::new(), reason),
                Said::Waiting(message) => asking = Some(message),
            }
        }
        self.keep_weight(at.weight);
        self.not_started(plan, target, since, (needed, canary.pods.available), asking);
    }

    /// The step could not start (pods not ready, a webhook not yet yes, no fresh look
    /// after a restart): rolls back once the progress deadline passed, else says why it waits.
    fn not_started(
        &mut self,
        plan: &Plan,
        target: &TargetState,
        since: Timestamp,
        (needed, available): (i32, i32),
        asking: Option<String>,
    ) {
        let Some(at) = self.at() else { return };
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
            return self.rollback(plan, target, None, None, String::new(), reason);
        }
        self.wake_at(deadline);
        let steps = plan.steps.len();
        let step = at.step + 1;
        let (reason, what) = match (&asking, self.status.judged_here) {
            (Some(_), _) => ("DeadlineNear", "the pre-rollout webhooks have not said yes"),
            (None, true) => ("WaitingForPods", "the canary's pods are not ready"),
            (None, false) => ("DeadlineNear", "no fresh look of the judge since a restart"),
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
    }

    /// The step's pods are ready: its weight is written and the judge starts looking.
    fn start_step(&mut self, plan: &Plan, at: CanaryAt, weight: u32, ready: i32) {
        self.unstuck();
        self.set_weight(weight);
        if let Some(r) = self.status.release.as_mut() {
            r.step = at.step + 1;
        }
        let at = CanaryAt { weight, ..at };
        let first_look = match plan.judge {
            JudgeKind::Sequential => plan.tick,
            JudgeKind::Threshold => plan.step(at.step as usize).duration,
        };
        if let Some(a) = self.status.analysis.as_mut() {
            a.next_check_at = Some(ts(after(self.now, first_look)));
        }
        self.wake_at(after(self.now, first_look));
        self.status.message = format!(
            "step {}/{}: canary at {weight}%, analysing",
            at.step + 1,
            plan.steps.len()
        );
        let mut note = format!(
            "step {}/{}: canary weight {weight}% ({ready} canary pods ready)",
            at.step + 1,
            plan.steps.len()
        );
        if let Some(passed) = self.passed.take() {
            note = format!("{note}; {passed}");
        }
        self.event(false, "StepStarted", note);
        self.state = State::Analysing { at, started: self.now };
    }

    /// Analysing: keep the canary sized and its weight in place, and judge each look.
    fn analyse(&mut self, plan: &Plan, target: &TargetState, world: &World) {
        let State::Analysing { started, .. } = self.state.clone() else {
            return;
        };
        if self.status.analysis.is_none() {
            self.status.analysis = Some(AnalysisStatus::default());
        }
        let needed = self.size_canary(plan, target);
        let Some(at) = self.at() else { return };
        if world.canary.as_ref().map(|c| c.pods.desired) != Some(needed) {
            self.actions.push(Action::ApplyCanary {
                revision: at.canary.clone(),
                replicas: needed,
            });
        }
        if let Some(reason) = self.rollback_requested(plan, &at, started) {
            return self.rollback(plan, target, None, None, String::new(), reason);
        }
        let index = at.step as usize;
        let step = plan.step(index);
        let due = after(started, step.duration);
        let deadline = after(due, plan.progress_deadline);
        let Some(readings) = &world.readings else {
            self.keep_weight(at.weight);
            if self.restart_if_raised(plan, &at) {
                return;
            }
            let next = self
                .status
                .analysis
                .as_ref()
                .and_then(|a| parse_ts(&a.next_check_at))
                .unwrap_or(self.now);
            return self.wake_at(next);
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
        if !against && self.restart_if_raised(plan, &at) {
            return;
        }
        let note = format!(
            "step {}/{} ({}%): {}",
            index + 1,
            plan.steps.len(),
            at.weight,
            judgement.reason
        );
        self.act_on(plan, target, world, judgement, note, (due, deadline));
    }

    /// A step whose weight was not in place (weir restarted between writing the status
    /// and writing the weight, and raises no weight before a fresh look) begins when the
    /// weight is written: its clock restarts, so no look taken at the lower weight passes
    /// the step.
    fn restart_if_raised(&mut self, plan: &Plan, at: &CanaryAt) -> bool {
        let raised = self.world_weight.is_some_and(|w| w < at.weight)
            && self.actions.contains(&Action::SetCanaryWeight(at.weight));
        if raised {
            let first_look = match plan.judge {
                JudgeKind::Sequential => plan.tick,
                JudgeKind::Threshold => plan.step(at.step as usize).duration,
            };
            if let Some(a) = self.status.analysis.as_mut() {
                a.next_check_at = Some(ts(after(self.now, first_look)));
                a.passed_at = None;
            }
            self.wake_at(after(self.now, first_look));
            self.status.message = format!(
                "step {}/{}: canary weight {}% written again after a restart; the step's analysis starts now",
                at.step + 1,
                plan.steps.len(),
                at.weight
            );
            self.state = State::Analysing {
                at: at.clone(),
                started: self.now,
            };
        }
        raised
    }

    fn act_on(
        &mut self,
        plan: &Plan,
        target: &TargetState,
        world: &World,
        judgement: judge::Judgement,
        note: String,
        (due, deadline): (Timestamp, Timestamp),
    ) {
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
                self.advance_within_windows(plan, target, world, index);
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
                    return self.rollback(plan, target, Some(metric), value, bound, judgement.reason);
                }
                if analysis.passed_at.is_some() {
                    return self.advance_within_windows(plan, target, world, index);
                }
                self.event(
                    true,
                    "AnalysisBreach",
                    format!("{note}; breach {failures} of {} tolerated", plan.failure_limit),
                );
                self.hold(plan, note, deadline, target, plan.interval);
            }
            Verdict::Error => {
                analysis.last_verdict = Some("Error".into());
                analysis.consecutive_errors += 1;
                analysis.last_error = Some(judgement.reason.clone());
                let passed = analysis.passed_at.is_some();
                // One Event when Prometheus starts failing, not one per look.
                if analysis.consecutive_errors == 1 {
                    self.event(true, "AnalysisError", note.clone());
                }
                if passed {
                    // No weight is raised on a look that saw nothing: wait on.
                    return self.wait_for_window(plan, index, None);
                }
                self.hold(plan, note, deadline, target, plan.tick);
            }
            Verdict::Inconclusive => {
                analysis.last_verdict = Some("Inconclusive".into());
                analysis.consecutive_errors = 0;
                if analysis.passed_at.is_some() {
                    // The step passed before; quiet looks (night traffic) do not undo it.
                    return self.advance_within_windows(plan, target, world, index);
                }
                let next = if plan.judge == JudgeKind::Threshold && self.now < due {
                    until(self.now, due)
                } else {
                    plan.tick
                };
                self.hold(plan, note, deadline, target, next);
            }
        }
    }

    /// A passed step gives way to the next step (or promotion) if its window is open;
    /// otherwise it waits.
    fn advance_within_windows(&mut self, plan: &Plan, target: &TargetState, world: &World, index: usize) {
        let Some(at) = self.at() else { return };
        let gate = gate_after(plan, &at, index);
        let what = format!("step {}/{} passed", index + 1, plan.steps.len());
        if self.window_closed(plan, gate, &what) {
            return self.wait_for_window(plan, index, Some(gate));
        }
        match self.hooks_say(plan, hooks::confirmation(gate), &at.canary, index as u32 + 1) {
            Said::Yes => self.advance(plan, target, world, index),
            Said::No(reason) => self.rollback(plan, target, None, None, String::new(), reason),
            Said::Waiting(asking) => {
                self.wait_for_window(plan, index, Some(gate));
                self.status.message = format!("{what}; {asking} (`weir promote` says yes too)");
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

    fn judge(&self, plan: &Plan, readings: &[(String, Reading)], clock: StepClock) -> judge::Judgement {
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
    fn hold(&mut self, plan: &Plan, note: String, deadline: Timestamp, target: &TargetState, next: Duration) {
        if self.now >= deadline {
            let reason = format!(
                "no passing verdict within progressDeadline {} after the step was due; last: {note}",
                humantime::format_duration(plan.progress_deadline)
            );
            return self.rollback(plan, target, None, None, String::new(), reason);
        }
        let next_at = after(self.now, next).min(deadline);
        if let Some(a) = self.status.analysis.as_mut() {
            a.next_check_at = Some(ts(next_at));
        }
        if let Some(at) = self.at() {
            let what = format!("step {}/{}: no passing verdict yet", at.step + 1, plan.steps.len());
            self.stuck_if_late(plan, "DeadlineNear", &what, deadline);
        }
        self.status.message = format!("holding: {note}");
        self.wake_at(next_at);
    }

    /// A step that waits past half its progress deadline is stuck: told once (a Warning
    /// Event, the condition `Stuck`), so a person can act before the deadline rolls it
    /// back. Woken at that point otherwise.
    fn stuck_if_late(&mut self, plan: &Plan, reason: &str, what: &str, deadline: Timestamp) {
        let half = jiff::SignedDuration::try_from(plan.progress_deadline / 2).unwrap_or_default();
        let near = deadline.checked_sub(half).unwrap_or(deadline);
        if self.now < near {
            return self.wake_at(near);
        }
        let message = format!("{what}; rolled back at {} unless it moves on", ts(deadline));
        let told = self
            .status
            .condition(STUCK_CONDITION)
            .is_some_and(|c| c.status == "True" && c.message == message);
        if !told {
            self.event(true, reason, message.clone());
        }
        self.set_condition(STUCK_CONDITION, true, reason, &message);
    }

    /// The step moved on (or the canary ended): no longer stuck.
    fn unstuck(&mut self) {
        if self
            .status
            .condition(STUCK_CONDITION)
            .is_some_and(|c| c.status == "True")
        {
            self.set_condition(STUCK_CONDITION, false, "MovedOn", "the step moved on");
        }
    }

    /// Records the step's evidence, then moves to the next step or to promotion.
    fn advance(&mut self, plan: &Plan, target: &TargetState, world: &World, index: usize) {
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
        let Some(at) = self.at() else { return };
        if let Some(next) = next_step(plan, &at, index) {
            let next = CanaryAt {
                step: next as u32,
                ..at
            };
            self.state = State::Scaling {
                at: next,
                since: self.now,
                drain_until: None,
            };
            self.scale(plan, target, world);
            // The next step could not start at once (more canary pods first).
            return self.tell_passed();
        }
        self.tell_passed();
        // Promotion: the stable track (the user's Deployment) rolls out the new template
        // while the canary keeps the traffic it has; traffic returns once stable is ready.
        self.pause_target(Some(target), false);
        self.status.message = format!(
            "promoting revision {}: Deployment {} rolls out the new template",
            at.canary, plan.target
        );
        self.event(false, "Promoting", self.status.message.clone());
        self.state = State::Promoting {
            at,
            since: self.now,
            stalled: false,
            interrupted_by: None,
        };
        self.wake_at(after(self.now, ROLLOUT_POLL));
    }

    fn tell_passed(&mut self) {
        if let Some(passed) = self.passed.take() {
            self.event(false, "StepPassed", passed);
        }
    }

    // -------------------------------------------------------------------- Promoting

    /// The Deployment rolls out the canary's template; the canary keeps its traffic until
    /// every stable replica is updated and available. A revert rolls the Deployment back
    /// the same way and cancels; a newer template is stopped (paused) and reported.
    fn on_promoting(&mut self, plan: &Plan, target: &TargetState, request: Option<&str>) {
        let State::Promoting {
            at,
            since,
            stalled,
            interrupted_by,
        } = self.state.clone()
        else {
            return;
        };
        if request == Some("abort") {
            self.event(
                true,
                "AbortRefused",
                format!(
                    "revision {} passed every step and Deployment {} is rolling it out; revert its template to roll back",
                    at.canary, plan.target
                ),
            );
        }
        self.keep_weight(at.weight);
        let toward = if target.revision == at.canary || target.revision == at.stable {
            target.revision.clone()
        } else {
            return self.interrupt_promotion(plan, target, &at, interrupted_by);
        };
        self.pause_target(Some(target), false);
        if !target.rolled_out() || target.paused {
            return self.wait_for_stable(plan, target, &at, since, stalled);
        }
        // Stable is ready on its template. Traffic goes back to it as fast as it has
        // replicas for: at once without an HPA, step by step with one.
        let next = ramp_down(plan, &at, target.pods.available);
        if next > 0 {
            return self.step_back(plan, target, at, next, since, stalled);
        }
        // All traffic back on stable, then re-pause so the next bump waits.
        self.pause_target(Some(target), true);
        let outcome = match toward == at.canary {
            true => Outcome::Promoted,
            false => {
                self.event(
                    false,
                    "CanaryCancelled",
                    format!(
                        "template reverted to {toward} during promotion; canary {} cancelled",
                        at.canary
                    ),
                );
                Outcome::Cancelled
            }
        };
        self.status.message = "promoting: traffic is back on stable; canary pods drain".into();
        self.drain(&toward, &at.canary, outcome, plan.scale_down_delay);
    }

    /// Moves traffic one hop back to stable (or holds it, when stable's HPA has not
    /// caught up with the share stable has now).
    fn step_back(
        &mut self,
        plan: &Plan,
        target: &TargetState,
        at: CanaryAt,
        next: u32,
        since: Timestamp,
        stalled: bool,
    ) {
        if next < at.weight {
            self.set_weight(next);
            self.event(
                false,
                "TrafficToStable",
                format!(
                    "promoting: canary {}% -> {next}%: stable has {} of the {} replicas that carry all traffic",
                    at.weight, target.pods.available, at.reference_replicas
                ),
            );
        }
        let at = CanaryAt { weight: next, ..at };
        self.wait_for_stable(plan, target, &at, since, stalled);
        self.set_at(at);
    }

    fn wait_for_stable(&mut self, plan: &Plan, target: &TargetState, at: &CanaryAt, since: Timestamp, stalled: bool) {
        let deadline = after(since, plan.progress_deadline);
        let stalled_now = !stalled && self.now >= deadline;
        if stalled_now {
            self.event(
                true,
                "PromotionStalled",
                format!(
                    "Deployment {} has not rolled out revision {} within progressDeadline {}; the canary keeps {}% until it does",
                    plan.target,
                    target.revision,
                    humantime::format_duration(plan.progress_deadline),
                    at.weight
                ),
            );
        }
        if let State::Promoting { stalled, .. } = &mut self.state {
            *stalled |= stalled_now;
        }
        self.status.message = format!(
            "promoting: Deployment {} has {}/{} replicas updated, {} available; canary keeps {}% until it is ready",
            plan.target, target.pods.updated, target.pods.desired, target.pods.available, at.weight
        );
        if !stalled && !stalled_now {
            self.wake_at(deadline);
        }
        self.wake_at(after(self.now, ROLLOUT_POLL));
    }

    /// A template that is neither the canary's nor stable's appeared during promotion: it
    /// must not roll out unjudged, so the Deployment is paused again where it is.
    fn interrupt_promotion(&mut self, plan: &Plan, target: &TargetState, at: &CanaryAt, seen: Option<String>) {
        self.pause_target(Some(target), true);
        if seen.as_deref() != Some(target.revision.as_str()) {
            self.event(
                true,
                "PromotionInterrupted",
                format!(
                    "template changed to {} while {} was being promoted: Deployment {} is paused so it does not roll out unjudged; canary {} keeps {}%. Set the template back to {} to finish the promotion, or to the stable one to cancel it",
                    target.revision, at.canary, plan.target, at.canary, at.weight, at.canary
                ),
            );
        }
        if let State::Promoting { interrupted_by, .. } = &mut self.state {
            *interrupted_by = Some(target.revision.clone());
        }
        self.status.message = format!(
            "promotion of {} interrupted by template {}: set the template back to {} or to stable",
            at.canary, target.revision, at.canary
        );
    }

    // --------------------------------------------------------------------- Draining

    /// Traffic leaves the canary now (written as an intent with this state); its pods may
    /// go once the mesh has caught up, `delay` from now, whether or not the state says
    /// the canary had weight (the VirtualService may have had some all the same).
    fn drain(&mut self, stable: &str, canary: &str, outcome: Outcome, delay: Duration) {
        self.unstuck();
        self.set_weight(0);
        let until = after(self.now, delay);
        self.state = State::Draining {
            stable: stable.to_string(),
            canary: canary.to_string(),
            until,
            outcome,
        };
        self.wake_at(until);
    }

    /// A drain counts from the write that takes the traffic away, not from the decision
    /// that recorded it: while the VirtualService still shows canary weight (the write
    /// was lost to a crash, or a sync put weight back), the drain starts again from now.
    fn drain_from_now_if_weighted(&mut self, until: Timestamp) -> Timestamp {
        if self.world_weight.is_none_or(|w| w == 0) {
            return until;
        }
        let delay = self.drain_delay.unwrap_or(DEFAULT_SCALE_DOWN_DELAY);
        let later = after(self.now, delay).max(until);
        match &mut self.state {
            State::Draining { until, .. } => *until = later,
            State::Scaling { drain_until, .. } => *drain_until = Some(later),
            _ => {}
        }
        later
    }

    /// Draining: weight 0 kept; after `until`, and only once the VirtualService is seen
    /// with no canary weight, the canary is scaled to zero and the Rollout is Stable.
    fn on_draining(&mut self, target: Option<&TargetState>, world: &World) {
        let State::Draining {
            stable,
            canary,
            until,
            outcome,
        } = self.state.clone()
        else {
            return;
        };
        self.set_weight(0);
        self.pause_target(target, true);
        let until = self.drain_from_now_if_weighted(until);
        if self.now < until {
            return self.wake_at(until);
        }
        if self.world_weight != Some(0) {
            // Not seen at zero yet (just written, or the routing is unusable): the pods
            // stay until no route can reach them.
            return self.wake_at(after(self.now, Duration::from_secs(1)));
        }
        if let Some(c) = &world.canary
            && c.pods.desired > 0
        {
            self.actions.push(Action::ApplyCanary {
                revision: c.revision.clone().unwrap_or(canary),
                replicas: 0,
            });
        }
        if outcome == Outcome::Promoted {
            self.status.message = format!("revision {stable} promoted: stable runs it");
            self.event(false, "Promoted", self.status.message.clone());
        }
        self.end_release(outcome);
        self.state = State::Stable {
            stable,
            last: Some(outcome),
        };
        // A template changed meanwhile is looked at in the next reconcile, at once.
        self.wake_at(self.now);
    }

    /// The release in progress goes into the history, with how it ended and why, and the
    /// conditions `Kubectl wait` and Argo CD read are set.
    fn end_release(&mut self, outcome: Outcome) {
        let Some(mut record) = self.status.release.take() else {
            return;
        };
        let (name, evidence) = match outcome {
            Outcome::Promoted => ("Promoted", format!("promoted after {} steps", record.step)),
            Outcome::RolledBack => (
                "RolledBack",
                self.status.rollback.as_ref().map(rollback_evidence).unwrap_or_default(),
            ),
            Outcome::Cancelled => (
                "Cancelled",
                "cancelled: the template changed or the Rollout could not go on".into(),
            ),
        };
        record.ended = Some(ts(self.now));
        record.outcome = Some(name.into());
        if record.evidence.is_empty() {
            record.evidence = evidence;
        }
        let message = format!("revision {}: {}", record.revision, record.evidence);
        self.set_condition("Progressing", false, name, &message);
        self.set_condition("Promoted", outcome == Outcome::Promoted, name, &message);
        self.set_condition("RolledBack", outcome == Outcome::RolledBack, name, &message);
        self.status.history.insert(0, record);
        self.status.history.truncate(HISTORY_LIMIT);
    }

    #[allow(clippy::too_many_arguments)]
    fn rollback(
        &mut self,
        plan: &Plan,
        target: &TargetState,
        metric: Option<String>,
        value: Option<f64>,
        bound: String,
        reason: String,
    ) {
        let Some(at) = self.at() else { return };
        let weight = plan.steps.get(at.step as usize).map(|s| s.weight).unwrap_or(0);
        // All traffic to stable in one write; the canary is scaled down once it has drained.
        self.actions
            .retain(|a| !matches!(a, Action::ApplyCanary { .. } | Action::PauseTarget(false)));
        self.pause_target(Some(target), true);
        let message = format!(
            "rolled back revision {} at step {}/{} ({weight}%): {reason}",
            at.canary,
            at.step + 1,
            plan.steps.len()
        );
        self.event(true, "RolledBack", message.clone());
        self.status.rollback = Some(RollbackRecord {
            revision: at.canary.clone(),
            step: at.step + 1,
            weight,
            metric,
            value,
            bound: (!bound.is_empty()).then_some(bound),
            reason,
            at: ts(self.now),
        });
        self.status.rolled_back_revision = Some(at.canary.clone());
        self.status.message = message;
        self.drain(&at.stable, &at.canary, Outcome::RolledBack, plan.scale_down_delay);
    }

    // --------------------------------------------------------------------- Deletion

    /// A deleted Rollout whose canary was not judged bad (it is still a canary: scaling,
    /// analysing, paused or promoting) hands its traffic back one hop at a time while
    /// stable lacks the replicas for all of it. `false`: stable carries everything, or
    /// there is nothing to step (no plan, no Deployment, no canary pod that serves — a
    /// share sent to no pod fails anyway): drain at once.
    fn step_back_on_release(&mut self, plan: Option<&Plan>, world: &World) -> bool {
        let serving = world.canary.as_ref().is_some_and(|c| c.pods.available > 0);
        let canary_state = serving
            && matches!(
                self.state,
                State::Scaling { .. } | State::Analysing { .. } | State::Paused { .. } | State::Promoting { .. }
            );
        let (Some(plan), Some(target), Some(at), Some(weight)) = (plan, &world.target, self.at(), self.world_weight)
        else {
            return false;
        };
        if !canary_state {
            return false;
        }
        let at = CanaryAt { weight, ..at };
        let next = ramp_down(plan, &at, target.pods.available);
        if next == 0 {
            return false;
        }
        if next < weight {
            self.set_weight(next);
            let note = format!(
                "Rollout deleted: canary {weight}% -> {next}%: stable has {} of the {} replicas that carry all traffic",
                target.pods.available, at.reference_replicas
            );
            self.event(false, "TrafficToStable", note);
        }
        self.status.message =
            format!("Rollout deleted: traffic returns to stable as fast as its replicas allow (canary {next}%)");
        self.set_at(CanaryAt { weight: next, ..at });
        self.wake_at(after(self.now, RELEASE_STEP_POLL));
        true
    }

    /// The deletion's proof: the routes, freshly read, send nothing to the canary on
    /// every managed route (routes that cannot be read or understood prove nothing).
    fn no_canary_traffic_shown(&self, world: &World) -> Result<(), String> {
        // At rest weir's record is the proof: its last drain ended on weight 0 seen.
        let at_rest = matches!(self.state, State::Initializing | State::Stable { .. });
        match (&world.traffic, self.routes_disagree) {
            (Err(_), _) if at_rest => Ok(()),
            (Err(problem), _) => Err(format!("the routing cannot be read: {problem}")),
            (Ok(_), true) => Err("the managed routes carry different canary weights".into()),
            (Ok(w), false) if *w > 0 => Err(format!("the routes still send {w}% to the canary")),
            (Ok(_), false) => Ok(()),
        }
    }

    fn release(&mut self, plan: Option<&Plan>, world: &World, delay: Duration) {
        let canary = self.at().map(|at| at.canary).unwrap_or_default();
        let stable = self.state.stable().unwrap_or_default().to_string();
        if !matches!(self.state, State::Draining { .. }) && self.world_weight.is_some_and(|w| w > 0) {
            if self.step_back_on_release(plan, world) {
                return;
            }
            self.status.message = "Rollout deleted: all traffic goes back to stable; the canary drains".into();
            self.event(false, "Releasing", self.status.message.clone());
            return self.drain(&stable, &canary, Outcome::Cancelled, delay);
        }
        if let State::Draining { until, .. } = self.state {
            self.set_weight(0);
            let until = self.drain_from_now_if_weighted(until);
            if self.now < until {
                return self.wake_at(until);
            }
        }
        if let Err(why) = self.no_canary_traffic_shown(world) {
            // The finalizer stays: letting go now would garbage-collect the canary's
            // pods under whatever share the routes still send them.
            let message = format!("Rollout deleted: weir lets go once it sees no traffic on the canary: {why}");
            if self.status.message != message {
                self.event(true, "ReleaseWaiting", message.clone());
            }
            self.status.message = message;
            return self.wake_at(after(self.now, RELEASE_RETRY));
        }
        if world.target.is_some() {
            self.actions.push(Action::ReleaseTarget);
        }
        if world.canary.is_some() {
            self.actions.push(Action::RemoveCanary);
        }
        self.status.message = "Rollout deleted: traffic on stable, Deployment released".into();
        self.event(
            false,
            "Released",
            "all traffic on stable; weir let go of the Deployment".into(),
        );
        self.released = true;
    }
}
