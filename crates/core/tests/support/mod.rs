//! The simulated cluster, Prometheus and controller loop the core's scenario tests and
//! the crash explorer run the engine against: a clock that only moves when told,
//! Deployments whose pods become ready as soon as the cluster "settles", and a
//! Prometheus that answers with deterministic counts for the current weights.
//!
//! The loop is the controller's: each reconcile decides from the status in memory (or,
//! after a restart, the one the API server holds), then makes the decision's writes in
//! `Decision::writes` order — and can be killed between any two of them.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use jiff::Timestamp;
use weir_core::engine::{
    self, Action, AnalysisRequest, CanaryState, Event, MeshConfirmation, Pods, TargetState, World, Write,
};
use weir_core::hooks::{HookAnswer, HookCall, HookKey, Reply};
use weir_core::judge::Reading;
use weir_core::plan::{self, Plan};
use weir_core::spec::RolloutSpec;
use weir_core::state::State;
use weir_core::status::{Counts, Phase, RolloutStatus};

pub const STABLE: &str = "rev-stable";
pub const NEW: &str = "rev-new";

pub fn spec(extra_analysis: &str) -> RolloutSpec {
    let yaml = format!(
        r#"
targetRef: {{kind: Deployment, name: backend}}
trafficRouting:
  istio:
    virtualService: {{name: backend}}
    destinationRule: {{name: backend, stableSubset: stable, canarySubset: canary}}
steps: [{{weight: 10}}, {{weight: 25}}, {{weight: 50}}, {{weight: 100}}]
progressDeadline: 2m
scaleDownDelay: 10s
analysis:
  interval: 1m
  metrics:
    - {{name: request-success-rate, min: 99}}
    - {{name: request-duration, quantile: 0.99, max: 500}}
{extra_analysis}
"#
    );
    serde_saphyr::from_str(&yaml).expect("fixture spec parses")
}

/// How a revision behaves under traffic.
#[derive(Clone, Copy)]
pub struct Behaviour {
    pub error_ratio: f64,
    pub slow_ratio: f64,
    pub p99_ms: f64,
}

pub const HEALTHY: Behaviour = Behaviour {
    error_ratio: 0.002,
    slow_ratio: 0.0005,
    p99_ms: 120.0,
};
pub const BROKEN: Behaviour = Behaviour {
    error_ratio: 0.30,
    slow_ratio: 0.0005,
    p99_ms: 120.0,
};
pub const SLOW: Behaviour = Behaviour {
    error_ratio: 0.002,
    slow_ratio: 0.2,
    p99_ms: 900.0,
};

#[derive(Clone)]
pub enum Metrics {
    /// Deterministic counts at `rps` total, split by the current weight.
    Traffic { rps: f64, canary: Behaviour },
    /// Prometheus answers, but with nothing.
    NoData,
    /// Prometheus is down.
    Down,
}

pub struct Sim {
    pub plan: Plan,
    /// The status the controller decides from: in memory while it lives.
    pub status: RolloutStatus,
    /// The status the API server holds.
    pub stored: RolloutStatus,
    /// False after a restart, until the next decision: the controller starts from `stored`.
    pub memory: bool,
    pub now: Timestamp,
    pub target: TargetState,
    /// Which revision the stable pods run (the paused Deployment keeps the old ReplicaSet).
    pub stable_running: String,
    pub canary: Option<CanaryState>,
    pub weight: u32,
    pub request: Option<String>,
    pub pause: bool,
    pub metrics: Metrics,
    /// A shared incident: both versions fail at this ratio in [from, to).
    pub shared_incident: Option<(Timestamp, Timestamp, f64)>,
    pub canary_pods_start: bool,
    pub events: Vec<Event>,
    pub actions: Vec<Action>,
    pub weights_written: Vec<u32>,
    pub queries: Vec<AnalysisRequest>,
    /// API writes of each reconcile: actions, Events, and 1 when the status changed.
    pub writes: Vec<(Vec<Action>, usize)>,
    /// An HPA on the target: its replicas follow the share of traffic stable serves.
    pub hpa: bool,
    /// The Rollout is being deleted: the finalizer's cleanup decides (`engine::release`).
    pub deleting: bool,
    /// The cleanup finished: the finalizer is gone, and with it the Rollout and its canary.
    pub released: bool,
    /// Every write made so far, and the one before which the controller is killed.
    pub writes_made: usize,
    pub crash_before_write: Option<usize>,
    pub crashed_at: Option<Timestamp>,
    /// After the crash, Prometheus fails for this long.
    pub outage_after_crash: Duration,
    /// When the VirtualService last took all traffic off the canary.
    pub weight_zero_since: Option<Timestamp>,
    /// Broken invariants: traffic to a canary without ready pods, canary pods changed
    /// or removed while they carried traffic or before they drained.
    pub violations: Vec<String>,
    /// Panic at the first violation (scenarios) or collect them (the crash explorer).
    pub strict: bool,
    /// Why the routing objects do not fit, when they do not (no weight can be written).
    pub routing_problem: Option<String>,
    /// Another router's object routes the same Service (`World::routing_conflict`).
    pub routing_conflict: Option<String>,
    /// The managed routes carry different weights.
    pub routes_disagree: bool,
    /// A mesh that confirms what it applies (it writes status on the route), applying
    /// each weight written this long after the write; `None`: a mesh that writes no
    /// status and applies each weight at once.
    pub mesh_lag: Option<Duration>,
    /// The mesh lags as `mesh_lag` says but writes no status (nothing to wait for).
    pub mesh_silent: bool,
    /// The canary weight the data plane applies (with `mesh_lag`).
    pub mesh_weight: u32,
    /// When the data plane applies the last weight written, while it has not.
    pub mesh_push_at: Option<Timestamp>,
    /// When it last applied one.
    pub mesh_pushed_at: Timestamp,
    /// How each webhook (by name) answers its calls, in order; the last answer repeats.
    /// A webhook not here never answers.
    pub hook_replies: BTreeMap<String, VecDeque<Reply>>,
    /// Every webhook call made, in order (a restarted controller calls again).
    pub hook_calls: Vec<HookCall>,
    /// The controller's memory of calls: made (by key) and answered.
    pub hooks_called: Vec<HookKey>,
    pub hook_answers: Vec<HookAnswer>,
    /// The status the last decision came to, whether or not it was written.
    pub decided: RolloutStatus,
}

impl Sim {
    pub fn new(spec: &RolloutSpec) -> Sim {
        let plan = plan::plan(spec).expect("fixture spec is valid");
        let mut sim = Sim {
            plan,
            status: RolloutStatus::default(),
            stored: RolloutStatus::default(),
            memory: true,
            now: "2026-11-25T00:00:00Z".parse().unwrap(),
            target: TargetState {
                revision: STABLE.into(),
                image: Some("registry.example/backend:1.0".into()),
                paused: false,
                pods: Pods {
                    desired: 4,
                    generation: 1,
                    observed_generation: 1,
                    total: 4,
                    updated: 4,
                    available: 4,
                },
            },
            stable_running: STABLE.into(),
            canary: None,
            weight: 0,
            request: None,
            pause: false,
            shared_incident: None,
            metrics: Metrics::Traffic {
                rps: 200.0,
                canary: HEALTHY,
            },
            canary_pods_start: true,
            events: vec![],
            actions: vec![],
            weights_written: vec![],
            queries: vec![],
            writes: vec![],
            hpa: false,
            deleting: false,
            released: false,
            writes_made: 0,
            crash_before_write: None,
            crashed_at: None,
            outage_after_crash: Duration::ZERO,
            weight_zero_since: Some("2026-11-25T00:00:00Z".parse().unwrap()),
            violations: vec![],
            strict: true,
            routing_problem: None,
            routing_conflict: None,
            routes_disagree: false,
            mesh_lag: None,
            mesh_silent: false,
            mesh_weight: 0,
            mesh_push_at: None,
            mesh_pushed_at: "2026-11-25T00:00:00Z".parse().unwrap(),
            hook_replies: BTreeMap::new(),
            hook_calls: vec![],
            hooks_called: vec![],
            hook_answers: vec![],
            decided: RolloutStatus::default(),
        };
        sim.reconcile();
        assert_eq!(sim.status.phase, Phase::Healthy, "{}", sim.status.message);
        assert!(sim.target.paused, "weir pauses the Deployment it takes over");
        sim
    }

    pub fn bump(&mut self, revision: &str) {
        self.target.revision = revision.into();
        self.target.pods.generation += 1;
        self.target.pods.observed_generation = self.target.pods.generation;
        self.target.pods.updated = if self.target.paused {
            0
        } else {
            self.target.pods.desired
        };
    }

    pub fn readings(&self, req: AnalysisRequest) -> Vec<(String, Reading)> {
        let secs = req.window.as_secs_f64();
        self.plan
            .metrics
            .iter()
            .map(|m| {
                let reading = match &self.metrics {
                    Metrics::Down => Reading::Error("connection refused".into()),
                    Metrics::NoData => match m.kind.bad_ratio_bound() {
                        Some(_) => Reading::Counts {
                            canary: Counts::default(),
                            baseline: Counts::default(),
                            canary_value: None,
                            baseline_value: None,
                        },
                        None => Reading::Value(None),
                    },
                    Metrics::Traffic { rps, canary } => {
                        let w = f64::from(self.plane_weight()) / 100.0;
                        let (nc, nb) = (rps * w * secs, rps * (1.0 - w) * secs);
                        let is_latency = m.name == plan::REQUEST_DURATION;
                        let bad = |b: &Behaviour| if is_latency { b.slow_ratio } else { b.error_ratio };
                        let value = |b: &Behaviour, n: f64| {
                            let v = if is_latency {
                                b.p99_ms
                            } else {
                                100.0 * (1.0 - b.error_ratio)
                            };
                            (n >= 1.0).then_some(v)
                        };
                        // The share of the window inside a shared incident, if any.
                        let (share, incident_ratio) =
                            self.shared_incident
                                .filter(|_| !is_latency)
                                .map_or((0.0, 0.0), |(from, to, ratio)| {
                                    let start = self.now - jiff::SignedDuration::from_secs_f64(secs);
                                    let inside =
                                        to.min(self.now).duration_since(from.max(start)).as_secs_f64().max(0.0);
                                    (inside / secs, ratio)
                                });
                        let bad_of = |n: f64, b: &Behaviour| {
                            let ratio = bad(b) * (1.0 - share) + bad(b).max(incident_ratio) * share;
                            (n * ratio).round() as u64
                        };
                        Reading::Counts {
                            canary: Counts {
                                requests: nc as u64,
                                bad: bad_of(nc, canary),
                            },
                            baseline: Counts {
                                requests: nb as u64,
                                bad: bad_of(nb, &HEALTHY),
                            },
                            canary_value: value(canary, nc),
                            baseline_value: value(&HEALTHY, nb),
                        }
                    }
                };
                (m.name.clone(), reading)
            })
            .collect()
    }

    /// The canary weight requests go by: the data plane's.
    pub fn plane_weight(&self) -> u32 {
        match self.mesh_lag {
            Some(_) => self.mesh_weight,
            None => self.weight,
        }
    }

    /// The data plane applies the weight written once its push arrives; a weight with
    /// no ready canary pod behind it is a violation.
    pub fn mesh_catches_up(&mut self) {
        let Some(at) = self.mesh_push_at.filter(|t| *t <= self.now) else {
            return;
        };
        self.mesh_push_at = None;
        self.mesh_pushed_at = at;
        if self.weight == 0 && self.mesh_weight > 0 {
            self.weight_zero_since = Some(at);
        }
        self.mesh_weight = self.weight;
        if self.mesh_weight > 0 && self.canary_ready_pods() == 0 {
            self.violation(format!(
                "the data plane sends {}% to a canary without ready pods",
                self.mesh_weight
            ));
        }
    }

    fn mesh_confirmation(&self) -> MeshConfirmation {
        match (self.mesh_lag, self.mesh_push_at) {
            (None, _) => MeshConfirmation::NotWritten,
            (Some(_), _) if self.mesh_silent => MeshConfirmation::NotWritten,
            (Some(_), Some(_)) => MeshConfirmation::Pending("the route's generation is not yet Accepted".into()),
            (Some(_), None) => MeshConfirmation::Confirmed {
                since: self.mesh_pushed_at,
            },
        }
    }

    pub fn world(&mut self) -> World {
        self.mesh_catches_up();
        let readings = engine::analysis_request(&self.plan, &self.status, self.now).map(|req| {
            self.queries.push(req);
            if let State::Analysing { at, .. } = &self.status.state
                && self.status.judged_here
                && self.plane_weight() < at.weight
            {
                let what = format!(
                    "a look at step {} counted while the data plane applied {}% of {}%",
                    at.step + 1,
                    self.plane_weight(),
                    at.weight
                );
                self.violation(what);
            }
            if self
                .crashed_at
                .is_some_and(|t| self.now < after(t, self.outage_after_crash))
            {
                return self.down();
            }
            self.readings(req)
        });
        World {
            target: Some(self.target.clone()),
            canary: self.canary.clone(),
            traffic: match &self.routing_problem {
                Some(problem) => Err(problem.clone()),
                None => Ok(self.weight),
            },
            routes_disagree: self.routes_disagree,
            routing_conflict: self.routing_conflict.clone(),
            mesh: self.mesh_confirmation(),
            request: self.request.clone(),
            pause_requested: self.pause,
            readings,
            hook_answers: self.hook_answers.clone(),
        }
    }

    fn down(&self) -> Vec<(String, Reading)> {
        let error = || Reading::Error("connection refused".into());
        self.plan.metrics.iter().map(|m| (m.name.clone(), error())).collect()
    }

    /// One reconcile: decide from the status in memory (the stored one after a restart),
    /// then make the decision's writes in order, unless the controller is killed first.
    /// Returns when the engine asks to look again (`None`: nothing due).
    pub fn reconcile(&mut self) -> Option<Duration> {
        if !self.memory {
            self.status = self.stored.clone();
        }
        let world = self.world();
        let d = match self.deleting {
            true => engine::release(
                Some(&self.plan),
                Some(2),
                &self.status,
                &world,
                self.plan.scale_down_delay,
                self.now,
            ),
            false => engine::decide(Ok(&self.plan), Some(1), &self.status, &world, self.now),
        };
        self.decided = d.status.clone();
        let writes = d.writes(&self.stored);
        self.writes.push((d.actions.clone(), writes.len()));
        for write in writes {
            if self.crash_before_write == Some(self.writes_made) && self.crashed_at.is_none() {
                // Killed: the rest of this decision is never written, memory is lost.
                self.crashed_at = Some(self.now);
                self.memory = false;
                self.hooks_called.clear();
                self.hook_answers.clear();
                return Some(Duration::from_secs(1));
            }
            self.writes_made += 1;
            match write {
                Write::Status(status) => self.store(status),
                Write::Act(action) => {
                    self.apply(action);
                    self.actions.push(action.clone());
                }
                Write::Tell(event) => self.events.push(event.clone()),
            }
        }
        for ask in &d.asks {
            self.call(ask);
        }
        self.status = d.status;
        self.memory = true;
        self.released |= d.released;
        d.requeue_after
    }

    /// The controller makes a webhook call once per key; its answer is there by the next
    /// reconcile (or never).
    fn call(&mut self, ask: &HookCall) {
        if self.hooks_called.contains(&ask.key) {
            return;
        }
        self.hooks_called.push(ask.key.clone());
        self.hook_calls.push(ask.clone());
        let Some(replies) = self.hook_replies.get_mut(&ask.key.hook) else {
            return;
        };
        let reply = match replies.len() {
            0 => return,
            1 => replies[0],
            _ => replies.pop_front().unwrap_or(Reply::NoAnswer),
        };
        self.hook_answers.retain(|a| a.key.hook != ask.key.hook);
        self.hook_answers.push(HookAnswer {
            key: ask.key.clone(),
            reply,
            detail: format!("{} from {}", reply.as_str(), ask.url),
            attempts: 1,
        });
    }

    /// What the API server keeps of a status: its JSON, which must round-trip.
    fn store(&mut self, status: &RolloutStatus) {
        let json = serde_json::to_string(status).unwrap();
        let stored: RolloutStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(stored.decisive_part(), status.decisive_part(), "status round-trips");
        self.stored = stored;
    }

    fn violation(&mut self, what: String) {
        assert!(!self.strict, "{what} at {}", self.now);
        self.violations.push(format!("{} at {}", what, self.now));
    }

    pub fn apply(&mut self, a: &Action) {
        match a {
            Action::PauseTarget(p) => {
                self.target.paused = *p;
                self.target.pods.generation += 1;
            }
            Action::ReleaseTarget => self.target.paused = false,
            Action::RemoveCanary => {
                if self.weight > 0 || self.canary.as_ref().is_some_and(|c| c.pods.desired > 0) && !self.drained() {
                    self.violation("canary removed before its traffic drained".into());
                }
                self.canary = None;
            }
            Action::ApplyCanary { revision, replicas } => {
                let c = self.canary.clone().unwrap_or_default();
                let pods_leave = c.pods.desired > 0 && (*replicas == 0 || c.revision.as_ref() != Some(revision));
                let drained = self.drained();
                if pods_leave && (self.weight > 0 || !drained) {
                    self.violation(format!(
                        "canary pods changed or removed before their traffic drained (weight {}%, data plane {}%)",
                        self.weight,
                        self.plane_weight()
                    ));
                }
                let c = self.canary.get_or_insert_with(CanaryState::default);
                c.revision = Some(revision.clone());
                c.pods.desired = *replicas;
                c.pods.generation += 1;
                if pods_leave {
                    c.pods.available = 0;
                }
            }
            Action::SetCanaryWeight(w) => {
                if *w > 0 && self.canary_ready_pods() == 0 {
                    self.violation(format!("weight {w} sent to a canary without ready pods"));
                }
                if *w == 0 && self.weight > 0 && self.mesh_lag.is_none() {
                    self.weight_zero_since = Some(self.now);
                }
                if let Some(lag) = self.mesh_lag {
                    self.mesh_push_at = Some(after(self.now, lag));
                }
                self.weight = *w;
                self.weights_written.push(*w);
                self.routes_disagree = false;
            }
        }
    }

    /// No canary weight, in the routes and in the data plane, for at least `scaleDownDelay`.
    fn drained(&self) -> bool {
        self.weight == 0
            && self.plane_weight() == 0
            && self
                .weight_zero_since
                .is_some_and(|t| self.now >= after(t, self.plan.scale_down_delay))
    }

    pub fn canary_ready_pods(&self) -> i32 {
        self.canary.as_ref().map(|c| c.pods.available).unwrap_or(0)
    }

    /// The Kubernetes controllers catch up between reconciles.
    pub fn cluster_settles(&mut self) {
        self.mesh_catches_up();
        if self.released {
            // The Rollout is gone; its canary Deployment is garbage-collected.
            self.canary = None;
        }
        if self.hpa {
            // Stable's replicas follow the traffic it serves (at least one).
            let share = 100 - self.weight.min(100);
            self.target.pods.desired = ((4 * share).div_ceil(100) as i32).max(1);
        }
        if let Some(c) = self.canary.as_mut() {
            c.pods.observed_generation = c.pods.generation;
            c.pods.total = c.pods.desired;
            c.pods.updated = c.pods.desired;
            c.pods.available = if self.canary_pods_start { c.pods.desired } else { 0 };
        }
        let t = &mut self.target;
        t.pods.observed_generation = t.pods.generation;
        if !t.paused {
            self.stable_running = t.revision.clone();
            t.pods.updated = t.pods.desired;
            t.pods.total = t.pods.desired;
            t.pods.available = t.pods.desired;
        }
    }

    /// Reconciles until `done`, sleeping as the engine asks (at most `max_wait` at a time).
    pub fn run_until(&mut self, limit: Duration, done: impl Fn(&Sim) -> bool) {
        let end = self.now + jiff::SignedDuration::try_from(limit).unwrap();
        while !done(self) {
            assert!(self.now < end, "not done within {limit:?}; status: {:#?}", self.status);
            let wait = self.reconcile();
            self.cluster_settles();
            if done(self) {
                break;
            }
            let wait = wait.map_or(Duration::from_secs(5), |w| w.min(Duration::from_secs(5)));
            self.now += jiff::SignedDuration::try_from(wait).unwrap();
        }
    }

    pub fn event_reasons(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.reason.as_str()).collect()
    }
}

pub fn phase_is(p: Phase) -> impl Fn(&Sim) -> bool {
    move |s: &Sim| s.status.phase == p
}

pub fn minutes(m: u64) -> Duration {
    Duration::from_secs(60 * m)
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    t + jiff::SignedDuration::try_from(d).unwrap()
}
