//! The decision engine: Rollout plan + status + observed world + `now` in, actions + new
//! status + Events out. Pure: no kube, no HTTP, no clock reads, so every behaviour is a
//! readable scenario on a simulated clock (see `tests/engine_scenarios.rs`).
//!
//! Crash safety comes from two rules. Every action is a *target*, not a delta ("canary
//! weight is 25", "canary has 3 replicas"), so doing it twice is harmless. And the step
//! index lives in status and only ever moves forward within a revision, so a restart
//! re-derives the same targets: no step skipped, none repeated, no weight moved back.

use std::time::Duration;

use jiff::Timestamp;

use crate::judge::{self, MetricInput, Reading, StepClock, StepCounts, Verdict};
use crate::plan::Plan;
use crate::spec::JudgeKind;
use crate::status::{
    AnalysisStatus, Condition, Phase, PromotionState, RollbackRecord, RolloutStatus, StepEvidence, StepState,
};

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
    /// The canary weight now in the VirtualService, or why the routing does not fit.
    pub traffic: Result<u32, String>,
    /// The `weir.dev/request` annotation.
    pub request: Option<String>,
    /// The `weir.dev/paused` annotation is "true".
    pub pause_requested: bool,
    /// Metric readings, present when `analysis_request` said a look was due.
    pub readings: Option<Vec<(String, Reading)>>,
}

impl World {
    /// Nothing observed yet: what the engine gets for a spec too broken to observe by.
    pub fn unobserved() -> World {
        World {
            target: None,
            canary: None,
            traffic: Ok(0),
            request: None,
            pause_requested: false,
            readings: None,
        }
    }
}

/// A change to make in the cluster, in the order given.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Set `spec.paused` of the user's Deployment (paused, its template bumps do not roll out).
    PauseTarget(bool),
    /// Create or update the canary Deployment to run `revision` with `replicas` pods.
    ApplyCanary { revision: String, replicas: i32 },
    /// Write the canary weight (stable gets the rest) into the managed routes.
    SetCanaryWeight(u32),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub status: RolloutStatus,
    pub events: Vec<Event>,
    /// When to look again if nothing is watched changes.
    pub requeue_after: Duration,
}

/// What to ask Prometheus for, when a look is due.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnalysisRequest {
    /// Range of the counters: since the step began (sequential) or one interval (threshold).
    pub window: Duration,
    pub interval: Duration,
}

/// Resync when nothing is due: watches bring every change sooner.
const IDLE_RESYNC: Duration = Duration::from_secs(300);

fn ts(t: Timestamp) -> String {
    t.to_string()
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

/// Is a look at the metrics due now? The controller asks before querying Prometheus.
pub fn analysis_request(plan: &Plan, status: &RolloutStatus, now: Timestamp) -> Option<AnalysisRequest> {
    if status.phase != Phase::Progressing || status.step_state != Some(StepState::Analysing) {
        return None;
    }
    let started = parse_ts(&status.step_started_at)?;
    let next = status
        .analysis
        .as_ref()
        .and_then(|a| parse_ts(&a.next_check_at))
        .unwrap_or(now);
    if next > now {
        return None;
    }
    let window = match plan.judge {
        JudgeKind::Sequential => until(started, now).max(Duration::from_secs(1)),
        JudgeKind::Threshold => plan.interval,
    };
    Some(AnalysisRequest {
        window,
        interval: plan.interval,
    })
}

/// Decide what to do for one Rollout.
pub fn decide(
    plan: Result<&Plan, &[String]>,
    generation: Option<i64>,
    status: &RolloutStatus,
    world: &World,
    now: Timestamp,
) -> Decision {
    let mut d = Decider {
        now,
        status: status.clone(),
        actions: Vec::new(),
        events: Vec::new(),
        wake: None,
        steps_total: plan.as_ref().map(|p| p.steps.len()).unwrap_or(0),
        passed: None,
    };
    d.status.observed_generation = generation;
    match plan {
        Err(errors) => d.invalid("InvalidSpec", &errors.join("; ")),
        Ok(plan) => d.run(plan, world),
    }
    d.finish()
}

struct Decider {
    now: Timestamp,
    status: RolloutStatus,
    actions: Vec<Action>,
    events: Vec<Event>,
    wake: Option<Timestamp>,
    steps_total: usize,
    /// The verdict of a step that just passed, not yet told: the next step's
    /// `StepStarted` carries it when that step starts at once (one Event per step).
    passed: Option<String>,
}

impl Decider {
    fn finish(mut self) -> Decision {
        self.status.step_display = match (self.status.current_step, &self.status.phase) {
            (Some(i), Phase::Progressing | Phase::Paused) => Some(format!("{}/{}", i + 1, self.steps_total)),
            _ => None,
        };
        let requeue_after = self
            .wake
            .map(|t| until(self.now, t).max(Duration::from_millis(100)))
            .unwrap_or(IDLE_RESYNC);
        Decision {
            actions: self.actions,
            status: self.status,
            events: self.events,
            requeue_after,
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
        let status = if ok { "True" } else { "False" };
        let now = ts(self.now);
        match self.status.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                }
                c.status = status.into();
                c.reason = reason.into();
                c.message = message.into();
            }
            None => self.status.conditions.push(Condition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                message: message.into(),
                last_transition_time: now,
            }),
        }
    }

    /// A problem the user must fix. Nothing is changed in the cluster: a half-understood
    /// Rollout must not move traffic. One Warning Event per distinct message.
    fn invalid(&mut self, reason: &str, message: &str) {
        if self.status.phase != Phase::InvalidSpec || self.status.message != message {
            self.event(true, reason, message.to_string());
        }
        self.status.phase = Phase::InvalidSpec;
        self.status.message = message.to_string();
        self.set_condition("SpecValid", false, reason, message);
    }

    /// Targets a canary weight. A second call in the same decision updates the first
    /// action in place, so the order of writes (weight down before pods change) holds.
    fn set_weight(&mut self, world_weight: u32, weight: u32) {
        let earlier = self
            .actions
            .iter()
            .position(|a| matches!(a, Action::SetCanaryWeight(_)));
        match earlier {
            Some(i) => self.actions[i] = Action::SetCanaryWeight(weight),
            None if world_weight != weight => self.actions.push(Action::SetCanaryWeight(weight)),
            None => {}
        }
        self.status.canary_weight = weight;
    }

    fn run(&mut self, plan: &Plan, world: &World) {
        let Some(target) = &world.target else {
            return self.invalid("TargetNotFound", &format!("Deployment {} not found", plan.target));
        };
        let world_weight = match &world.traffic {
            Ok(w) => *w,
            Err(problem) => return self.invalid("TrafficRoutingInvalid", problem),
        };
        if self.status.phase == Phase::InvalidSpec {
            self.status.phase = if self.status.stable_revision.is_some() {
                Phase::Healthy
            } else {
                Phase::Initializing
            };
        }
        self.set_condition("SpecValid", true, "Valid", "the Rollout and the objects it names fit");

        let request = self.take_request(world);
        if request.as_deref() == Some("retry")
            && let Some(rev) = self.status.rolled_back_revision.take()
        {
            self.event(false, "RetryRequested", format!("revision {rev} will be tried again"));
        }

        let Some(stable) = self.status.stable_revision.clone() else {
            return self.initialize(plan, target, world, world_weight);
        };
        if target.revision == stable {
            return self.settle_on_stable(plan, target, world, world_weight);
        }
        if self.status.rolled_back_revision.as_deref() == Some(target.revision.as_str()) {
            self.status.phase = Phase::RolledBack;
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
            return self.keep_idle(target, world, world_weight);
        }
        if self.status.canary_revision.as_deref() != Some(target.revision.as_str()) {
            return self.start_canary(plan, target, world, world_weight);
        }
        if request.as_deref() == Some("abort") {
            return self.rollback(
                plan,
                target,
                world_weight,
                None,
                None,
                String::new(),
                "aborted by request (weir abort)".into(),
            );
        }
        match self.status.phase {
            Phase::Promoting => self.promote(plan, target, world, world_weight),
            _ => self.progress(plan, target, world, world_weight, request.as_deref() == Some("promote")),
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

    fn initialize(&mut self, plan: &Plan, target: &TargetState, world: &World, world_weight: u32) {
        if !target.paused && !target.rolled_out() {
            self.status.phase = Phase::Initializing;
            self.status.message = format!(
                "waiting for Deployment {} to finish its own rollout ({}/{} updated, {} available) before taking it over",
                plan.target, target.pods.updated, target.pods.desired, target.pods.available
            );
            return;
        }
        self.status.stable_revision = Some(target.revision.clone());
        self.status.phase = Phase::Healthy;
        self.status.message = format!(
            "stable runs revision {}; a change of the pod template starts a canary",
            target.revision
        );
        self.event(
            false,
            "Initialized",
            format!("took over Deployment {} at revision {}", plan.target, target.revision),
        );
        self.keep_idle(target, world, world_weight);
    }

    /// No canary: the Deployment stays paused (so a bump cannot roll out unjudged), all
    /// traffic on stable, the canary scaled to zero.
    ///
    /// The canary pods go only after `drain_until`: the mesh needs a moment to stop sending
    /// them requests after the weight write (Envoy configuration is pushed, not instant).
    fn keep_idle(&mut self, target: &TargetState, world: &World, world_weight: u32) {
        self.set_weight(world_weight, 0);
        if !target.paused {
            self.actions.push(Action::PauseTarget(true));
        }
        if let Some(canary) = &world.canary
            && canary.pods.desired > 0
        {
            match parse_ts(&self.status.drain_until).filter(|t| *t > self.now) {
                Some(drain_until) => self.wake_at(drain_until),
                None => self.actions.push(Action::ApplyCanary {
                    revision: canary.revision.clone().unwrap_or_else(|| target.revision.clone()),
                    replicas: 0,
                }),
            }
        }
        if parse_ts(&self.status.drain_until).is_some_and(|t| t <= self.now) {
            self.status.drain_until = None;
        }
        self.status.canary_revision = None;
        self.status.current_step = None;
        self.status.step_state = None;
        self.status.step_started_at = None;
        self.status.waiting_since = None;
        self.status.promotion = None;
    }

    /// Traffic leaves the canary now; its pods may go (or change) once the mesh has caught up.
    fn drain_canary(&mut self, plan: &Plan, world_weight: u32) {
        if world_weight > 0 || self.status.canary_weight > 0 {
            self.status.drain_until = Some(ts(after(self.now, plan.scale_down_delay)));
        }
        self.set_weight(world_weight, 0);
    }

    fn settle_on_stable(&mut self, plan: &Plan, target: &TargetState, world: &World, world_weight: u32) {
        if let Some(cancelled) = self.status.canary_revision.clone() {
            if self.status.phase == Phase::Promoting {
                // The template went back while stable was rolling out the canary's: let it
                // finish rolling back to the stable template with traffic on the canary.
                self.status.canary_revision = None;
            } else {
                self.event(
                    false,
                    "CanaryCancelled",
                    format!(
                        "template reverted to stable revision {}; canary {cancelled} cancelled",
                        target.revision
                    ),
                );
                self.status.phase = Phase::Healthy;
                self.status.message = format!("canary {cancelled} cancelled: the template is back on stable");
                self.status.analysis = None;
                self.drain_canary(plan, world_weight);
            }
        }
        if self.status.phase == Phase::Promoting && !target.rolled_out() {
            self.status.message = "waiting for the Deployment to settle before moving traffic back to stable".into();
            self.wake_at(after(self.now, Duration::from_secs(30)));
            return;
        }
        if matches!(
            self.status.phase,
            Phase::Initializing | Phase::Promoting | Phase::Progressing | Phase::Paused
        ) {
            self.status.phase = Phase::Healthy;
        }
        if self.status.phase == Phase::Healthy {
            self.status.message = format!("stable runs revision {}", target.revision);
        }
        self.keep_idle(target, world, world_weight);
    }

    fn start_canary(&mut self, plan: &Plan, target: &TargetState, world: &World, world_weight: u32) {
        let revision = target.revision.clone();
        match self.status.canary_revision.take() {
            Some(older) => self.event(
                false,
                "NewerRevision",
                format!("revision {revision} replaces {older} mid-canary; analysis restarts at step 1"),
            ),
            None => self.event(
                false,
                "CanaryStarted",
                format!("template changed: canary of revision {revision} starts"),
            ),
        }
        // Weight goes to zero first, and the pods change template only once the mesh has
        // stopped sending them traffic.
        self.drain_canary(plan, world_weight);
        if !target.paused {
            self.actions.push(Action::PauseTarget(true));
        }
        self.status.phase = Phase::Progressing;
        self.status.canary_revision = Some(revision);
        self.status.analysis = Some(AnalysisStatus::default());
        self.status.rollback = None;
        self.status.promotion = None;
        self.status.drain_until = None;
        self.enter_step(plan, target, world, 0, 0);
    }

    /// Begins step `index`: canary pods first; the weight follows once they are ready.
    fn enter_step(&mut self, plan: &Plan, target: &TargetState, world: &World, index: usize, world_weight: u32) {
        self.status.current_step = Some(index as u32);
        self.status.step_state = Some(StepState::ScalingCanary);
        self.status.step_started_at = None;
        self.status.waiting_since = Some(ts(self.now));
        if let Some(a) = self.status.analysis.as_mut() {
            a.next_check_at = None;
            a.metrics.clear();
        }
        self.scale_canary_for_step(plan, target, world, world_weight);
    }

    fn revision(&self) -> String {
        self.status.canary_revision.clone().unwrap_or_default()
    }

    /// While scaling: make sure the canary has its pods, and write the weight once they are ready.
    fn scale_canary_for_step(&mut self, plan: &Plan, target: &TargetState, world: &World, world_weight: u32) {
        let index = self.status.current_step.unwrap_or(0) as usize;
        let step = plan.steps[index.min(plan.steps.len() - 1)];
        let needed = Plan::canary_replicas(target.pods.desired, step.weight);
        let revision = self.revision();
        let canary = world.canary.clone().unwrap_or_default();
        if let Some(drain_until) = parse_ts(&self.status.drain_until).filter(|t| *t > self.now)
            && canary.revision.as_deref() != Some(revision.as_str())
        {
            self.status.message = format!(
                "step {}: the old canary drains before it runs revision {revision}",
                index + 1
            );
            self.wake_at(drain_until);
            return;
        }
        let applied = canary.revision.as_deref() == Some(revision.as_str()) && canary.pods.desired == needed;
        if !applied && !self.actions.iter().any(|a| matches!(a, Action::ApplyCanary { .. })) {
            self.actions.push(Action::ApplyCanary {
                revision: revision.clone(),
                replicas: needed,
            });
        }
        if applied && canary.ready_for(&revision, needed) {
            self.set_weight(world_weight, step.weight);
            self.status.step_state = Some(StepState::Analysing);
            self.status.step_started_at = Some(ts(self.now));
            self.status.waiting_since = None;
            let first_look = match plan.judge {
                JudgeKind::Sequential => plan.tick,
                JudgeKind::Threshold => step.duration,
            };
            if let Some(a) = self.status.analysis.as_mut() {
                a.next_check_at = Some(ts(after(self.now, first_look)));
            }
            self.wake_at(after(self.now, first_look));
            self.status.message = format!(
                "step {}/{}: canary at {}%, analysing",
                index + 1,
                plan.steps.len(),
                step.weight
            );
            let mut note = format!(
                "step {}/{}: canary weight {}% ({} canary pods ready)",
                index + 1,
                plan.steps.len(),
                step.weight,
                canary.pods.available
            );
            if let Some(passed) = self.passed.take() {
                note = format!("{note}; {passed}");
            }
            self.event(false, "StepStarted", note);
            return;
        }
        // The weight stays at the last step's, which the ready pods already carry.
        let current = self.status.canary_weight;
        self.set_weight(world_weight, current);
        let since = parse_ts(&self.status.waiting_since).unwrap_or(self.now);
        let deadline = after(since, plan.progress_deadline);
        if self.now >= deadline {
            let reason = format!(
                "canary pods not ready within progressDeadline {}: {} of {needed} available",
                humantime::format_duration(plan.progress_deadline),
                canary.pods.available
            );
            return self.rollback(plan, target, world_weight, None, None, String::new(), reason);
        }
        self.status.message = format!(
            "step {}/{}: waiting for canary pods ({} of {needed} available) before sending {}% of traffic",
            index + 1,
            plan.steps.len(),
            canary.pods.available,
            step.weight
        );
        self.wake_at(deadline);
    }

    fn progress(&mut self, plan: &Plan, target: &TargetState, world: &World, world_weight: u32, promote_now: bool) {
        let index = (self.status.current_step.unwrap_or(0) as usize).min(plan.steps.len() - 1);
        self.status.current_step = Some(index as u32);
        if self.status.analysis.is_none() {
            self.status.analysis = Some(AnalysisStatus::default());
        }
        if !target.paused {
            self.actions.push(Action::PauseTarget(true));
        }
        if promote_now {
            self.event(
                false,
                "PromoteRequested",
                format!("step {} passed by request (weir promote)", index + 1),
            );
            return self.advance(plan, target, world, world_weight, index);
        }
        if world.pause_requested {
            self.status.phase = Phase::Paused;
            self.status.message = format!(
                "paused by request at step {}/{} ({}% canary)",
                index + 1,
                plan.steps.len(),
                self.status.canary_weight
            );
            // The deadline does not run while a person holds the canary.
            self.status.waiting_since = Some(ts(self.now));
            let current = self.status.canary_weight;
            self.set_weight(world_weight, current);
            return;
        }
        if self.status.phase == Phase::Paused {
            self.status.phase = Phase::Progressing;
            self.event(false, "Resumed", format!("resumed at step {}", index + 1));
            if self.status.step_state == Some(StepState::Analysing) {
                // Evidence gathered before the pause still counts; the step restarts its clock.
                self.status.step_started_at = Some(ts(self.now));
            }
        }
        self.status.phase = Phase::Progressing;
        if self.status.step_state != Some(StepState::Analysing) {
            return self.scale_canary_for_step(plan, target, world, world_weight);
        }
        let step = plan.steps[index];
        if world.canary.as_ref().is_none_or(|c| c.pods.available == 0) && self.status.canary_weight > 0 {
            // Never send traffic to a destination without ready pods: withdraw it and wait
            // for the pods again (the progress deadline rolls back a canary that stays down).
            self.event(
                true,
                "CanaryNotReady",
                format!("step {}: canary has no ready pods; its traffic is withdrawn", index + 1),
            );
            self.set_weight(world_weight, 0);
            self.status.step_state = Some(StepState::ScalingCanary);
            self.status.waiting_since = Some(ts(self.now));
            return self.scale_canary_for_step(plan, target, world, world_weight);
        }
        // Keep the canary sized for the step (the HPA may have moved stable) and the weight
        // where weir put it (GitOps may have reverted it).
        let needed = Plan::canary_replicas(target.pods.desired, step.weight);
        if world.canary.as_ref().map(|c| c.pods.desired) != Some(needed) {
            self.actions.push(Action::ApplyCanary {
                revision: self.revision(),
                replicas: needed,
            });
        }
        let current = self.status.canary_weight;
        self.set_weight(world_weight, current);

        let started = parse_ts(&self.status.step_started_at).unwrap_or(self.now);
        let due = after(started, step.duration);
        let deadline = after(due, plan.progress_deadline);
        let Some(readings) = &world.readings else {
            let next = self
                .status
                .analysis
                .as_ref()
                .and_then(|a| parse_ts(&a.next_check_at))
                .unwrap_or(self.now);
            self.wake_at(next);
            return;
        };
        let clock = StepClock {
            elapsed: until(started, self.now),
            duration: step.duration,
        };
        let judgement = self.judge(plan, readings, clock);
        let analysis = self.status.analysis.get_or_insert_with(AnalysisStatus::default);
        analysis.last_checked_at = Some(ts(self.now));
        analysis.metrics = judgement.metrics.clone();
        let note = format!(
            "step {}/{} ({}%): {}",
            index + 1,
            plan.steps.len(),
            step.weight,
            judgement.reason
        );
        match judgement.verdict {
            Verdict::Pass { early } => {
                analysis.last_verdict = Some("Pass".into());
                analysis.consecutive_errors = 0;
                analysis.last_error = None;
                let when = if early { " early" } else { "" };
                self.passed = Some(format!("{note}; step passed{when}"));
                self.advance(plan, target, world, world_weight, index);
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
                    return self.rollback(plan, target, world_weight, Some(metric), value, bound, judgement.reason);
                }
                self.event(
                    true,
                    "AnalysisBreach",
                    format!("{note}; breach {failures} of {} tolerated", plan.failure_limit),
                );
                self.hold(plan, note, deadline, target, world_weight, plan.interval);
            }
            Verdict::Error => {
                analysis.last_verdict = Some("Error".into());
                analysis.consecutive_errors += 1;
                analysis.last_error = Some(judgement.reason.clone());
                // One Event when Prometheus starts failing, not one per look.
                if analysis.consecutive_errors == 1 {
                    self.event(true, "AnalysisError", note.clone());
                }
                self.hold(plan, note, deadline, target, world_weight, plan.tick);
            }
            Verdict::Inconclusive => {
                analysis.last_verdict = Some("Inconclusive".into());
                analysis.consecutive_errors = 0;
                let next = if plan.judge == JudgeKind::Threshold && self.now < due {
                    until(self.now, due)
                } else {
                    plan.tick
                };
                self.hold(plan, note, deadline, target, world_weight, next);
            }
        }
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
            })
            .collect();
        judge::judge(plan.judge, &plan.sequential, &inputs, clock)
    }

    /// Hold the step: look again after `next`, roll back once the deadline passes.
    fn hold(
        &mut self,
        plan: &Plan,
        note: String,
        deadline: Timestamp,
        target: &TargetState,
        world_weight: u32,
        next: Duration,
    ) {
        if self.now >= deadline {
            let reason = format!(
                "no passing verdict within progressDeadline {} after the step was due; last: {note}",
                humantime::format_duration(plan.progress_deadline)
            );
            return self.rollback(plan, target, world_weight, None, None, String::new(), reason);
        }
        let next_at = after(self.now, next).min(deadline);
        if let Some(a) = self.status.analysis.as_mut() {
            a.next_check_at = Some(ts(next_at));
        }
        self.status.message = format!("holding: {note}");
        self.wake_at(next_at);
    }

    /// Records the step's evidence, then moves to the next step or to promotion.
    fn advance(&mut self, plan: &Plan, target: &TargetState, world: &World, world_weight: u32, index: usize) {
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
        }
        if index + 1 < plan.steps.len() {
            self.enter_step(plan, target, world, index + 1, world_weight);
            // The next step could not start at once (more canary pods first).
            return self.tell_passed();
        }
        self.tell_passed();
        // Promotion: the stable track (the user's Deployment) rolls out the new template
        // while the canary keeps the traffic it has; traffic returns once stable is ready.
        self.actions.push(Action::PauseTarget(false));
        self.status.phase = Phase::Promoting;
        self.status.promotion = Some(PromotionState::RollingStable);
        self.status.step_state = None;
        self.status.waiting_since = Some(ts(self.now));
        self.status.message = format!(
            "promoting revision {}: Deployment {} rolls out the new template",
            self.revision(),
            plan.target
        );
        self.event(false, "Promoting", self.status.message.clone());
        self.wake_at(after(self.now, Duration::from_secs(30)));
    }

    fn tell_passed(&mut self) {
        if let Some(passed) = self.passed.take() {
            self.event(false, "StepPassed", passed);
        }
    }

    fn promote(&mut self, plan: &Plan, target: &TargetState, world: &World, world_weight: u32) {
        match self.status.promotion.clone().unwrap_or_default() {
            PromotionState::RollingStable => {
                if target.paused {
                    // Re-issued after a crash between the decision and the write.
                    self.actions.push(Action::PauseTarget(false));
                }
                if target.paused || !target.rolled_out() {
                    self.status.message = format!(
                        "promoting: Deployment {} has {}/{} replicas updated, {} available; canary keeps {}% until it is ready",
                        plan.target,
                        target.pods.updated,
                        target.pods.desired,
                        target.pods.available,
                        self.status.canary_weight
                    );
                    self.wake_at(after(self.now, Duration::from_secs(30)));
                    return;
                }
                // Stable is fully ready on the new template: traffic back, then re-pause so
                // the next bump waits for weir.
                self.set_weight(world_weight, 0);
                self.actions.push(Action::PauseTarget(true));
                let drain_until = after(self.now, plan.scale_down_delay);
                self.status.promotion = Some(PromotionState::Draining);
                self.status.drain_until = Some(ts(drain_until));
                self.status.message = "promoting: traffic is back on stable; canary pods drain".into();
                self.wake_at(drain_until);
            }
            PromotionState::Draining => {
                let drain_until = parse_ts(&self.status.drain_until).unwrap_or(self.now);
                self.set_weight(world_weight, 0);
                if self.now < drain_until {
                    self.wake_at(drain_until);
                    return;
                }
                let revision = self.revision();
                self.status.stable_revision = Some(revision.clone());
                self.status.phase = Phase::Succeeded;
                self.status.message = format!("revision {revision} promoted: stable runs it");
                self.event(false, "Promoted", self.status.message.clone());
                self.keep_idle(target, world, 0);
                // keep_idle saw weight 0 as current; the weight action (if any) was pushed above.
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn rollback(
        &mut self,
        plan: &Plan,
        target: &TargetState,
        world_weight: u32,
        metric: Option<String>,
        value: Option<f64>,
        bound: String,
        reason: String,
    ) {
        let revision = self.revision();
        let index = self.status.current_step.unwrap_or(0);
        let weight = plan.steps.get(index as usize).map(|s| s.weight).unwrap_or(0);
        // All traffic to stable in one write; the canary is scaled down once it has drained.
        self.actions
            .retain(|a| !matches!(a, Action::ApplyCanary { .. } | Action::PauseTarget(false)));
        self.drain_canary(plan, world_weight);
        self.wake_at(after(self.now, plan.scale_down_delay));
        if !target.paused {
            self.actions.push(Action::PauseTarget(true));
        }
        let bound_text = if bound.is_empty() { None } else { Some(bound) };
        let message = format!(
            "rolled back revision {revision} at step {}/{} ({weight}%): {reason}",
            index + 1,
            plan.steps.len()
        );
        self.event(true, "RolledBack", message.clone());
        self.status.rollback = Some(RollbackRecord {
            revision: revision.clone(),
            step: index + 1,
            weight,
            metric,
            value,
            bound: bound_text,
            reason,
            at: ts(self.now),
        });
        self.status.rolled_back_revision = Some(revision);
        self.status.phase = Phase::RolledBack;
        self.status.message = message;
        self.status.canary_revision = None;
        self.status.current_step = None;
        self.status.step_state = None;
        self.status.step_started_at = None;
        self.status.waiting_since = None;
        self.status.promotion = None;
    }
}
