//! The decision engine, as scenarios on a simulated clock against a simulated cluster.
//! Every reconcile round-trips the status through JSON, as the API server would.

use std::time::Duration;

use jiff::Timestamp;
use weir_core::engine::{self, Action, AnalysisRequest, CanaryState, Event, Pods, TargetState, World};
use weir_core::judge::Reading;
use weir_core::plan::{self, Plan};
use weir_core::spec::RolloutSpec;
use weir_core::status::{Counts, Phase, RolloutStatus};

const STABLE: &str = "rev-stable";
const NEW: &str = "rev-new";

fn spec(extra_analysis: &str) -> RolloutSpec {
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
  prometheus: {{address: "http://prometheus:9090"}}
  metrics:
    - {{name: request-success-rate, min: 99}}
    - {{name: request-duration, quantile: 0.99, max: 500}}
{extra_analysis}
"#
    );
    serde_yaml::from_str(&yaml).expect("fixture spec parses")
}

/// How a revision behaves under traffic.
#[derive(Clone, Copy)]
struct Behaviour {
    error_ratio: f64,
    slow_ratio: f64,
    p99_ms: f64,
}

const HEALTHY: Behaviour = Behaviour {
    error_ratio: 0.002,
    slow_ratio: 0.0005,
    p99_ms: 120.0,
};
const BROKEN: Behaviour = Behaviour {
    error_ratio: 0.30,
    slow_ratio: 0.0005,
    p99_ms: 120.0,
};
const SLOW: Behaviour = Behaviour {
    error_ratio: 0.002,
    slow_ratio: 0.2,
    p99_ms: 900.0,
};

#[derive(Clone)]
enum Metrics {
    /// Deterministic counts at `rps` total, split by the current weight.
    Traffic { rps: f64, canary: Behaviour },
    /// Prometheus answers, but with nothing.
    NoData,
    /// Prometheus is down.
    Down,
}

struct Sim {
    plan: Plan,
    status: RolloutStatus,
    now: Timestamp,
    target: TargetState,
    /// Which revision the stable pods run (the paused Deployment keeps the old ReplicaSet).
    stable_running: String,
    canary: Option<CanaryState>,
    weight: u32,
    request: Option<String>,
    pause: bool,
    metrics: Metrics,
    canary_pods_start: bool,
    events: Vec<Event>,
    actions: Vec<Action>,
    weights_written: Vec<u32>,
    queries: Vec<AnalysisRequest>,
    /// API writes of each reconcile: actions, Events, and 1 when the status changed.
    writes: Vec<(Vec<Action>, usize)>,
}

impl Sim {
    fn new(spec: &RolloutSpec) -> Sim {
        let plan = plan::plan(spec).expect("fixture spec is valid");
        let mut sim = Sim {
            plan,
            status: RolloutStatus::default(),
            now: "2026-11-25T00:00:00Z".parse().unwrap(),
            target: TargetState {
                revision: STABLE.into(),
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
        };
        sim.reconcile();
        assert_eq!(sim.status.phase, Phase::Healthy, "{}", sim.status.message);
        assert!(sim.target.paused, "weir pauses the Deployment it takes over");
        sim
    }

    fn bump(&mut self, revision: &str) {
        self.target.revision = revision.into();
        self.target.pods.generation += 1;
        self.target.pods.observed_generation = self.target.pods.generation;
        self.target.pods.updated = if self.target.paused {
            0
        } else {
            self.target.pods.desired
        };
    }

    fn readings(&self, req: AnalysisRequest) -> Vec<(String, Reading)> {
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
                        let w = f64::from(self.weight) / 100.0;
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
                        Reading::Counts {
                            canary: Counts {
                                requests: nc as u64,
                                bad: (nc * bad(canary)).round() as u64,
                            },
                            baseline: Counts {
                                requests: nb as u64,
                                bad: (nb * bad(&HEALTHY)).round() as u64,
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

    fn world(&mut self) -> World {
        let readings = engine::analysis_request(&self.plan, &self.status, self.now).map(|req| {
            self.queries.push(req);
            self.readings(req)
        });
        World {
            target: Some(self.target.clone()),
            canary: self.canary.clone(),
            traffic: Ok(self.weight),
            routes_disagree: false,
            request: self.request.clone(),
            pause_requested: self.pause,
            readings,
        }
    }

    /// One reconcile: decide, apply the actions to the simulated cluster, persist status.
    fn reconcile(&mut self) -> Duration {
        let world = self.world();
        let d = engine::decide(Ok(&self.plan), Some(1), &self.status, &world, self.now);
        for a in &d.actions {
            self.apply(a);
        }
        self.actions.extend(d.actions.clone());
        self.events.extend(d.events.clone());
        // The controller writes status when its decisive part changes (not at every look).
        let status_write = usize::from(d.status.decisive_part() != self.status.decisive_part());
        self.writes
            .push((d.actions.clone(), d.actions.len() + d.events.len() + status_write));
        // What the API server holds must round-trip; the controller decides next from
        // the status in its memory (with what is never written, `judged_here`).
        let json = serde_json::to_string(&d.status).unwrap();
        let stored: RolloutStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(stored.decisive_part(), d.status.decisive_part(), "status round-trips");
        self.status = d.status;
        d.requeue_after
    }

    fn apply(&mut self, a: &Action) {
        match a {
            Action::PauseTarget(p) => {
                self.target.paused = *p;
                self.target.pods.generation += 1;
            }
            Action::ApplyCanary { revision, replicas } => {
                let c = self.canary.get_or_insert_with(CanaryState::default);
                c.revision = Some(revision.clone());
                c.pods.desired = *replicas;
                c.pods.generation += 1;
            }
            Action::SetCanaryWeight(w) => {
                assert!(
                    *w == 0 || self.canary_ready_pods() > 0,
                    "weight {w} sent to a canary without ready pods"
                );
                self.weight = *w;
                self.weights_written.push(*w);
            }
            Action::ReleaseTarget => self.target.paused = false,
        }
    }

    fn canary_ready_pods(&self) -> i32 {
        self.canary.as_ref().map(|c| c.pods.available).unwrap_or(0)
    }

    /// The Kubernetes controllers catch up between reconciles.
    fn cluster_settles(&mut self) {
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
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Sim) -> bool) {
        let end = self.now + jiff::SignedDuration::try_from(limit).unwrap();
        while !done(self) {
            assert!(self.now < end, "not done within {limit:?}; status: {:#?}", self.status);
            let wait = self.reconcile();
            self.cluster_settles();
            if done(self) {
                break;
            }
            let wait = wait.min(Duration::from_secs(5));
            self.now += jiff::SignedDuration::try_from(wait).unwrap();
        }
    }

    fn event_reasons(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.reason.as_str()).collect()
    }
}

fn phase_is(p: Phase) -> impl Fn(&Sim) -> bool {
    move |s: &Sim| s.status.phase == p
}

fn minutes(m: u64) -> Duration {
    Duration::from_secs(60 * m)
}

#[test]
fn healthy_canary_is_promoted_through_every_step() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
    assert_eq!(sim.weights_written, vec![10, 25, 50, 100, 0]);
    assert_eq!(sim.status.stable_revision.as_deref(), Some(NEW));
    assert_eq!(sim.stable_running, NEW, "the user's Deployment runs the new template");
    assert!(sim.target.paused, "re-paused so the next bump waits for weir");
    assert_eq!(sim.canary.as_ref().map(|c| c.pods.desired), Some(0));
    let reasons = sim.event_reasons();
    let passed = sim.events.iter().filter(|e| e.note.contains("step passed")).count();
    assert_eq!(passed, 4, "every step's verdict is in an Event");
    assert!(reasons.contains(&"Promoted"));
    // Moving from one step to the next costs three API writes: the weight, one Event
    // (the new step, with the verdict of the one before) and the status.
    for w in [25, 50, 100] {
        let (_, writes) = sim
            .writes
            .iter()
            .find(|(actions, _)| actions.contains(&Action::SetCanaryWeight(w)))
            .unwrap();
        assert_eq!(*writes, 3, "writes of the step to {w}%");
    }
}

#[test]
fn looks_between_steps_write_nothing() {
    // 20 rps: the sequential judge looks every 5 s for the whole 1-minute steps.
    let mut sim = Sim::new(&spec(""));
    sim.metrics = Metrics::Traffic {
        rps: 20.0,
        canary: HEALTHY,
    };
    sim.bump(NEW);
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
    assert_eq!(sim.weights_written, vec![10, 25, 50, 100, 0]);
    assert!(sim.queries.len() > 40, "{} looks", sim.queries.len());
    // A reconcile that changes nothing in the cluster writes nothing: no status, no Event.
    for (actions, writes) in &sim.writes {
        if actions.is_empty() {
            assert_eq!(*writes, 0, "a look without a decision wrote something");
        }
        // A weight change is the weight, one Event and the status.
        if let [Action::SetCanaryWeight(w)] = actions.as_slice() {
            assert_eq!(*writes, 3, "writes of the step to {w}%");
        }
    }
    // Traffic moved back to stable only once stable ran the new template on every replica.
    let back = sim
        .actions
        .iter()
        .position(|a| *a == Action::SetCanaryWeight(0))
        .unwrap();
    let unpause = sim
        .actions
        .iter()
        .position(|a| *a == Action::PauseTarget(false))
        .unwrap();
    assert!(unpause < back);
}

#[test]
fn the_sequential_judge_ends_healthy_steps_early_but_not_before_min_dwell() {
    let mut sim = Sim::new(&spec("  sequential: {minDwell: 30s}"));
    sim.bump(NEW);
    let start = sim.now;
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
    let took = sim.now.duration_since(start);
    assert!(
        took < jiff::SignedDuration::from_mins(4),
        "4 steps of 1m should end early at 200 rps, took {took:?}"
    );
    assert!(
        took > jiff::SignedDuration::from_secs(4 * 30),
        "min dwell respected, took {took:?}"
    );
}

#[test]
fn threshold_judge_runs_every_step_to_its_end_and_promotes() {
    let mut sim = Sim::new(&spec("  judge: threshold"));
    sim.bump(NEW);
    let start = sim.now;
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
    assert!(sim.now.duration_since(start) >= jiff::SignedDuration::from_mins(4));
    // One query per metric per look, each over one interval.
    assert!(sim.queries.iter().all(|q| q.window == Duration::from_secs(60)));
}

fn rollback_at_step(judge: &str, step: usize) {
    let mut sim = Sim::new(&spec(judge));
    sim.bump(NEW);
    let weights = [10, 25, 50, 100];
    // The canary turns bad once it reaches the given step.
    sim.run_until(minutes(30), |s| s.weight == weights[step]);
    sim.metrics = Metrics::Traffic {
        rps: 200.0,
        canary: BROKEN,
    };
    sim.run_until(minutes(30), phase_is(Phase::RolledBack));
    assert_eq!(sim.weight, 0, "all traffic back on stable");
    assert!(
        sim.weights_written.iter().all(|w| *w <= weights[step]),
        "weight never passed the failing step"
    );
    // The canary pods keep running until the mesh has stopped sending them requests.
    assert!(
        sim.canary.as_ref().is_some_and(|c| c.pods.desired > 0),
        "canary drains first"
    );
    let rolled_back_at = sim.now;
    sim.run_until(minutes(1), |s| s.canary.as_ref().map(|c| c.pods.desired) == Some(0));
    assert!(
        sim.now.duration_since(rolled_back_at) >= jiff::SignedDuration::from_secs(10),
        "scaleDownDelay respected"
    );
    let rb = sim.status.rollback.clone().expect("rollback recorded");
    assert_eq!(rb.step as usize, step + 1);
    assert_eq!(rb.weight, weights[step]);
    assert_eq!(rb.metric.as_deref(), Some("request-success-rate"));
    assert!(
        rb.value.is_some_and(|v| v < 99.0),
        "the breaching value is recorded: {rb:?}"
    );
    assert_eq!(rb.bound.as_deref(), Some(">= 99%"), "{rb:?}");
    assert!(!rb.reason.is_empty() && sim.status.message.contains("rolled back"));
    assert!(sim.events.iter().any(|e| e.warning && e.reason == "RolledBack"));
    assert_eq!(sim.status.rolled_back_revision.as_deref(), Some(NEW));
    assert_eq!(sim.stable_running, STABLE);

    // The same revision is not retried by itself...
    let writes = sim.actions.len();
    for _ in 0..10 {
        sim.reconcile();
        sim.now += jiff::SignedDuration::from_secs(30);
    }
    assert_eq!(sim.status.phase, Phase::RolledBack);
    assert_eq!(sim.actions.len(), writes, "nothing written while rolled back");
}

#[test]
fn a_breach_at_any_step_rolls_back_with_the_sequential_judge() {
    for step in 0..4 {
        rollback_at_step("", step);
    }
}

#[test]
fn a_breach_at_any_step_rolls_back_with_the_threshold_judge() {
    for step in 0..4 {
        rollback_at_step("  judge: threshold\n  failureLimit: 0", step);
    }
}

#[test]
fn the_threshold_judge_tolerates_failure_limit_breaches_cumulatively() {
    let mut sim = Sim::new(&spec("  judge: threshold\n  failureLimit: 2"));
    sim.bump(NEW);
    sim.run_until(minutes(5), |s| s.weight == 10);
    sim.metrics = Metrics::Traffic {
        rps: 200.0,
        canary: BROKEN,
    };
    sim.run_until(minutes(10), phase_is(Phase::RolledBack));
    let breaches = sim.events.iter().filter(|e| e.reason == "AnalysisBreach").count();
    assert_eq!(breaches, 2, "two tolerated, the third rolls back");
}

#[test]
fn a_slow_canary_is_rolled_back_on_latency() {
    let mut sim = Sim::new(&spec(""));
    sim.metrics = Metrics::Traffic {
        rps: 200.0,
        canary: SLOW,
    };
    sim.bump(NEW);
    sim.run_until(minutes(10), phase_is(Phase::RolledBack));
    let rb = sim.status.rollback.clone().unwrap();
    assert_eq!(rb.metric.as_deref(), Some("request-duration"));
    assert_eq!(rb.step, 1);
}

#[test]
fn no_data_holds_the_step_and_the_deadline_rolls_back() {
    let mut sim = Sim::new(&spec(""));
    sim.metrics = Metrics::NoData;
    sim.bump(NEW);
    sim.run_until(minutes(10), phase_is(Phase::RolledBack));
    assert_eq!(sim.weights_written, vec![10, 0], "held at step 1, never promoted blind");
    let rb = sim.status.rollback.unwrap();
    assert!(rb.reason.contains("progressDeadline"), "{}", rb.reason);
    assert!(rb.reason.contains("too little canary traffic"), "{}", rb.reason);
}

#[test]
fn prometheus_errors_hold_without_counting_as_breaches_and_recovery_resumes() {
    let mut sim = Sim::new(&spec("  judge: threshold"));
    sim.bump(NEW);
    sim.run_until(minutes(2), |s| s.weight == 10);
    sim.metrics = Metrics::Down;
    sim.run_until(minutes(3), |s| {
        s.status.analysis.as_ref().is_some_and(|a| a.consecutive_errors >= 3)
    });
    let a = sim.status.analysis.clone().unwrap();
    assert_eq!(a.failures, 0, "errors are not breaches");
    assert!(a.last_error.unwrap().contains("connection refused"));
    assert_eq!(sim.weight, 10, "held");
    let errors = sim.event_reasons().iter().filter(|r| **r == "AnalysisError").count();
    assert_eq!(errors, 1, "one Event when the outage begins, not one per look");
    sim.metrics = Metrics::Traffic {
        rps: 200.0,
        canary: HEALTHY,
    };
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
}

#[test]
fn a_prometheus_outage_past_the_deadline_rolls_back() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    sim.run_until(minutes(2), |s| s.weight == 25);
    sim.metrics = Metrics::Down;
    sim.run_until(minutes(10), phase_is(Phase::RolledBack));
    assert!(sim.status.rollback.unwrap().reason.contains("Prometheus"));
    assert!(sim.weights_written.iter().all(|w| *w <= 25));
}

#[test]
fn a_newer_revision_mid_canary_restarts_analysis_for_it() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    sim.run_until(minutes(10), |s| s.weight == 50);
    sim.bump("rev-newer");
    sim.reconcile();
    assert_eq!(sim.weight, 0, "traffic leaves the canary before its pods change");
    assert_eq!(sim.status.canary_revision.as_deref(), Some("rev-newer"));
    assert_eq!(sim.status.current_step, Some(0));
    assert!(sim.event_reasons().contains(&"NewerRevision"));
    sim.cluster_settles();
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
    assert_eq!(sim.status.stable_revision.as_deref(), Some("rev-newer"));
    assert_eq!(sim.weights_written, vec![10, 25, 50, 0, 10, 25, 50, 100, 0]);
}

#[test]
fn a_revert_to_the_stable_template_cancels_the_canary() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    sim.run_until(minutes(10), |s| s.weight == 25);
    sim.bump(STABLE);
    sim.reconcile();
    assert_eq!(sim.weight, 0);
    sim.run_until(minutes(1), |s| s.canary.as_ref().map(|c| c.pods.desired) == Some(0));
    assert_eq!(sim.status.phase, Phase::Healthy);
    assert_eq!(sim.status.canary_revision, None);
    assert!(sim.event_reasons().contains(&"CanaryCancelled"));
}

#[test]
fn no_weight_is_written_before_canary_pods_are_ready_and_the_deadline_rolls_back() {
    let mut sim = Sim::new(&spec(""));
    sim.canary_pods_start = false;
    sim.bump(NEW);
    sim.run_until(minutes(5), phase_is(Phase::RolledBack));
    assert!(sim.weights_written.is_empty(), "{:?}", sim.weights_written);
    assert!(sim.status.rollback.unwrap().reason.contains("not ready"));
}

#[test]
fn a_canary_that_loses_its_pods_loses_its_traffic_at_once() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    sim.run_until(minutes(10), |s| s.weight == 25);
    sim.canary_pods_start = false;
    sim.cluster_settles();
    sim.reconcile();
    assert_eq!(sim.weight, 0);
    assert!(sim.event_reasons().contains(&"CanaryNotReady"));
}

/// A crash at any instant: the decision's writes may land, its status write may not.
#[test]
fn a_restart_at_any_point_neither_skips_nor_repeats_a_step() {
    for crash_after in 1..40 {
        let mut sim = Sim::new(&spec(""));
        sim.bump(NEW);
        let mut n = 0;
        let mut steps_seen = vec![];
        while sim.status.phase != Phase::Succeeded {
            assert!(n < 400, "stuck after crash at {crash_after}: {:#?}", sim.status);
            n += 1;
            let before = sim.status.clone();
            let wait = sim.reconcile();
            if n == crash_after {
                // Controller killed after applying, before its status write landed.
                sim.status = before;
            }
            if let Some(s) = sim.status.current_step
                && steps_seen.last() != Some(&s)
            {
                steps_seen.push(s);
            }
            sim.cluster_settles();
            sim.now += jiff::SignedDuration::try_from(wait.min(Duration::from_secs(5))).unwrap();
        }
        assert_eq!(steps_seen, vec![0, 1, 2, 3], "crash at reconcile {crash_after}");
        let raised: Vec<u32> = sim.weights_written.iter().copied().filter(|w| *w > 0).collect();
        assert!(
            raised.windows(2).all(|w| w[0] <= w[1]),
            "weight moved back: {:?}",
            sim.weights_written
        );
    }
}

#[test]
fn pause_holds_the_step_and_resume_continues() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    sim.run_until(minutes(5), |s| s.weight == 25);
    sim.pause = true;
    sim.reconcile();
    assert_eq!(sim.status.phase, Phase::Paused);
    for _ in 0..20 {
        sim.now += jiff::SignedDuration::from_mins(1);
        sim.reconcile();
    }
    assert_eq!(sim.weight, 25, "no step while paused, and no deadline rollback");
    sim.pause = false;
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
}

#[test]
fn abort_rolls_back_and_retry_runs_the_same_revision_again() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    sim.run_until(minutes(5), |s| s.weight == 25);
    sim.request = Some("abort/1".into());
    sim.reconcile();
    assert_eq!(sim.status.phase, Phase::RolledBack);
    assert!(sim.status.rollback.as_ref().unwrap().reason.contains("aborted"));
    sim.reconcile();
    assert_eq!(sim.status.phase, Phase::RolledBack, "a request acts once");
    sim.request = Some("retry/2".into());
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
    assert_eq!(sim.status.stable_revision.as_deref(), Some(NEW));
}

#[test]
fn promote_request_passes_the_current_step_without_waiting() {
    let mut sim = Sim::new(&spec("  judge: threshold"));
    sim.bump(NEW);
    sim.run_until(minutes(5), |s| s.weight == 10);
    let t = sim.now;
    sim.request = Some("promote/1".into());
    sim.run_until(minutes(5), |s| s.weight == 25);
    assert!(sim.now.duration_since(t) < jiff::SignedDuration::from_secs(30));
}

#[test]
fn the_canary_follows_the_hpa() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    sim.run_until(minutes(5), |s| s.weight == 25);
    assert_eq!(sim.canary.as_ref().unwrap().pods.desired, 1);
    sim.target.pods.desired = 20; // HPA scaled stable up
    sim.reconcile();
    assert_eq!(sim.canary.as_ref().unwrap().pods.desired, 5, "25% of 20");
}

#[test]
fn a_reverted_weight_is_written_again() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    sim.run_until(minutes(5), |s| s.weight == 25);
    sim.weight = 0; // a GitOps sync put the file's weights back
    sim.reconcile();
    assert_eq!(sim.weight, 25);
}

#[test]
fn an_invalid_spec_is_reported_and_nothing_is_touched() {
    let errors = vec!["steps[1].weight: 5 does not exceed the previous step's 10".to_string()];
    let status = RolloutStatus::default();
    let world = World::unobserved();
    let d = engine::decide(Err(&errors), Some(3), &status, &world, Timestamp::UNIX_EPOCH);
    assert!(d.actions.is_empty());
    assert_eq!(d.status.phase, Phase::InvalidSpec);
    assert!(d.status.message.contains("steps[1].weight"));
    assert!(d.events.iter().any(|e| e.warning && e.reason == "InvalidSpec"));
    let c = d.status.conditions.iter().find(|c| c.type_ == "SpecValid").unwrap();
    assert_eq!(c.status, "False");
    // The same problem again: no second Event.
    let again = engine::decide(Err(&errors), Some(3), &d.status, &world, Timestamp::UNIX_EPOCH);
    assert!(again.events.is_empty());
}

#[test]
fn a_missing_deployment_or_unusable_routing_is_reported_precisely() {
    let sim = Sim::new(&spec(""));
    let mut world = World::unobserved();
    let d = engine::decide(Ok(&sim.plan), Some(1), &sim.status, &world, sim.now);
    assert_eq!(d.status.phase, Phase::InvalidSpec);
    assert_eq!(d.status.message, "Deployment backend not found");
    world.target = Some(sim.target.clone());
    world.traffic = Err("VirtualService dev/backend: no HTTP route has both destinations".into());
    let d = engine::decide(Ok(&sim.plan), Some(1), &sim.status, &world, sim.now);
    assert!(d.actions.is_empty());
    assert!(d.status.message.contains("no HTTP route"));
    // Fixed: back to work.
    world.traffic = Ok(0);
    let d = engine::decide(Ok(&sim.plan), Some(1), &d.status, &world, sim.now);
    assert_eq!(d.status.phase, Phase::Healthy);
}

#[test]
fn taking_over_waits_for_the_deployments_own_rollout() {
    let s = spec("");
    let p = plan::plan(&s).unwrap();
    let target = TargetState {
        revision: "r".into(),
        paused: false,
        pods: Pods {
            desired: 3,
            generation: 2,
            observed_generation: 2,
            total: 4,
            updated: 2,
            available: 3,
        },
    };
    let world = World {
        target: Some(target),
        canary: None,
        traffic: Ok(0),
        routes_disagree: false,
        request: None,
        pause_requested: false,
        readings: None,
    };
    let d = engine::decide(
        Ok(&p),
        Some(1),
        &RolloutStatus::default(),
        &world,
        Timestamp::UNIX_EPOCH,
    );
    assert_eq!(d.status.phase, Phase::Initializing);
    assert!(d.actions.is_empty());
}

fn invalid(yaml_patch: impl Fn(&mut serde_json::Value)) -> Vec<String> {
    let mut v = serde_json::to_value(spec("")).unwrap();
    yaml_patch(&mut v);
    let s: RolloutSpec = serde_json::from_value(v).unwrap();
    plan::plan(&s).expect_err("spec should be refused")
}

#[test]
fn every_class_of_invalid_spec_is_refused_with_a_precise_message() {
    use serde_json::json;
    type Patch = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Patch)> = vec![
        (
            "steps[1].weight",
            Box::new(|v| v["steps"] = json!([{"weight": 50}, {"weight": 20}])),
        ),
        ("steps[0].weight: 0", Box::new(|v| v["steps"] = json!([{"weight": 0}]))),
        (
            "steps[0].weight: 150",
            Box::new(|v| v["steps"] = json!([{"weight": 150}])),
        ),
        ("steps: at least one", Box::new(|v| v["steps"] = json!([]))),
        (
            "steps[0].duration",
            Box::new(|v| v["steps"] = json!([{"weight": 10, "duration": "soon"}])),
        ),
        (
            "analysis.interval",
            Box::new(|v| v["analysis"]["interval"] = json!("0s")),
        ),
        ("progressDeadline", Box::new(|v| v["progressDeadline"] = json!("-1m"))),
        (
            "min 99.5 exceeds max 1",
            Box::new(|v| v["analysis"]["metrics"] = json!([{"name": "x", "query": "up", "min": 99.5, "max": 1}])),
        ),
        (
            "needs a min or a max",
            Box::new(|v| v["analysis"]["metrics"] = json!([{"name": "x", "query": "up"}])),
        ),
        (
            "unknown template variable {{pod}}",
            Box::new(|v| v["analysis"]["metrics"] = json!([{"name": "x", "query": "up{pod=\"{{pod}}\"}", "max": 1}])),
        ),
        (
            "not a built-in metric",
            Box::new(|v| v["analysis"]["metrics"] = json!([{"name": "error-rate", "max": 1}])),
        ),
        (
            "not a bucket bound",
            Box::new(|v| v["analysis"]["metrics"] = json!([{"name": "request-duration", "max": 300}])),
        ),
        (
            "needs min (percent)",
            Box::new(|v| v["analysis"]["metrics"] = json!([{"name": "request-success-rate", "max": 1}])),
        ),
        (
            "at least one metric",
            Box::new(|v| v["analysis"]["metrics"] = json!([])),
        ),
        (
            "appears twice",
            Box::new(|v| {
                v["analysis"]["metrics"] =
                    json!([{"name": "request-success-rate", "min": 99}, {"name": "request-success-rate", "min": 98}])
            }),
        ),
        (
            "targetRef.kind",
            Box::new(|v| v["targetRef"]["kind"] = json!("StatefulSet")),
        ),
        (
            "targetRef.name",
            Box::new(|v| v["targetRef"]["name"] = json!("Back_End")),
        ),
        (
            "exactly one of destinationRule",
            Box::new(|v| v["trafficRouting"]["istio"]["hosts"] = json!({"stableService": "a", "canaryService": "b"})),
        ),
        (
            "must differ",
            Box::new(|v| v["trafficRouting"]["istio"]["destinationRule"]["canarySubset"] = json!("stable")),
        ),
        (
            "alpha",
            Box::new(|v| v["analysis"]["sequential"] = json!({"alpha": 0.9})),
        ),
        (
            "http",
            Box::new(|v| v["analysis"]["prometheus"]["address"] = json!("prometheus:9090")),
        ),
    ];
    for (expected, patch) in cases {
        let errors = invalid(patch);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "expected {expected:?} in {errors:?}"
        );
    }
}

#[test]
fn a_custom_metric_never_ends_a_step_early() {
    // A custom query is judged by its value over a window: no sequential evidence, so
    // under the default judge too every step runs its full minute.
    let mut s = spec("");
    s.analysis.metrics = serde_yaml::from_str("[{name: jobs-ok-percent, query: 'vector(100)', min: 90}]").unwrap();
    let mut sim = Sim::new(&s);
    sim.bump(NEW);
    sim.run_until(minutes(2), |s| s.weight == 10);
    let started = sim.now;
    sim.run_until(minutes(5), |s| s.weight == 25);
    let took = sim.now.duration_since(started);
    assert!(took >= jiff::SignedDuration::from_secs(60), "step 1 ended after {took}");
}
