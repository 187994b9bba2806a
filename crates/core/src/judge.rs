//! Judges: turn the metric readings of one look into a verdict. Pure: no I/O, no clock.
//!
//! * The **sequential** judge (default) compares the canary with the stable baseline
//!   serving at the same time, on counts of requests and bad requests (5xx, or slower
//!   than the latency bound). Its tests are mixture likelihood ratios, which are test
//!   martingales: by Ville's inequality the chance that one *ever* crosses 1/α under the
//!   null is at most α, so looking at every tick costs nothing in false rollbacks.
//! * The **threshold** judge is Flagger's: each metric's value over one interval against
//!   absolute bounds; breaches count against `failureLimit`.

use std::time::Duration;

use crate::plan::{MetricPlan, SequentialConfig};
use crate::spec::JudgeKind;
use crate::status::{Counts, MetricStatus};

/// What Prometheus said about one metric at one look.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// Built-in metrics: counts since the step began (sequential) or over the last
    /// interval (threshold), per version, plus the value a person reads (percent or ms).
    Counts {
        canary: Counts,
        baseline: Counts,
        canary_value: Option<f64>,
        baseline_value: Option<f64>,
    },
    /// A custom metric's value for the canary; `None` when the query returned no data or NaN.
    Value(Option<f64>),
    /// Prometheus could not answer (down, timeout, bad query).
    Error(String),
}

/// Counts of both versions during one step.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct StepCounts {
    pub canary: Counts,
    pub baseline: Counts,
}

/// One metric as the judge sees it.
#[derive(Clone, Debug)]
pub struct MetricInput<'a> {
    pub plan: &'a MetricPlan,
    pub reading: Reading,
    /// Counts of the steps already passed in this rollout (sequential judge only).
    pub history: Vec<StepCounts>,
}

/// Where the step stands when the judge looks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepClock {
    /// Time since the step's weight was written.
    pub elapsed: Duration,
    /// The step's planned duration.
    pub duration: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The step may end (`early` when before its planned duration).
    Pass { early: bool },
    /// Not enough evidence either way: hold the step and look again.
    Inconclusive,
    /// Prometheus did not answer for at least one metric: hold, count apart from breaches.
    Error,
    /// A bound was breached. `decisive` breaches roll back at once (the sequential test
    /// already controls false alarms); others count against `failureLimit`.
    Breach {
        decisive: bool,
        metric: String,
        value: Option<f64>,
        bound: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    /// One sentence saying why.
    pub reason: String,
    pub metrics: Vec<MetricStatus>,
}

// ------------------------------------------------------------------ the statistics

/// Points of the discrete mixture over the alternative. An average of likelihood ratios
/// is itself a likelihood ratio, so the mixture needs no integration and stays exact.
const GRID: usize = 48;
/// A baseline bad ratio this many times under the bound counts as rare: relative tests
/// on it would take too long, so the absolute bound decides an early pass.
const RARE_FACTOR: f64 = 10.0;
/// The alternatives of the rollback test reach up to this multiple of θ0.
const THETA_SPAN: f64 = 200.0;

fn ln_sum_exp(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.collect();
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + v.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

fn ln_mean_exp(values: impl Iterator<Item = f64>) -> f64 {
    ln_sum_exp(values) - (GRID as f64).ln()
}

/// The canary's expected share of all bad requests when its bad ratio is θ times the
/// baseline's, given how many requests each version served.
fn canary_share(theta: f64, canary_requests: f64, baseline_requests: f64) -> f64 {
    theta * canary_requests / (theta * canary_requests + baseline_requests)
}

/// ln of the log-likelihood ratio of θ against θ_null over steps, on the conditional
/// binomial split of bad requests between the versions: given the total number of bad
/// requests, the canary's number is Binomial(total, canary_share(θ)). An incident that
/// hits both versions scales both rates and cancels out of θ.
fn ln_split_ratio(steps: &[StepCounts], theta: f64, theta_null: f64) -> f64 {
    steps
        .iter()
        .filter(|s| s.canary.requests > 0 && s.baseline.requests > 0)
        .map(|s| {
            let (nc, nb) = (s.canary.requests as f64, s.baseline.requests as f64);
            let (ec, eb) = (
                s.canary.bad.min(s.canary.requests) as f64,
                s.baseline.bad.min(s.baseline.requests) as f64,
            );
            let (p, p0) = (canary_share(theta, nc, nb), canary_share(theta_null, nc, nb));
            ec * (p / p0).ln() + eb * ((1.0 - p) / (1.0 - p0)).ln()
        })
        .sum()
}

/// ln Λ against H0 "canary bad ratio ≤ θ0 × baseline": mixture over θ ∈ (θ0, θ0·200].
pub fn ln_lambda_worse(steps: &[StepCounts], theta0: f64) -> f64 {
    ln_mean_exp((1..=GRID).map(|j| {
        let theta = theta0 * THETA_SPAN.powf(j as f64 / GRID as f64);
        ln_split_ratio(steps, theta, theta0)
    }))
}

/// ln Λ against H0 "canary bad ratio ≥ δ × baseline": mixture over θ ∈ [δ/200, δ).
pub fn ln_lambda_no_worse(steps: &[StepCounts], delta: f64) -> f64 {
    ln_mean_exp((1..=GRID).map(|j| {
        let theta = delta * THETA_SPAN.powf(-(j as f64) / GRID as f64);
        ln_split_ratio(steps, theta, delta)
    }))
}

fn ln_bernoulli_ratio(c: Counts, p: f64, p0: f64) -> f64 {
    let bad = c.bad.min(c.requests) as f64;
    let good = c.requests as f64 - bad;
    bad * (p / p0).ln() + good * ((1.0 - p) / (1.0 - p0)).ln()
}

/// ln Λ against H0 "canary bad ratio ≤ bound": mixture over p ∈ (bound, 1).
pub fn ln_lambda_over_bound(c: Counts, bound: f64) -> f64 {
    let bound = bound.clamp(1e-9, 1.0 - 1e-9);
    ln_mean_exp((1..=GRID).map(|j| {
        let p = bound + (1.0 - bound) * j as f64 / (GRID as f64 + 1.0);
        ln_bernoulli_ratio(c, p, bound)
    }))
}

/// ln Λ against H0 "canary bad ratio ≥ bound": mixture over p ∈ (0, bound).
pub fn ln_lambda_under_bound(c: Counts, bound: f64) -> f64 {
    let bound = bound.clamp(1e-9, 1.0 - 1e-9);
    ln_mean_exp((1..=GRID).map(|j| {
        let p = bound * j as f64 / (GRID as f64 + 1.0);
        ln_bernoulli_ratio(c, p, bound)
    }))
}

fn ratio(c: Counts) -> Option<f64> {
    (c.requests > 0).then(|| c.bad.min(c.requests) as f64 / c.requests as f64)
}

fn percent(c: Counts) -> String {
    match ratio(c) {
        Some(r) => format!("{}/{} ({:.2}%)", c.bad, c.requests, r * 100.0),
        None => "0 requests".into(),
    }
}

/// Λ as a number for status: finite even for extreme counts.
fn lambda_value(ln: f64) -> f64 {
    ln.clamp(-700.0, 700.0).exp()
}

fn sum_counts(steps: impl Iterator<Item = Counts>) -> Counts {
    steps.fold(Counts::default(), |a, c| Counts {
        requests: a.requests + c.requests,
        bad: a.bad + c.bad,
    })
}

// ------------------------------------------------------------------ per-metric verdicts

#[derive(Clone, Debug, PartialEq)]
enum MetricVerdict {
    Pass,
    Inconclusive,
    Error,
    Breach { decisive: bool, value: Option<f64> },
}

struct MetricOutcome {
    verdict: MetricVerdict,
    status: MetricStatus,
}

fn verdict_name(v: &MetricVerdict) -> &'static str {
    match v {
        MetricVerdict::Pass => "Pass",
        MetricVerdict::Inconclusive => "Inconclusive",
        MetricVerdict::Error => "Error",
        MetricVerdict::Breach { .. } => "Breach",
    }
}

fn outcome(name: &str, verdict: MetricVerdict, reason: String, fill: impl FnOnce(&mut MetricStatus)) -> MetricOutcome {
    let mut status = MetricStatus {
        name: name.to_string(),
        verdict: verdict_name(&verdict).into(),
        reason,
        ..MetricStatus::default()
    };
    fill(&mut status);
    MetricOutcome { verdict, status }
}

/// A value metric against absolute bounds: both judges use it for custom metrics, the
/// threshold judge also for the built-ins.
fn judge_value(plan: &MetricPlan, value: Option<f64>, baseline: Option<f64>) -> MetricOutcome {
    let bound = plan.kind.bound_text();
    match value.filter(|v| v.is_finite()) {
        None => outcome(
            &plan.name,
            MetricVerdict::Inconclusive,
            "no data (empty result or NaN): waiting for traffic".into(),
            |s| {
                s.baseline_value = baseline;
            },
        ),
        Some(v) if plan.kind.within(v) => outcome(
            &plan.name,
            MetricVerdict::Pass,
            format!("{v:.4} is within {bound}"),
            |s| {
                s.canary_value = Some(v);
                s.baseline_value = baseline;
            },
        ),
        Some(v) => outcome(
            &plan.name,
            MetricVerdict::Breach {
                decisive: false,
                value: Some(v),
            },
            format!("{v:.4} breaches {bound}"),
            |s| {
                s.canary_value = Some(v);
                s.baseline_value = baseline;
            },
        ),
    }
}

/// The sequential tests for one count metric.
fn judge_counts_sequential(
    cfg: &SequentialConfig,
    input: &MetricInput,
    bound: f64,
    clock: StepClock,
    count_metrics: usize,
) -> MetricOutcome {
    let plan = input.plan;
    let Reading::Counts {
        canary,
        baseline,
        canary_value,
        baseline_value,
    } = input.reading
    else {
        unreachable!("only count readings are judged sequentially")
    };
    let now = StepCounts { canary, baseline };
    let values = (canary_value, baseline_value);
    let mut steps = input.history.clone();
    steps.push(now);
    // Two tests can roll back per metric; α is split so the rollout as a whole keeps it.
    let ln_rollback = (2.0 * count_metrics.max(1) as f64 / cfg.alpha).ln();
    let ln_pass = (1.0 / cfg.alpha).ln();
    let ln_worse = ln_lambda_worse(&steps, cfg.theta0);
    let fill = |s: &mut MetricStatus| {
        s.canary_counts = Some(now.canary);
        s.baseline_counts = Some(now.baseline);
        s.canary_value = values.0;
        s.baseline_value = values.1;
        s.lambda = Some(lambda_value(ln_worse));
    };
    let versions = format!("canary {} vs baseline {}", percent(now.canary), percent(now.baseline));
    if ln_worse >= ln_rollback {
        return outcome(
            &plan.name,
            MetricVerdict::Breach {
                decisive: true,
                value: ratio(now.canary).map(|r| r * 100.0),
            },
            format!(
                "canary is worse than {}x baseline: Λ={:.3e} ≥ {:.0} ({versions})",
                cfg.theta0,
                lambda_value(ln_worse),
                ln_rollback.exp()
            ),
            fill,
        );
    }
    let baseline_over = ratio(now.baseline).is_some_and(|r| r > bound) && now.baseline.requests >= cfg.min_requests;
    if ln_lambda_over_bound(now.canary, bound) >= ln_rollback {
        if baseline_over {
            return outcome(
                &plan.name,
                MetricVerdict::Inconclusive,
                format!(
                    "both versions exceed the absolute bound {}: shared incident, holding ({versions})",
                    plan.kind.bound_text()
                ),
                fill,
            );
        }
        return outcome(
            &plan.name,
            MetricVerdict::Breach {
                decisive: true,
                value: ratio(now.canary).map(|r| r * 100.0),
            },
            format!(
                "canary exceeds the absolute bound {} while the baseline does not ({versions})",
                plan.kind.bound_text()
            ),
            fill,
        );
    }
    if now.canary.requests < cfg.min_requests {
        return outcome(
            &plan.name,
            MetricVerdict::Inconclusive,
            format!(
                "too little canary traffic this step: {} of {} requests needed",
                now.canary.requests, cfg.min_requests
            ),
            fill,
        );
    }
    // Passing early needs positive evidence, and no lean at all towards "worse".
    let relative_ok = ln_lambda_no_worse(&steps, cfg.delta) >= ln_pass;
    // Showing "within the absolute bound" is enough only where relative evidence cannot
    // come in time: when the baseline's bad requests are far rarer than the bound allows
    // (latency tails), or when no baseline serves (the 100 % step) and the relative test
    // never had data. Otherwise a regression under the bound (3x of 0.2 % errors) could
    // pass on absolute grounds before the rollback test has seen enough.
    let all_canary = sum_counts(steps.iter().map(|s| s.canary));
    let all_baseline = sum_counts(steps.iter().map(|s| s.baseline));
    let baseline_far_inside = ratio(all_baseline).is_some_and(|r| r * RARE_FACTOR <= bound);
    let no_baseline = all_baseline.requests == 0;
    let absolute_ok = (baseline_far_inside || no_baseline) && ln_lambda_under_bound(all_canary, bound) >= ln_pass;
    if clock.elapsed >= cfg.min_dwell && ln_worse < 0.0 && (relative_ok || absolute_ok) {
        let why = if relative_ok {
            format!("shown no worse than {}x baseline", cfg.delta)
        } else {
            format!("shown within {}", plan.kind.bound_text())
        };
        return outcome(&plan.name, MetricVerdict::Pass, format!("{why} ({versions})"), fill);
    }
    if clock.elapsed >= clock.duration {
        // At the planned end of the step, pass unless the evidence leans against the canary.
        if ln_worse < 0.5 * ln_rollback {
            return outcome(
                &plan.name,
                MetricVerdict::Pass,
                format!("step duration reached, no evidence against ({versions})"),
                fill,
            );
        }
        return outcome(
            &plan.name,
            MetricVerdict::Inconclusive,
            format!(
                "evidence leans against the canary (Λ={:.1}); collecting more ({versions})",
                lambda_value(ln_worse)
            ),
            fill,
        );
    }
    outcome(
        &plan.name,
        MetricVerdict::Inconclusive,
        format!("collecting evidence ({versions})"),
        fill,
    )
}

fn judge_metric(
    judge: JudgeKind,
    cfg: &SequentialConfig,
    input: &MetricInput,
    clock: StepClock,
    count_metrics: usize,
) -> MetricOutcome {
    match (&input.reading, input.plan.kind.bad_ratio_bound()) {
        (Reading::Error(e), _) => outcome(
            &input.plan.name,
            MetricVerdict::Error,
            format!("Prometheus: {e}"),
            |_| {},
        ),
        (Reading::Value(v), _) => judge_value(input.plan, *v, None),
        (Reading::Counts { .. }, Some(bound)) if judge == JudgeKind::Sequential => {
            judge_counts_sequential(cfg, input, bound, clock, count_metrics)
        }
        (
            Reading::Counts {
                canary,
                baseline,
                canary_value,
                baseline_value,
            },
            _,
        ) => {
            let mut o = judge_value(input.plan, *canary_value, *baseline_value);
            o.status.canary_counts = Some(*canary);
            o.status.baseline_counts = Some(*baseline);
            o
        }
    }
}

/// Judges one look at every metric of a step.
pub fn judge(mode: JudgeKind, cfg: &SequentialConfig, inputs: &[MetricInput], clock: StepClock) -> Judgement {
    let count_metrics = inputs
        .iter()
        .filter(|i| i.plan.kind.bad_ratio_bound().is_some())
        .count();
    let outcomes: Vec<MetricOutcome> = inputs
        .iter()
        .map(|i| judge_metric(mode, cfg, i, clock, count_metrics))
        .collect();
    let first = |pred: &dyn Fn(&MetricVerdict) -> bool| outcomes.iter().find(|o| pred(&o.verdict));
    let (verdict, reason) = if let Some(o) = first(&|v| matches!(v, MetricVerdict::Breach { decisive: true, .. }))
        .or_else(|| first(&|v| matches!(v, MetricVerdict::Breach { .. })))
    {
        let MetricVerdict::Breach { decisive, value } = o.verdict else {
            unreachable!("matched a breach")
        };
        let plan = inputs.iter().find(|i| i.plan.name == o.status.name).map(|i| i.plan);
        (
            Verdict::Breach {
                decisive,
                metric: o.status.name.clone(),
                value,
                bound: plan.map(|p| p.kind.bound_text()).unwrap_or_default(),
            },
            format!("{}: {}", o.status.name, o.status.reason),
        )
    } else if let Some(o) = first(&|v| *v == MetricVerdict::Error) {
        (Verdict::Error, format!("{}: {}", o.status.name, o.status.reason))
    } else if let Some(o) = first(&|v| *v == MetricVerdict::Inconclusive) {
        (Verdict::Inconclusive, format!("{}: {}", o.status.name, o.status.reason))
    } else if outcomes.is_empty() {
        (Verdict::Inconclusive, "no metrics to judge by".into())
    } else {
        let early = clock.elapsed < clock.duration;
        let what = if early {
            "all metrics pass (early)"
        } else {
            "all metrics pass"
        };
        (Verdict::Pass { early }, what.into())
    };
    // Only sequential evidence ends a step early. The threshold judge, and any metric
    // judged by its value over a window (a custom query), wait for the step's full duration.
    let early_allowed = mode == JudgeKind::Sequential && inputs.iter().all(|i| i.plan.kind.bad_ratio_bound().is_some());
    let verdict = match verdict {
        Verdict::Pass { .. } if !early_allowed && clock.elapsed < clock.duration => Verdict::Inconclusive,
        v => v,
    };
    Judgement {
        verdict,
        reason,
        metrics: outcomes.into_iter().map(|o| o.status).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(requests: u64, bad: u64) -> Counts {
        Counts { requests, bad }
    }

    #[test]
    fn equal_error_shares_give_no_evidence_of_worse() {
        // 10 % of traffic, 10 % of the errors: exactly what θ = 1 predicts.
        let s = [StepCounts {
            canary: c(1000, 10),
            baseline: c(9000, 90),
        }];
        assert!(ln_lambda_worse(&s, 1.5) < 0.0);
    }

    #[test]
    fn a_broken_canary_crosses_the_rollback_bar_within_a_few_errors() {
        let s = [StepCounts {
            canary: c(20, 6),
            baseline: c(180, 0),
        }];
        assert!(ln_lambda_worse(&s, 1.5) > (2.0 / 0.005f64).ln());
    }

    #[test]
    fn an_incident_on_both_versions_cancels_out() {
        // Both versions at 20 % errors: the canary's share of errors is its share of traffic.
        let s = [StepCounts {
            canary: c(200, 40),
            baseline: c(1800, 360),
        }];
        assert!(ln_lambda_worse(&s, 1.5) < 0.0);
    }

    #[test]
    fn lambda_is_finite_for_zero_and_extreme_counts() {
        for (n, e) in [(0, 0), (1, 1), (u32::MAX as u64, u32::MAX as u64), (10, 0)] {
            let s = [StepCounts {
                canary: c(n, e),
                baseline: c(n, e),
            }];
            assert!(lambda_value(ln_lambda_worse(&s, 1.5)).is_finite());
            assert!(lambda_value(ln_lambda_over_bound(c(n, e), 0.01)).is_finite());
            assert!(lambda_value(ln_lambda_under_bound(c(n, e), 0.01)).is_finite());
        }
    }
}
