//! Properties of the sequential judge, over generated counts.

use std::time::Duration;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Binomial, Distribution};
use weir_core::judge::{
    self, LastLook, MetricInput, Reading, StepClock, StepCounts, Verdict, ln_lambda_over_bound, ln_lambda_worse,
};
use weir_core::plan::{MetricKind, MetricPlan, SequentialConfig};
use weir_core::spec::JudgeKind;
use weir_core::status::Counts;

fn success_rate() -> MetricPlan {
    MetricPlan {
        name: "request-success-rate".into(),
        kind: MetricKind::SuccessRate { min: 99.0 },
    }
}

fn look(canary: Counts, baseline: Counts, history: Vec<StepCounts>, elapsed_s: u64) -> Verdict {
    look_after(canary, baseline, history, elapsed_s, None).verdict
}

/// One look, remembering the step's previous one as the engine does (from status).
fn look_after(
    canary: Counts,
    baseline: Counts,
    history: Vec<StepCounts>,
    elapsed_s: u64,
    last: Option<LastLook>,
) -> judge::Judgement {
    let plan = success_rate();
    let input = MetricInput {
        plan: &plan,
        reading: Reading::Counts {
            canary,
            baseline,
            canary_value: None,
            baseline_value: None,
        },
        history,
        last,
    };
    let clock = StepClock {
        elapsed: Duration::from_secs(elapsed_s),
        duration: Duration::from_secs(300),
    };
    judge::judge(JudgeKind::Sequential, &SequentialConfig::default(), &[input], clock)
}

/// The memory the engine keeps for the next look.
fn remembered(j: &judge::Judgement) -> Option<LastLook> {
    let m = &j.metrics[0];
    Some(LastLook {
        counts: StepCounts {
            canary: m.canary_counts?,
            baseline: m.baseline_counts?,
        },
        clean_canary: m.clean_canary_counts?,
    })
}

/// Cumulative counts of a version serving `rps` at `ratio` bad, except `incident_ratio`
/// during [start, end): exact proportions (bad requests rounded down), no noise.
fn cumulative(rps: u64, seconds: u64, (start, end, incident_ratio): (u64, u64, f64)) -> Counts {
    let bad: f64 = (0..seconds)
        .map(|t| {
            rps as f64
                * if (start..end).contains(&t) {
                    incident_ratio
                } else {
                    0.002
                }
        })
        .sum();
    Counts {
        requests: rps * seconds,
        bad: bad.floor() as u64,
    }
}

fn counts() -> impl Strategy<Value = Counts> {
    (0u64..1_000_000)
        .prop_flat_map(|n| (Just(n), 0..=n))
        .prop_map(|(requests, bad)| Counts { requests, bad })
}

proptest! {
    #[test]
    fn never_promotes_without_canary_requests(baseline in counts(), elapsed in 0u64..10_000) {
        let v = look(Counts::default(), baseline, vec![], elapsed);
        prop_assert!(!matches!(v, Verdict::Pass { .. }), "{v:?}");
    }

    #[test]
    fn lambda_is_finite_for_any_counts(c in counts(), b in counts(), theta0 in 1.0f64..10.0) {
        let ln = ln_lambda_worse(&[StepCounts { canary: c, baseline: b }], theta0, 0.0);
        prop_assert!(!ln.is_nan());
        prop_assert!(ln.clamp(-700.0, 700.0).exp().is_finite());
        prop_assert!(!ln_lambda_over_bound(c, 0.01).is_nan());
    }

    #[test]
    fn more_canary_errors_never_make_rollback_less_likely(
        n in 1u64..100_000, nb in 1u64..100_000, e in 0u64..1_000, eb in 0u64..1_000, extra in 1u64..100,
    ) {
        let e = e.min(n);
        let more = (e + extra).min(n);
        let steps = |bad| [StepCounts { canary: Counts { requests: n, bad }, baseline: Counts { requests: nb, bad: eb.min(nb) } }];
        prop_assert!(ln_lambda_worse(&steps(more), 1.5, 0.0) >= ln_lambda_worse(&steps(e), 1.5, 0.0) - 1e-9);
        let over = |bad| ln_lambda_over_bound(Counts { requests: n, bad }, 0.01);
        prop_assert!(over(more) >= over(e) - 1e-9);
        // And the verdict follows: if fewer errors roll back, more errors do too.
        let rolls_back = |bad| matches!(look(Counts { requests: n, bad }, Counts { requests: nb, bad: eb.min(nb) }, vec![], 60), Verdict::Breach { .. });
        prop_assert!(!rolls_back(e) || rolls_back(more));
    }

    /// However large and long a shared incident, once it is over it holds the step for at
    /// most one look: from then on (and from the step's planned end) the step passes.
    #[test]
    fn a_shared_incident_that_ended_blocks_the_step_for_a_bounded_time(
        canary_rps in 1u64..100, baseline_rps in 10u64..1_000, ratio in 0.05f64..0.95,
        start in 0u64..200, length in 10u64..240,
    ) {
        let incident = (start, start + length, ratio);
        let mut last = None;
        for t in (5..=700).step_by(5) {
            let j = look_after(cumulative(canary_rps, t, incident), cumulative(baseline_rps, t, incident), vec![], t, last);
            prop_assert!(!matches!(j.verdict, Verdict::Breach { .. }), "t={t}: {}", j.reason);
            if t >= (start + length + 10).max(300) {
                prop_assert!(matches!(j.verdict, Verdict::Pass { .. }), "t={t}: {}", j.reason);
            }
            last = remembered(&j);
        }
    }

    /// More baseline errors (in any step) never turn a look that does not roll back into
    /// one that does: the spotless-baseline floor and the incident rule only ever hold back.
    #[test]
    fn adding_baseline_errors_never_makes_a_rollback(
        history in proptest::collection::vec((counts(), counts()), 0..3),
        now in (counts(), counts()),
        which in 0usize..4, extra in 1u64..10_000, elapsed in 5u64..600,
    ) {
        let steps: Vec<StepCounts> = history.iter().map(|&(canary, baseline)| StepCounts { canary, baseline }).collect();
        let rolls_back = |steps: &[StepCounts], now: (Counts, Counts)| {
            matches!(look(now.0, now.1, steps.to_vec(), elapsed), Verdict::Breach { .. })
        };
        let add = |c: Counts| Counts { requests: c.requests, bad: (c.bad + extra).min(c.requests) };
        let (mut more_steps, mut more_now) = (steps.clone(), now);
        match more_steps.get_mut(which) {
            Some(s) => s.baseline = add(s.baseline),
            None => more_now.1 = add(now.1),
        }
        prop_assert!(!rolls_back(&more_steps, more_now) || rolls_back(&steps, now));
    }
}

/// Identical versions, looked at every tick for a whole rollout: the false-rollback
/// rate stays under α however often the judge looks.
#[test]
fn identical_traffic_rolls_back_at_most_alpha_of_the_time() {
    let alpha = SequentialConfig::default().alpha;
    let runs = 2_000;
    let mut rollbacks = 0;
    for seed in 0..runs {
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut canary, mut baseline) = (Counts::default(), Counts::default());
        let mut last = None;
        // 30 looks, each adding 20 canary and 180 baseline requests at a 2 % error ratio.
        for t in 1..=30 {
            let draw = |rng: &mut StdRng, n: u64| Binomial::new(n, 0.02).unwrap().sample(rng);
            canary = Counts {
                requests: canary.requests + 20,
                bad: canary.bad + draw(&mut rng, 20),
            };
            baseline = Counts {
                requests: baseline.requests + 180,
                bad: baseline.bad + draw(&mut rng, 180),
            };
            let j = look_after(canary, baseline, vec![], t * 5, last);
            if matches!(j.verdict, Verdict::Breach { .. }) {
                rollbacks += 1;
                break;
            }
            last = remembered(&j);
        }
    }
    let rate = rollbacks as f64 / runs as f64;
    // Both at 2 %, over the 1 % bound: a shared incident; neither test may roll back.
    assert!(rate <= alpha, "false rollback rate {rate} > alpha {alpha}");
}

#[test]
fn identical_healthy_traffic_rolls_back_at_most_alpha_of_the_time() {
    let alpha = SequentialConfig::default().alpha;
    let runs = 2_000;
    let mut rollbacks = 0;
    for seed in 0..runs {
        let mut rng = StdRng::seed_from_u64(1_000_000 + seed);
        let (mut canary, mut baseline) = (Counts::default(), Counts::default());
        let mut last = None;
        for t in 1..=60 {
            let draw = |rng: &mut StdRng, n: u64| Binomial::new(n, 0.005).unwrap().sample(rng);
            canary = Counts {
                requests: canary.requests + 50,
                bad: canary.bad + draw(&mut rng, 50),
            };
            baseline = Counts {
                requests: baseline.requests + 150,
                bad: baseline.bad + draw(&mut rng, 150),
            };
            let j = look_after(canary, baseline, vec![], t * 5, last);
            if matches!(j.verdict, Verdict::Breach { .. }) {
                rollbacks += 1;
                break;
            }
            last = remembered(&j);
        }
    }
    assert!(
        (rollbacks as f64 / runs as f64) <= alpha,
        "{rollbacks} false rollbacks in {runs}"
    );
}
