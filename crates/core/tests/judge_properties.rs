//! Properties of the sequential judge, over generated counts.

use std::time::Duration;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Binomial, Distribution};
use weir_core::judge::{
    self, MetricInput, Reading, StepClock, StepCounts, Verdict, ln_lambda_over_bound, ln_lambda_worse,
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
    };
    let clock = StepClock {
        elapsed: Duration::from_secs(elapsed_s),
        duration: Duration::from_secs(300),
    };
    judge::judge(JudgeKind::Sequential, &SequentialConfig::default(), &[input], clock).verdict
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
        let ln = ln_lambda_worse(&[StepCounts { canary: c, baseline: b }], theta0);
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
        prop_assert!(ln_lambda_worse(&steps(more), 1.5) >= ln_lambda_worse(&steps(e), 1.5) - 1e-9);
        let over = |bad| ln_lambda_over_bound(Counts { requests: n, bad }, 0.01);
        prop_assert!(over(more) >= over(e) - 1e-9);
        // And the verdict follows: if fewer errors roll back, more errors do too.
        let rolls_back = |bad| matches!(look(Counts { requests: n, bad }, Counts { requests: nb, bad: eb.min(nb) }, vec![], 60), Verdict::Breach { .. });
        prop_assert!(!rolls_back(e) || rolls_back(more));
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
            if matches!(look(canary, baseline, vec![], t * 5), Verdict::Breach { .. }) {
                rollbacks += 1;
                break;
            }
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
            if matches!(look(canary, baseline, vec![], t * 5), Verdict::Breach { .. }) {
                rollbacks += 1;
                break;
            }
        }
    }
    assert!(
        (rollbacks as f64 / runs as f64) <= alpha,
        "{rollbacks} false rollbacks in {runs}"
    );
}
