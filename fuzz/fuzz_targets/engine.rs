//! Structure-aware: an arbitrary valid-or-not spec, then a sequence of arbitrary worlds
//! (Deployments, canary pods, routing weights, metric readings, requests, spec edits,
//! restarts, deletion) fed to the engine one decision after another, its status fed back
//! through JSON as the API server keeps it. The engine must never panic, and never send
//! weight to a canary the world shows without an available pod.
#![no_main]

use arbitrary::Arbitrary;
use jiff::{SignedDuration, Timestamp};
use libfuzzer_sys::fuzz_target;
use weir_core::engine::{self, Action, CanaryState, Pods, TargetState, World};
use weir_core::judge::Reading;
use weir_core::plan::{self, Plan};
use weir_core::spec::RolloutSpec;
use weir_core::status::{Counts, RolloutStatus};

#[derive(Arbitrary, Debug)]
struct SpecIn {
    weights: Vec<u8>,
    threshold: bool,
    interval_s: u8,
    deadline_s: u16,
    two_metrics: bool,
    failure_limit: u8,
}

#[derive(Arbitrary, Debug)]
struct PodsIn {
    desired: u8,
    updated: u8,
    available: u8,
    behind: bool,
}

#[derive(Arbitrary, Debug)]
enum ReadingIn {
    Counts { canary: (u16, u16), baseline: (u16, u16) },
    Value(Option<i16>),
    Error,
}

#[derive(Arbitrary, Debug)]
struct Tick {
    advance_ms: u32,
    revision: u8,
    paused: bool,
    target: Option<PodsIn>,
    canary: Option<(u8, PodsIn)>,
    traffic: Option<u8>,
    disagree: bool,
    request: Option<u8>,
    pause: bool,
    reading: Option<ReadingIn>,
    edit: Option<SpecIn>,
    restart: bool,
    delete: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    spec: SpecIn,
    ticks: Vec<Tick>,
}

fn plan_of(s: &SpecIn) -> Result<Plan, Vec<weir_core::spec::SpecError>> {
    let steps: Vec<serde_json::Value> = s
        .weights
        .iter()
        .take(25)
        .map(|w| serde_json::json!({"weight": w}))
        .collect();
    let mut metrics = vec![serde_json::json!({"name": "request-success-rate", "min": 99})];
    if s.two_metrics {
        metrics.push(serde_json::json!({"name": "request-duration", "quantile": 0.99, "max": 500}));
    }
    let spec = serde_json::json!({
        "targetRef": {"kind": "Deployment", "name": "backend"},
        "trafficRouting": {"istio": {"virtualService": {"name": "backend"},
            "destinationRule": {"name": "backend", "stableSubset": "stable", "canarySubset": "canary"}}},
        "steps": steps,
        "progressDeadline": format!("{}s", s.deadline_s),
        "analysis": {"judge": if s.threshold { "threshold" } else { "sequential" },
            "interval": format!("{}s", s.interval_s), "failureLimit": s.failure_limit, "metrics": metrics},
    });
    let spec: RolloutSpec = serde_json::from_value(spec).map_err(|e| vec![weir_core::spec::SpecError::new("", e.to_string())])?;
    plan::plan(&spec)
}

fn pods(p: &PodsIn) -> Pods {
    Pods {
        desired: p.desired.into(),
        generation: 2,
        observed_generation: if p.behind { 1 } else { 2 },
        total: p.updated.max(p.available).into(),
        updated: p.updated.into(),
        available: p.available.into(),
    }
}

fn reading(r: &ReadingIn) -> Reading {
    match r {
        ReadingIn::Counts { canary, baseline } => Reading::Counts {
            canary: Counts { requests: canary.0.into(), bad: canary.1.min(canary.0).into() },
            baseline: Counts { requests: baseline.0.into(), bad: baseline.1.min(baseline.0).into() },
            canary_value: Some(99.0),
            baseline_value: Some(99.5),
        },
        ReadingIn::Value(v) => Reading::Value(v.map(f64::from)),
        ReadingIn::Error => Reading::Error("connection refused".into()),
    }
}

fn world(t: &Tick, plan: Option<&Plan>) -> World {
    let canary = t.canary.as_ref().map(|(rev, p)| CanaryState {
        revision: Some(format!("rev-{}", rev % 4)),
        pods: pods(p),
    });
    let readings = t.reading.as_ref().zip(plan).map(|(r, plan)| {
        plan.metrics.iter().map(|m| (m.name.clone(), reading(r))).collect()
    });
    World {
        target: t.target.as_ref().map(|p| TargetState {
            revision: format!("rev-{}", t.revision % 4),
            image: Some("registry.example/backend:1".into()),
            paused: t.paused,
            pods: pods(p),
        }),
        canary,
        traffic: t.traffic.map(|w| u32::from(w.min(100))).ok_or_else(|| "routes unreadable".to_string()),
        routes_disagree: t.disagree,
        routing_conflict: None,
        mesh: Default::default(),
        request: t.request.map(|r| ["promote/1", "abort/2", "retry/3", "nonsense/4"][usize::from(r % 4)].to_string()),
        pause_requested: t.pause,
        readings,
        hook_answers: Vec::new(),
    }
}

fuzz_target!(|input: Input| {
    let mut plan = plan_of(&input.spec);
    let mut now: Timestamp = "2026-11-25T00:00:00Z".parse().unwrap();
    let (mut status, mut stored) = (RolloutStatus::default(), RolloutStatus::default());
    let mut deleting = false;
    for t in input.ticks.iter().take(64) {
        now += SignedDuration::from_millis(i64::from(t.advance_ms % 600_000));
        if let Some(edit) = &t.edit {
            plan = plan_of(edit);
        }
        if t.restart {
            status = stored.clone();
        }
        deleting |= t.delete;
        let w = world(t, plan.as_ref().ok());
        let d = match (deleting, &plan) {
            (true, p) => engine::release(p.as_ref().ok(), Some(2), &status, &w, std::time::Duration::from_secs(10), now),
            (false, Ok(p)) => engine::decide(Ok(p), Some(1), &status, &w, now),
            (false, Err(e)) => engine::decide(Err(e.as_slice()), Some(1), &status, &w, now),
        };
        let available = w.canary.as_ref().map_or(0, |c| c.pods.available);
        // WEIR_FUZZ_TRACE=1 with `cargo fuzz run ... <artifact>` shows each decision.
        if std::env::var("WEIR_FUZZ_TRACE").is_ok() {
            eprintln!("deleting {deleting} world weight {:?} canary {:?}\n  -> {:?}\n  state {:?}", w.traffic, w.canary, d.actions, d.status.state);
        }
        for a in &d.actions {
            if let Action::SetCanaryWeight(weight) = a {
                assert!(
                    *weight == 0 || available > 0,
                    "weight {weight} sent to a canary without an available pod"
                );
            }
        }
        let json = serde_json::to_string(&d.status).expect("status serializes");
        stored = serde_json::from_str(&json).expect("status round-trips");
        status = d.status;
    }
});
