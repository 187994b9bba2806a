//! The crash explorer: whole rollouts against the simulated API server and Prometheus,
//! with the controller killed before each of the writes it makes (every status write,
//! every action, every Event) in turn, then restarted from what the API server holds —
//! once with Prometheus answering and once with Prometheus failing for 30 s after the
//! restart. After every crash the rollout must end as it does without one: the same
//! final phase and stable revision, the same sequence of canary weights in the
//! VirtualService (no step skipped or repeated, no weight moved backwards by mistake),
//! and never a weight on a canary without ready pods nor canary pods changed or removed
//! before their traffic drained.

mod support;

use std::time::Duration;

use support::*;
use weir_core::hooks::Reply;
use weir_core::plan;
use weir_core::status::Phase;

type Hook = Box<dyn Fn(&mut Sim)>;

struct Scenario {
    name: String,
    /// Before the image bump.
    setup: Hook,
    /// Before every reconcile.
    during: Hook,
    done: Box<dyn Fn(&Sim) -> bool>,
    /// A webhook's answer races with the steps: it comes one reconcile after the call,
    /// and a restart moves that reconcile, so the weights reached before it may differ
    /// (never the outcome, never a weight without pods or a step skipped).
    racing: bool,
}

/// What a run ends with, compared between the crash-free run and every crashed one.
#[derive(Debug, PartialEq)]
struct Ending {
    phase: Phase,
    stable: Option<String>,
    /// The canary weights the VirtualService went through, repeats of one value merged.
    weights: Vec<u32>,
    target_paused: bool,
}

struct Run {
    ending: Ending,
    writes: usize,
    violations: Vec<String>,
}

impl Ending {
    fn matches(&self, baseline: &Ending, racing: bool) -> bool {
        if !racing {
            return self == baseline;
        }
        let climbs = self.weights.windows(2).all(|w| w[1] > w[0] || w[1] == 0);
        // The fixture's steps: 10, 25, 50, 100.
        let steps_of_baseline = self.weights.iter().all(|w| [0, 10, 25, 50, 100].contains(w));
        self.phase == baseline.phase
            && self.stable == baseline.stable
            && self.target_paused == baseline.target_paused
            && climbs
            && steps_of_baseline
    }
}

/// Runs scenario `index`, built afresh (its hooks keep state of their own).
fn run(index: usize, crash_before_write: Option<usize>, outage: Duration) -> Run {
    let scenario = &scenarios()[index];
    let mut sim = Sim::new(&spec(""));
    sim.strict = false;
    (scenario.setup)(&mut sim);
    sim.writes_made = 0;
    sim.crash_before_write = crash_before_write;
    sim.outage_after_crash = outage;
    let bumped = sim.now;
    sim.bump(NEW);
    let limit = bumped + jiff::SignedDuration::from_mins(60);
    while !(scenario.done)(&sim) {
        assert!(
            sim.now < limit,
            "{}: crash before write {crash_before_write:?} (outage {outage:?}): not done within 60 min: {:#?}",
            scenario.name,
            sim.status
        );
        (scenario.during)(&mut sim);
        let wait = sim.reconcile();
        sim.cluster_settles();
        let wait = wait.map_or(Duration::from_secs(5), |w| w.min(Duration::from_secs(5)));
        sim.now += jiff::SignedDuration::try_from(wait).unwrap();
    }
    let mut weights = sim.weights_written.clone();
    weights.dedup();
    Run {
        ending: Ending {
            phase: sim.status.phase.clone(),
            stable: sim.status.stable_revision.clone(),
            weights,
            target_paused: sim.target.paused,
        },
        writes: sim.writes_made,
        violations: sim.violations,
    }
}

fn nothing() -> Hook {
    Box::new(|_| {})
}

fn ends_in(phases: &'static [Phase]) -> Box<dyn Fn(&Sim) -> bool> {
    Box::new(move |s: &Sim| phases.contains(&s.status.phase) && s.weight == 0)
}

/// Acts once the canary has served `weight` (so the same step in every run, however
/// much a crash delayed it).
fn once_at_weight(weight: u32, act: impl Fn(&mut Sim) + 'static) -> Hook {
    let reached = std::cell::Cell::new(false);
    Box::new(move |s| {
        reached.set(reached.get() || s.weight >= weight);
        if reached.get() {
            act(s)
        }
    })
}

/// The Rollout gets these webhooks (name, type, how it answers in turn).
fn with_webhooks(hooks: &'static [(&'static str, &'static str, &'static [Reply])]) -> Hook {
    Box::new(move |s| {
        let mut spec = spec("");
        let list: Vec<String> = hooks
            .iter()
            .map(|(name, kind, _)| format!("{{name: {name}, type: {kind}, url: 'http://{name}.apps.svc/'}}"))
            .collect();
        spec.webhooks = serde_saphyr::from_str(&format!("[{}]", list.join(", "))).unwrap();
        s.plan = plan::plan(&spec).unwrap();
        for (name, _, replies) in hooks {
            s.hook_replies
                .insert(name.to_string(), replies.iter().copied().collect());
        }
    })
}

fn scenarios() -> Vec<Scenario> {
    slow_mesh(scenarios_base())
}

fn scenarios_base() -> Vec<Scenario> {
    let mut all = vec![Scenario {
        name: "promotion".into(),
        setup: nothing(),
        during: Box::new(|_| {}),
        done: ends_in(&[Phase::Succeeded]),
        racing: false,
    }];
    for (step, weight) in [10, 25, 50, 100].into_iter().enumerate() {
        all.push(Scenario {
            name: format!("rollback at step {}", step + 1),
            setup: nothing(),
            // The canary breaks once it serves the step's weight.
            during: Box::new(move |s| {
                if s.weight >= weight {
                    s.metrics = Metrics::Traffic {
                        rps: 200.0,
                        canary: BROKEN,
                    };
                }
            }),
            done: ends_in(&[Phase::RolledBack]),
            racing: false,
        });
    }
    all.push(Scenario {
        name: "newer revision mid-canary".into(),
        setup: nothing(),
        during: once_at_weight(25, |s| {
            if s.target.revision == NEW {
                s.bump("rev-newer")
            }
        }),
        done: ends_in(&[Phase::Succeeded]),
        racing: false,
    });
    all.push(Scenario {
        name: "revert mid-canary".into(),
        setup: nothing(),
        during: once_at_weight(25, |s| {
            if s.target.revision == NEW {
                s.bump(STABLE)
            }
        }),
        done: Box::new(|s| s.status.phase == Phase::Healthy && s.weight == 0 && s.target.revision == STABLE),
        racing: false,
    });
    all.push(Scenario {
        name: "abort".into(),
        setup: nothing(),
        during: once_at_weight(25, |s| s.request = Some("abort/1".into())),
        done: ends_in(&[Phase::RolledBack]),
        racing: false,
    });
    all.push(Scenario {
        name: "promotion under an HPA".into(),
        setup: Box::new(|s| s.hpa = true),
        during: Box::new(|_| {}),
        done: ends_in(&[Phase::Succeeded]),
        racing: false,
    });
    all.push(Scenario {
        name: "promotion through webhooks".into(),
        setup: with_webhooks(&[
            ("smoke", "pre-rollout", &[Reply::Yes]),
            ("ops", "confirm-step", &[Reply::No, Reply::Yes]),
            ("release", "confirm-promotion", &[Reply::Yes]),
            ("kill-switch", "rollback", &[Reply::No]),
            ("tell-ci", "post-rollout", &[Reply::Yes]),
        ]),
        during: nothing(),
        done: ends_in(&[Phase::Succeeded]),
        racing: false,
    });
    all.push(Scenario {
        name: "rollback by webhook".into(),
        // A kill switch that is on: asked once the canary has traffic, it rolls it back.
        setup: with_webhooks(&[("kill-switch", "rollback", &[Reply::Yes])]),
        during: nothing(),
        done: ends_in(&[Phase::RolledBack]),
        racing: true,
    });
    all.push(Scenario {
        name: "deletion mid-canary".into(),
        setup: nothing(),
        during: once_at_weight(50, |s| s.deleting = true),
        done: Box::new(|s| s.released),
        racing: false,
    });
    all
}

/// The promotion, a rollback and a deletion again through a mesh that applies each
/// weight 40 s late (longer than the 10 s drain) and confirms it in the route's status.
fn slow_mesh(mut all: Vec<Scenario>) -> Vec<Scenario> {
    let slow = |s: &mut Sim| s.mesh_lag = Some(Duration::from_secs(40));
    let picked = ["promotion", "rollback at step 2", "deletion mid-canary"];
    let base: Vec<usize> = (all.iter().enumerate())
        .filter(|(_, s)| picked.contains(&s.name.as_str()))
        .map(|(i, _)| i)
        .collect();
    for i in base {
        let plain = scenarios_base().swap_remove(i);
        let setup = plain.setup;
        all.push(Scenario {
            name: format!("{} (slow mesh)", plain.name),
            setup: Box::new(move |s| {
                setup(s);
                slow(s);
            }),
            ..plain
        });
    }
    all
}

#[test]
fn a_crash_before_any_write_changes_nothing_in_how_a_rollout_ends() {
    let outages = [Duration::ZERO, Duration::from_secs(30)];
    let mut crash_points = 0;
    let mut failures = Vec::new();
    for (index, scenario) in scenarios().iter().enumerate() {
        let baseline = run(index, None, Duration::ZERO);
        assert!(
            baseline.violations.is_empty(),
            "{}: {:?}",
            scenario.name,
            baseline.violations
        );
        for crash in 0..baseline.writes {
            for outage in outages {
                crash_points += 1;
                let crashed = run(index, Some(crash), outage);
                if !crashed.ending.matches(&baseline.ending, scenario.racing) || !crashed.violations.is_empty() {
                    failures.push(format!(
                        "{}: crash before write {crash} of {} (Prometheus down {outage:?} after): {:?} {:?}, expected {:?}",
                        scenario.name, baseline.writes, crashed.ending, crashed.violations, baseline.ending
                    ));
                }
            }
        }
        println!(
            "{:<28} {:>3} writes, ends {:?} via weights {:?}",
            scenario.name, baseline.writes, baseline.ending.phase, baseline.ending.weights
        );
    }
    println!("crash points covered: {crash_points}");
    assert!(
        failures.is_empty(),
        "{} of {crash_points} crash points:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
