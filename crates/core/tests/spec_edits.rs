//! Any valid spec, edited at any point of a release: thousands of seeded random releases
//! against the simulated cluster, with `spec.steps`, the metrics, the judge, the
//! deadlines and the webhooks replaced at random instants (as a person or a GitOps sync
//! would), the controller sometimes killed between two writes or restarted as a version
//! of weir that does not know the stored state's format, Prometheus sometimes silent or
//! down. After every decision the safety rules must hold:
//! - no panic (the engine is total);
//! - no weight on a canary without ready pods, no canary pods gone before they drained
//!   (the simulator's own checks);
//! - no weight raised without a look that passed at the weight in place;
//! - every release ends (promoted or rolled back) within a bound of simulated time.
//!
//! A failing seed is printed; `WEIR_SEED=<n>` replays it alone.

mod support;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::*;
use weir_core::hooks::Reply;
use weir_core::plan;
use weir_core::spec::RolloutSpec;
use weir_core::status::Phase;

const RELEASES: u64 = 2_000;
/// Simulated time a release may take, edits and deadlines included.
const LIMIT: Duration = Duration::from_secs(6 * 3600);

/// A random valid spec: 1-5 strictly rising steps, one or two metrics, either judge,
/// random intervals and deadlines, and sometimes webhooks that answer yes.
fn random_spec(rng: &mut StdRng) -> RolloutSpec {
    let mut weights: Vec<u32> = (0..rng.random_range(1..=5))
        .map(|_| rng.random_range(1..=100))
        .collect();
    weights.sort_unstable();
    weights.dedup();
    let steps: Vec<String> = weights.iter().map(|w| format!("{{weight: {w}}}")).collect();
    let judge = if rng.random_bool(0.5) {
        "sequential"
    } else {
        "threshold"
    };
    let interval = [10, 30, 60][rng.random_range(0..3)];
    let deadline = [60, 120, 600][rng.random_range(0..3)];
    let mut metrics = vec!["{name: request-success-rate, min: 99}"];
    if rng.random_bool(0.5) {
        metrics.push("{name: request-duration, quantile: 0.99, max: 500}");
    }
    let hooks = [
        ("smoke", "pre-rollout"),
        ("ops", "confirm-step"),
        ("release", "confirm-promotion"),
        ("kill-switch", "rollback"),
    ];
    let webhooks: Vec<String> = hooks
        .iter()
        .filter(|_| rng.random_bool(0.2))
        .map(|(name, kind)| format!("{{name: {name}, type: {kind}, url: 'http://{name}.apps.svc/'}}"))
        .collect();
    let yaml = format!(
        r#"
targetRef: {{kind: Deployment, name: backend}}
trafficRouting:
  istio:
    virtualService: {{name: backend}}
    destinationRule: {{name: backend, stableSubset: stable, canarySubset: canary}}
steps: [{steps}]
progressDeadline: {deadline}s
scaleDownDelay: 10s
webhooks: [{webhooks}]
analysis:
  judge: {judge}
  interval: {interval}s
  failureLimit: {failures}
  metrics: [{metrics}]
"#,
        steps = steps.join(", "),
        webhooks = webhooks.join(", "),
        failures = rng.random_range(0..3),
        metrics = metrics.join(", "),
    );
    serde_saphyr::from_str(&yaml).expect("generated spec parses")
}

/// The last look of this decision passed (the judge looked now and said Pass).
fn looked_and_passed(sim: &Sim) -> bool {
    let now = sim.now.to_string();
    sim.decided
        .analysis
        .as_ref()
        .is_some_and(|a| a.last_verdict.as_deref() == Some("Pass") && a.last_checked_at.as_deref() == Some(&now))
}

/// One random release; `Err` says which rule broke.
fn release(seed: u64) -> Result<Phase, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sim = Sim::new(&spec(""));
    sim.strict = false;
    sim.plan = plan::plan(&random_spec(&mut rng)).map_err(|e| format!("{e:?}"))?;
    for name in ["smoke", "ops", "release"] {
        sim.hook_replies.insert(name.into(), [Reply::Yes].into());
    }
    let kill_switch = if rng.random_bool(0.1) { Reply::Yes } else { Reply::No };
    sim.hook_replies.insert("kill-switch".into(), [kill_switch].into());
    sim.hpa = rng.random_bool(0.2);
    let canary = [HEALTHY, HEALTHY, HEALTHY, BROKEN, SLOW][rng.random_range(0..5)];
    let rps = [2.0, 20.0, 200.0][rng.random_range(0..3)];
    sim.metrics = Metrics::Traffic { rps, canary };
    if rng.random_bool(0.2) {
        sim.crash_before_write = Some(rng.random_range(0..40));
        sim.outage_after_crash = Duration::from_secs(rng.random_range(0..60));
    }
    sim.bump(NEW);
    let end = sim.now + jiff::SignedDuration::try_from(LIMIT).unwrap();
    // The weight a look last passed at, while that weight stays in place.
    let mut passed_at: Option<u32> = None;
    loop {
        if rng.random_bool(0.02) {
            sim.plan = plan::plan(&random_spec(&mut rng)).map_err(|e| format!("{e:?}"))?;
        }
        if rng.random_bool(0.002) {
            // Restarted as a weir whose status format is another (an upgrade or a
            // downgrade): the stored state reads as unknown, the engine starts from what
            // the status's revisions say.
            sim.stored.state_version = None;
            sim.memory = false;
        }
        if rng.random_bool(0.01) {
            // Prometheus goes silent or down for a while, then comes back.
            sim.metrics = match rng.random_range(0..3) {
                0 => Metrics::NoData,
                1 => Metrics::Down,
                _ => Metrics::Traffic { rps, canary },
            };
        }
        let before = sim.weight;
        let wait = sim.reconcile();
        if looked_and_passed(&sim) {
            passed_at = Some(before);
        }
        if std::env::var("WEIR_TRACE").is_ok() {
            let a = sim.decided.analysis.as_ref();
            eprintln!(
                "{} {before}->{} {:?} verdict {:?} checked {:?} crashed {:?}",
                sim.now,
                sim.weight,
                sim.decided.state,
                a.and_then(|a| a.last_verdict.clone()),
                a.and_then(|a| a.last_checked_at.clone()),
                sim.crashed_at
            );
        }
        if sim.weight > before && before > 0 && passed_at != Some(before) {
            if std::env::var("WEIR_SEED").is_ok() {
                for e in &sim.events {
                    eprintln!("{} {}", e.reason, e.note);
                }
                eprintln!("{:#?}", sim.status.analysis);
            }
            return Err(format!(
                "weight raised from {before}% to {}% without a passing look at {before}% (at {})",
                sim.weight, sim.now
            ));
        }
        if sim.weight != before {
            passed_at = None;
        }
        if let Some(v) = sim.violations.first() {
            return Err(v.clone());
        }
        sim.cluster_settles();
        if matches!(sim.status.phase, Phase::Succeeded | Phase::RolledBack) && sim.weight == 0 {
            return Ok(sim.status.phase);
        }
        // Restarted from a status it could not read after the promotion began: stable
        // already runs the new revision, the release has nothing left to do.
        if sim.status.phase == Phase::Healthy && sim.status.stable_revision.as_deref() == Some(NEW) && sim.weight == 0 {
            return Ok(Phase::Succeeded);
        }
        if sim.now >= end {
            return Err(format!("release did not end within {LIMIT:?}: {}", sim.status.message));
        }
        let wait = wait.map_or(Duration::from_secs(5), |w| w.min(Duration::from_secs(5)));
        sim.now += jiff::SignedDuration::try_from(wait).unwrap();
    }
}

#[test]
fn random_spec_edits_at_random_instants_keep_every_safety_rule() {
    let seeds: Vec<u64> = match std::env::var("WEIR_SEED") {
        Ok(seed) => vec![seed.parse().expect("WEIR_SEED is a number")],
        Err(_) => (0..RELEASES).collect(),
    };
    let (mut promoted, mut rolled_back) = (0, 0);
    let mut failures = Vec::new();
    for seed in seeds {
        match catch_unwind(AssertUnwindSafe(|| release(seed))) {
            Ok(Ok(Phase::Succeeded)) => promoted += 1,
            Ok(Ok(_)) => rolled_back += 1,
            Ok(Err(why)) => failures.push(format!("seed {seed}: {why}")),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("seed {seed}: panicked: {what}"));
            }
        }
    }
    eprintln!(
        "{promoted} promoted, {rolled_back} rolled back, {} broke a rule",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(promoted > 0 && rolled_back > 0, "both endings are exercised");
}
