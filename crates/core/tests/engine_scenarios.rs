//! The decision engine, as scenarios on a simulated clock against a simulated cluster.
//! Every reconcile round-trips the status through JSON, as the API server would.

mod support;

use std::time::Duration;
use weir_core::spec::SpecError;
use weir_core::vocabulary::{ConditionType, Reason};

use jiff::Timestamp;
use support::*;
use weir_core::engine::{self, Action, Pods, TargetState, World};
use weir_core::plan;
use weir_core::spec::RolloutSpec;
use weir_core::state::State;
use weir_core::status::{Phase, RolloutStatus};

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
fn a_rollout_at_rest_asks_for_no_timer_and_one_under_analysis_does() {
    let mut sim = Sim::new(&spec(""));
    assert_eq!(sim.reconcile(), None, "at rest: nothing is due until something changes");
    sim.bump(NEW);
    sim.run_until(minutes(5), |s| s.status.current_step.is_some());
    let due = sim.reconcile().expect("under analysis, a look is due");
    assert!(due <= minutes(1), "looked at again within the step: {due:?}");
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
    assert_eq!(sim.reconcile(), None, "promoted: nothing is due");
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
    assert!(sim.events.iter().any(|e| e.warning && e.reason == Reason::RolledBack));
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
    let breaches = sim.events.iter().filter(|e| e.reason == Reason::AnalysisBreach).count();
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

/// The Event and the condition that say a step is stuck, and when they were first said.
fn stuck_told(sim: &Sim, reason: Reason) -> usize {
    sim.events.iter().filter(|e| e.reason == reason && e.warning).count()
}

#[test]
fn a_step_without_a_verdict_is_told_stuck_once_half_way_to_its_deadline() {
    let mut sim = Sim::new(&spec(""));
    sim.metrics = Metrics::NoData;
    sim.bump(NEW);
    sim.run_until(minutes(2), |s| s.weight == 10);
    let started = sim.now;
    sim.run_until(minutes(10), |s| stuck_told(s, Reason::DeadlineNear) > 0);
    // Step due after 1m (interval), deadline 2m after that: half way is 2m after the start.
    let after = sim.now.duration_since(started).as_secs();
    assert!((118..=125).contains(&after), "told {after}s after the step started");
    let stuck = sim.status.condition(ConditionType::Stuck).unwrap().clone();
    assert_eq!((stuck.status.as_str(), stuck.reason.as_str()), ("True", "DeadlineNear"));
    assert!(
        stuck
            .message
            .contains("step 1/4: no passing verdict yet; rolled back at"),
        "{}",
        stuck.message
    );
    sim.run_until(minutes(10), phase_is(Phase::RolledBack));
    assert_eq!(
        stuck_told(&sim, Reason::DeadlineNear),
        1,
        "told once, not at every look"
    );
    assert_eq!(sim.status.condition(ConditionType::Stuck).unwrap().status, "False");
}

#[test]
fn canary_pods_that_do_not_start_are_told_stuck_once() {
    let mut sim = Sim::new(&spec(""));
    sim.canary_pods_start = false;
    sim.bump(NEW);
    sim.run_until(minutes(5), phase_is(Phase::RolledBack));
    assert_eq!(stuck_told(&sim, Reason::WaitingForPods), 1);
    let note = &sim
        .events
        .iter()
        .find(|e| e.reason == Reason::WaitingForPods)
        .unwrap()
        .note;
    assert!(
        note.contains("step 1/4: the canary's pods are not ready; rolled back at"),
        "{note}"
    );
}

#[test]
fn a_healthy_release_is_never_told_stuck() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
    assert!(
        sim.status.condition(ConditionType::Stuck).is_none(),
        "{:?}",
        sim.status.conditions
    );
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
    let errors = vec![SpecError::new(
        "steps[1].weight",
        "5 does not exceed the previous step's 10",
    )];
    let status = RolloutStatus::default();
    let world = World::unobserved();
    let d = engine::decide(Err(&errors), Some(3), &status, &world, Timestamp::UNIX_EPOCH);
    assert!(d.actions.is_empty());
    assert_eq!(d.status.phase, Phase::InvalidSpec);
    assert!(d.status.message.contains("steps[1].weight"));
    assert!(d.events.iter().any(|e| e.warning && e.reason == Reason::InvalidSpec));
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
        image: None,
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
        routing_conflict: None,
        mesh: Default::default(),
        request: None,
        pause_requested: false,
        readings: None,
        hook_answers: vec![],
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
    let errors = plan::plan(&s).expect_err("spec should be refused");
    errors.iter().map(ToString::to_string).collect()
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
            "analysis.provider: \"http://evil:9090\" is not a valid provider name",
            Box::new(|v| v["analysis"]["provider"] = json!("http://evil:9090")),
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
    s.analysis.metrics = serde_saphyr::from_str("[{name: jobs-ok-percent, query: 'vector(100)', min: 90}]").unwrap();
    let mut sim = Sim::new(&s);
    sim.bump(NEW);
    sim.run_until(minutes(2), |s| s.weight == 10);
    let started = sim.now;
    sim.run_until(minutes(5), |s| s.weight == 25);
    let took = sim.now.duration_since(started);
    assert!(took >= jiff::SignedDuration::from_secs(60), "step 1 ended after {took}");
}

// ------------------------------------------------------------ lifecycle: the holes closed

/// Runs until the canary serves `weight`.
fn at_weight(sim: &mut Sim, weight: u32) {
    sim.run_until(minutes(10), move |s| s.weight == weight);
}

#[test]
fn deleting_a_rollout_mid_canary_hands_traffic_then_the_deployment_back() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    at_weight(&mut sim, 25);
    sim.deleting = true;
    sim.reconcile();
    assert_eq!(sim.weight, 0, "all traffic on stable at once");
    assert_eq!(sim.status.phase, Phase::Deleting);
    assert!(!sim.released, "the finalizer stays while the canary drains");
    assert_eq!(
        sim.canary.as_ref().map(|c| c.pods.available),
        Some(1),
        "canary pods drain"
    );
    let asked = sim.now;
    sim.run_until(minutes(1), |s| s.released);
    assert!(
        sim.now.duration_since(asked) >= jiff::SignedDuration::from_secs(10),
        "scaleDownDelay"
    );
    assert!(
        !sim.target.paused,
        "weir let go of the Deployment: its pending template rolls out"
    );
    let n = sim.actions.len();
    assert_eq!(sim.actions[n - 2..], [Action::ReleaseTarget, Action::RemoveCanary]);
}

#[test]
fn deleting_under_an_hpa_hands_traffic_back_as_stable_grows() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    at_weight(&mut sim, 50);
    let stable = |sim: &mut Sim, replicas: i32| {
        sim.target.pods.desired = replicas;
        sim.target.pods.available = replicas;
    };
    // The HPA shrank stable to 2 of 4 while the canary took half the load.
    stable(&mut sim, 2);
    sim.deleting = true;
    sim.reconcile();
    assert_eq!(
        sim.weight, 25,
        "one hop back: stable carries its half, then a step more"
    );
    assert!(!sim.released, "the canary keeps its share while stable grows");
    stable(&mut sim, 3);
    sim.now += jiff::SignedDuration::from_secs(5);
    sim.reconcile();
    assert_eq!(sim.weight, 10);
    stable(&mut sim, 4);
    sim.run_until(minutes(2), |s| s.released);
    let n = sim.weights_written.len();
    assert_eq!(sim.weights_written[n - 3..], [25, 10, 0]);
    let hops = sim
        .events
        .iter()
        .filter(|e| e.reason == Reason::TrafficToStable)
        .count();
    assert_eq!(hops, 2, "each hop told");
}

#[test]
fn deleting_under_an_hpa_with_the_canary_pods_gone_takes_all_traffic_off_at_once() {
    // Found by the engine fuzz target: stepping back sent a share to a canary with no pod.
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    at_weight(&mut sim, 50);
    sim.target.pods.desired = 2;
    sim.target.pods.available = 2;
    sim.canary.as_mut().unwrap().pods.available = 0;
    sim.strict = false;
    sim.deleting = true;
    sim.reconcile();
    assert_eq!(sim.weight, 0, "no share stays on a canary without pods");
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn deleting_an_idle_rollout_releases_at_once() {
    let mut sim = Sim::new(&spec(""));
    sim.deleting = true;
    sim.reconcile();
    assert!(sim.released);
    assert!(!sim.target.paused);
}

/// Runs a healthy canary into promotion, and leaves the Deployment mid-rollout.
fn promoting(sim: &mut Sim) {
    sim.bump(NEW);
    sim.run_until(minutes(30), phase_is(Phase::Promoting));
    assert!(!sim.target.paused, "promotion unpauses the Deployment");
    sim.target.pods.updated = 1;
}

#[test]
fn a_promotion_that_does_not_finish_is_reported_and_the_canary_keeps_its_traffic() {
    let mut sim = Sim::new(&spec(""));
    promoting(&mut sim);
    let started = sim.now;
    // The Deployment never becomes ready on the new template.
    sim.target.pods.available = 0;
    for _ in 0..40 {
        sim.now += jiff::SignedDuration::from_secs(10);
        sim.reconcile();
    }
    assert!(sim.now.duration_since(started) > jiff::SignedDuration::from_mins(2));
    assert_eq!(sim.status.phase, Phase::Promoting);
    assert_eq!(sim.weight, 100, "the judged canary keeps serving");
    let stalled = sim
        .events
        .iter()
        .filter(|e| e.reason == Reason::PromotionStalled)
        .count();
    assert_eq!(stalled, 1, "reported once, past progressDeadline");
}

#[test]
fn a_bump_during_promotion_is_stopped_until_the_template_is_back() {
    let mut sim = Sim::new(&spec(""));
    promoting(&mut sim);
    sim.bump("rev-unjudged");
    sim.reconcile();
    assert!(sim.target.paused, "the unjudged template does not roll out");
    assert_eq!(sim.weight, 100);
    assert!(sim.event_reasons().contains(&"PromotionInterrupted"));
    assert!(sim.status.message.contains("rev-unjudged"), "{}", sim.status.message);
    sim.bump(NEW);
    sim.run_until(minutes(5), phase_is(Phase::Succeeded));
    assert_eq!(sim.stable_running, NEW);
}

#[test]
fn abort_during_promotion_is_refused_and_said_so() {
    let mut sim = Sim::new(&spec(""));
    promoting(&mut sim);
    sim.request = Some("abort/7".into());
    sim.reconcile();
    assert!(sim.event_reasons().contains(&"AbortRefused"));
    assert!(!sim.target.paused, "the promotion goes on");
    sim.cluster_settles();
    sim.run_until(minutes(5), phase_is(Phase::Succeeded));
}

#[test]
fn a_revert_during_promotion_waits_for_stable_then_drains_the_canary() {
    let mut sim = Sim::new(&spec(""));
    promoting(&mut sim);
    sim.bump(STABLE);
    sim.target.pods.updated = 1;
    sim.reconcile();
    assert_eq!(sim.weight, 100, "the canary serves until stable is ready again");
    sim.cluster_settles();
    sim.reconcile();
    assert_eq!(sim.weight, 0);
    assert_eq!(sim.canary.as_ref().map(|c| c.pods.desired), Some(4), "pods drain first");
    sim.run_until(minutes(1), |s| {
        s.status.phase == Phase::Healthy && s.canary.as_ref().is_some_and(|c| c.pods.desired == 0)
    });
    assert_eq!(sim.status.stable_revision.as_deref(), Some(STABLE));
    assert!(sim.event_reasons().contains(&"CanaryCancelled"));
}

#[test]
fn a_newer_revision_drains_the_old_canary_before_its_pods_change() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    at_weight(&mut sim, 25);
    sim.bump("rev-newer");
    sim.reconcile();
    assert_eq!(sim.weight, 0);
    let canary = sim.canary.clone().unwrap();
    assert_eq!(
        canary.revision.as_deref(),
        Some(NEW),
        "old pods keep running while they drain"
    );
    sim.run_until(minutes(1), |s| {
        s.canary.as_ref().and_then(|c| c.revision.as_deref()) == Some("rev-newer")
    });
    // The simulator fails the test if the pods changed before scaleDownDelay passed.
}

#[test]
fn a_deployment_paused_with_a_pending_template_is_taken_over_and_that_template_judged() {
    let mut s = Sim::new(&spec(""));
    // A fresh Rollout for a Deployment the user paused after changing its template.
    s.status = RolloutStatus::default();
    s.stored = RolloutStatus::default();
    s.target.paused = true;
    s.bump(NEW);
    s.reconcile();
    assert_eq!(s.status.phase, Phase::Progressing, "{}", s.status.message);
    assert_eq!(s.status.canary_revision.as_deref(), Some(NEW));
    s.cluster_settles();
    s.run_until(minutes(30), phase_is(Phase::Succeeded));
    assert_eq!(s.stable_running, NEW, "the pending change ships, judged");
}

#[test]
fn an_invalid_spec_mid_canary_withdraws_it_and_says_why() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    at_weight(&mut sim, 25);
    let world = sim.world();
    let errors = vec![SpecError::new(
        "steps[1].weight",
        "5 does not exceed the previous step's 10",
    )];
    let d = engine::decide(Err(&errors), Some(2), &sim.status, &world, sim.now);
    assert_eq!(d.status.phase, Phase::InvalidSpec);
    assert!(d.status.message.contains("withdrawn"), "{}", d.status.message);
    assert_eq!(
        d.actions,
        vec![Action::SetCanaryWeight(0)],
        "traffic back on stable, pods drain"
    );
}

#[test]
fn unusable_routing_mid_canary_withdraws_it_once_the_weight_can_be_written() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    at_weight(&mut sim, 25);
    sim.routing_problem = Some("DestinationRule dev/backend not found".into());
    sim.reconcile();
    assert_eq!(sim.status.phase, Phase::InvalidSpec);
    assert!(sim.status.message.contains("withdrawn"), "{}", sim.status.message);
    // Nothing can be written while the routing is unusable; the canary's pods stay.
    for _ in 0..10 {
        sim.now += jiff::SignedDuration::from_secs(10);
        sim.reconcile();
    }
    assert_eq!(
        sim.canary.as_ref().map(|c| c.pods.desired),
        Some(1),
        "pods stay while routes may reach them"
    );
    sim.routing_problem = None;
    sim.run_until(minutes(1), |s| {
        s.status.phase == Phase::Healthy && s.canary.as_ref().is_some_and(|c| c.pods.desired == 0)
    });
    assert_eq!(sim.weight, 0);
}

#[test]
fn a_route_another_router_also_routes_withdraws_the_canary_then_goes_on_when_it_is_gone() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    at_weight(&mut sim, 25);
    let both = "Service dev/backend is routed by both HTTPRoute dev/backend and VirtualService dev/legacy";
    sim.routing_conflict = Some(both.into());
    sim.reconcile();
    assert_eq!(sim.status.phase, Phase::InvalidSpec);
    assert!(sim.status.message.starts_with(both), "{}", sim.status.message);
    // Unlike an unusable route, this one can be written: the canary's weight goes at once.
    assert_eq!(sim.weight, 0, "traffic back on stable");
    sim.routing_conflict = None;
    sim.run_until(minutes(1), |s| s.status.phase == Phase::Healthy);
    assert_eq!(sim.weight, 0, "no weight raised without a fresh release");
}

/// A mesh that takes 40 s to apply a weight (an Envoy that missed a push, then a
/// resync), beside a 10 s drain: the canary's pods stay until the mesh confirms weight
/// 0, then drain for the delay; each step's clock starts when the mesh confirms its
/// weight. (The strict simulator panics at a request to no pods or a look counted at a
/// weight the data plane did not apply.)
#[test]
fn a_slow_mesh_that_confirms_holds_the_step_clock_and_the_drain_until_it_has() {
    let lag = Duration::from_secs(40);
    let mut sim = Sim::new(&spec(""));
    sim.mesh_lag = Some(lag);
    sim.bump(NEW);
    sim.run_until(minutes(2), |s| s.weight == 10);
    let written = sim.now;
    sim.run_until(minutes(2), |s| {
        matches!(
            s.status.state,
            State::Analysing {
                awaiting_mesh: false,
                ..
            }
        )
    });
    let State::Analysing { started, .. } = sim.status.state.clone() else {
        unreachable!()
    };
    assert!(
        started >= written + lag,
        "the step began at {started}, the mesh applied 10% at {}",
        written + lag
    );
    assert_eq!(sim.plane_weight(), 10);
    sim.metrics = Metrics::Traffic {
        rps: 200.0,
        canary: BROKEN,
    };
    sim.run_until(minutes(5), |s| s.weight == 0);
    let withdrawn = sim.now;
    sim.run_until(minutes(5), |s| s.canary.as_ref().is_some_and(|c| c.pods.desired == 0));
    assert!(
        sim.now >= withdrawn + lag + Duration::from_secs(10),
        "pods left at {}, weight 0 written at {withdrawn}",
        sim.now
    );
    assert_eq!(sim.status.phase, Phase::RolledBack);
}

/// The same mesh, silent (it writes no status): nothing tells weir it lags, so the
/// steps are judged on weights not yet applied and the drain delay alone lets the pods
/// go under traffic — what the confirmation prevents.
#[test]
fn a_slow_mesh_that_writes_no_status_is_what_the_drain_delay_cannot_cover() {
    let mut sim = Sim::new(&spec(""));
    sim.strict = false;
    (sim.mesh_lag, sim.mesh_silent) = (Some(Duration::from_secs(40)), true);
    sim.bump(NEW);
    sim.run_until(minutes(2), |s| s.weight == 25);
    sim.metrics = Metrics::Traffic {
        rps: 200.0,
        canary: BROKEN,
    };
    sim.run_until(minutes(10), |s| s.canary.as_ref().is_some_and(|c| c.pods.desired == 0));
    let told = |what: &str| sim.violations.iter().any(|v| v.contains(what));
    assert!(told("before their traffic drained"), "{:?}", sim.violations);
    assert!(
        told("counted while the data plane applied 0% of 10%"),
        "{:?}",
        sim.violations
    );
}

#[test]
fn under_an_hpa_the_canary_does_not_shrink_with_stable() {
    let mut sim = Sim::new(&spec(""));
    sim.hpa = true;
    sim.bump(NEW);
    at_weight(&mut sim, 50);
    sim.reconcile();
    sim.cluster_settles();
    assert_eq!(sim.target.pods.desired, 2, "the HPA halved stable");
    assert_eq!(
        sim.canary.as_ref().map(|c| c.pods.desired),
        Some(2),
        "50 % of the 4 replicas that carry it all"
    );
    at_weight(&mut sim, 100);
    sim.cluster_settles();
    assert_eq!(
        sim.canary.as_ref().map(|c| c.pods.desired),
        Some(4),
        "the 100 % step gets all 4, not the HPA's 1"
    );
}

#[test]
fn weight_put_back_by_a_sync_after_a_rollback_is_taken_off_at_once() {
    let mut sim = Sim::new(&spec(""));
    sim.metrics = Metrics::Traffic {
        rps: 200.0,
        canary: BROKEN,
    };
    sim.bump(NEW);
    sim.run_until(minutes(10), |s| {
        s.status.phase == Phase::RolledBack && s.canary.as_ref().is_some_and(|c| c.pods.desired == 0)
    });
    sim.weight = 10; // a GitOps sync restores the VirtualService of the canary's days
    sim.reconcile();
    assert_eq!(sim.weight, 0);
    assert!(sim.event_reasons().contains(&"TrafficReverted"));
}

#[test]
fn a_route_that_drifted_alone_is_rewritten() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    at_weight(&mut sim, 25);
    let written = sim.weights_written.len();
    sim.routes_disagree = true; // one of two managed routes was reset, the other was not
    sim.reconcile();
    assert_eq!(sim.weights_written.len(), written + 1, "rewritten at once");
    assert_eq!(sim.weights_written.last(), Some(&25));
}

#[test]
fn under_an_hpa_promotion_moves_traffic_back_as_fast_as_stable_grows() {
    let mut sim = Sim::new(&spec(""));
    sim.hpa = true;
    sim.bump(NEW);
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
    // The HPA had shrunk stable to 1 replica while the canary served 100 %: traffic goes
    // back one step at a time, each once stable has grown for the share it has.
    assert_eq!(sim.weights_written, vec![10, 25, 50, 100, 50, 25, 10, 0]);
    let hops = sim
        .events
        .iter()
        .filter(|e| e.reason == Reason::TrafficToStable)
        .count();
    assert_eq!(hops, 3);
}

#[test]
fn without_an_hpa_promotion_moves_all_traffic_back_at_once() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
    assert_eq!(sim.weights_written, vec![10, 25, 50, 100, 0]);
}

/// A rollback takes traffic off a canary judged bad at once, also under an HPA that had
/// shrunk stable: stable serves everything from the same write (with at least one ready
/// pod, never none), and the canary's pods drain before they go.
#[test]
fn under_an_hpa_a_rollback_still_takes_all_traffic_off_the_canary_at_once() {
    let mut sim = Sim::new(&spec(""));
    sim.hpa = true;
    sim.bump(NEW);
    at_weight(&mut sim, 50);
    sim.metrics = Metrics::Traffic {
        rps: 200.0,
        canary: BROKEN,
    };
    sim.run_until(minutes(5), phase_is(Phase::RolledBack));
    assert_eq!(sim.weight, 0);
    assert!(sim.target.pods.available >= 1, "stable has ready pods for the traffic");
    assert_eq!(
        sim.canary.as_ref().map(|c| c.pods.desired),
        Some(2),
        "canary pods drain first"
    );
}

/// A shared incident of 50 % errors for two minutes in step 2: the step holds while it
/// lasts (the baseline fails as much as the canary), and passes once it is over, also
/// when the controller restarts in the middle of it; nothing is rolled back.
#[test]
fn a_shared_incident_holds_the_step_only_while_it_lasts() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    sim.run_until(minutes(10), |s| s.weight == 25);
    let secs = jiff::SignedDuration::from_secs;
    let from = sim.now + secs(20);
    let to = from + secs(120);
    sim.shared_incident = Some((from, to, 0.5));
    sim.run_until(minutes(1), |s| s.now >= from + secs(30));
    assert_eq!(sim.weight, 25, "held during the incident");
    assert!(sim.status.message.contains("shared incident"), "{}", sim.status.message);
    sim.memory = false; // a restart: the controller starts from the stored status
    sim.run_until(minutes(30), |s| s.weight > 25 || s.status.phase == Phase::RolledBack);
    assert_eq!(sim.weight, 50, "{}", sim.status.message);
    assert!(
        sim.now <= to + secs(120),
        "passed within two minutes of the incident's end, not at the deadline: {}",
        sim.now
    );
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
}

/// Every release ends in `status.history` (newest first) with how it ended and why, and
/// the conditions `kubectl wait` and Argo CD read say the same.
#[test]
fn the_history_keeps_each_release_and_how_it_ended() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    sim.run_until(minutes(30), |s| {
        s.status.condition(ConditionType::Progressing).is_some()
    });
    assert_eq!(
        sim.status
            .condition(ConditionType::Progressing)
            .map(|c| c.status.as_str()),
        Some("True")
    );
    assert_eq!(sim.status.release.as_ref().map(|r| r.revision.as_str()), Some(NEW));
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
    let promoted = &sim.status.history[0];
    assert_eq!(
        (promoted.outcome.as_deref(), promoted.step, promoted.revision.as_str()),
        (Some("Promoted"), 4, NEW)
    );
    assert!(promoted.ended.is_some() && sim.status.release.is_none());
    let condition = |s: &Sim, t: ConditionType| s.status.condition(t).map(|c| c.status.clone());
    assert_eq!(condition(&sim, ConditionType::Promoted).as_deref(), Some("True"));
    assert_eq!(condition(&sim, ConditionType::Progressing).as_deref(), Some("False"));
    // The next release turns bad at step 2.
    sim.bump("rev-bad");
    sim.run_until(minutes(30), |s| s.weight == 25);
    sim.metrics = Metrics::Traffic {
        rps: 200.0,
        canary: BROKEN,
    };
    sim.run_until(minutes(30), |s| s.status.history.len() == 2);
    let rolled_back = &sim.status.history[0];
    assert_eq!(
        (rolled_back.outcome.as_deref(), rolled_back.step),
        (Some("RolledBack"), 2)
    );
    assert!(
        rolled_back
            .evidence
            .starts_with("rolled back at step 2 (25%): request-success-rate"),
        "{}",
        rolled_back.evidence
    );
    assert_eq!(condition(&sim, ConditionType::RolledBack).as_deref(), Some("True"));
    assert_eq!(condition(&sim, ConditionType::Promoted).as_deref(), Some("False"));
    assert_eq!(sim.status.history[1].revision, NEW);
}

/// The spec the fixture has, with other steps.
fn with_steps(steps: &str) -> plan::Plan {
    let mut spec = spec("");
    spec.steps = serde_saphyr::from_str(steps).unwrap();
    plan::plan(&spec).unwrap()
}

#[test]
fn steps_shrunk_below_the_current_step_lower_the_weight_and_judge_the_new_last_step() {
    // The crash loop of issue 23: a release at step 3 of 4 (50 %) whose steps are edited
    // down to one entry. The release goes on at the new last step: the weight comes
    // down to it at once, that step is analysed from the start, then promoted.
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    sim.run_until(minutes(30), |s| s.weight == 50);
    sim.plan = with_steps("[{weight: 10}]");
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
    assert_eq!(sim.weights_written, vec![10, 25, 50, 10, 0]);
    let changed = sim.events.iter().find(|e| e.reason == Reason::StepsChanged).unwrap();
    assert!(
        changed.note.contains("step 1/1 (10%); canary weight lowered from 50%"),
        "{}",
        changed.note
    );
    let promoted_after = sim.events.iter().position(|e| e.reason == Reason::Promoting).unwrap();
    let lowered_at = sim
        .events
        .iter()
        .position(|e| e.reason == Reason::StepsChanged)
        .unwrap();
    let passed = sim.events[lowered_at..promoted_after]
        .iter()
        .any(|e| e.note.contains("step passed"));
    assert!(passed, "the lowered step passed before the promotion");
}

#[test]
fn a_step_whose_weight_is_raised_mid_step_is_raised_only_after_it_passes_where_it_is() {
    let mut sim = Sim::new(&spec(""));
    sim.bump(NEW);
    sim.run_until(minutes(30), |s| s.weight == 25);
    // Step 2 now asks 40 %; steps grow to five.
    sim.plan = with_steps("[{weight: 10}, {weight: 40}, {weight: 50}, {weight: 75}, {weight: 100}]");
    sim.run_until(minutes(60), phase_is(Phase::Succeeded));
    assert_eq!(sim.weights_written, vec![10, 25, 40, 50, 75, 100, 0]);
    let passes: Vec<&str> = sim
        .events
        .iter()
        .filter(|e| e.note.contains("step passed"))
        .map(|e| e.note.as_str())
        .collect();
    assert!(passes.iter().any(|n| n.contains("step 2/5 (40%)")), "{passes:#?}");
    assert!(
        passes.iter().any(|n| n.contains("(25%)")),
        "25 % passed before 40 %: {passes:#?}"
    );
}
