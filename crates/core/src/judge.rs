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
    /// What the step's previous look saw (sequential judge only; kept in status).
    pub last: Option<LastLook>,
}

/// A metric's previous look in the same step, as the sequential judge remembers it.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct LastLook {
    /// Counts since the step began, as of that look.
    pub counts: StepCounts,
    /// The canary's counts over the intervals between looks in which the baseline stayed
    /// within the absolute bound: what the absolute test judges (shared incidents left out).
    pub clean_canary: Counts,
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
/// The alternatives of the rollback test reach up to this multiple of θ0...
const THETA_SPAN: f64 = 200.0;
/// ...and half of their weight lies within this multiple: the regressions that are hard
/// to see (2x) get power, the broken canaries lose at most ln 2 of evidence.
const NEAR_SPAN: f64 = 3.0;
/// An early pass needs the rollback test's Λ at most e^-2 ≈ 0.14: the data must speak
/// against "worse than θ0", not merely fail to speak for it (a 2x regression shows "no
/// worse than δ = 3x" long before it shows "worse than 1.2x").
const LN_EARLY_PASS_WORSE: f64 = -2.0;
/// The baseline is in an incident over an interval when the evidence that it is over the
/// bound there reaches this (1 bad request in 50 is not an incident; 5 in 50 is).
const INCIDENT_EVIDENCE: f64 = 20.0;

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
///
/// `baseline_floor`: the baseline is taken to have at least this bad ratio (see
/// `ln_lambda_worse`); 0 for the plain test.
fn ln_split_ratio(steps: &[StepCounts], theta: f64, theta_null: f64, baseline_floor: f64) -> f64 {
    steps
        .iter()
        .filter(|s| s.canary.requests > 0 && s.baseline.requests > 0)
        .map(|s| {
            let (nc, nb) = (s.canary.requests as f64, s.baseline.requests as f64);
            let (ec, eb) = (
                s.canary.bad.min(s.canary.requests) as f64,
                (s.baseline.bad.min(s.baseline.requests) as f64).max(baseline_floor * nb),
            );
            let (p, p0) = (canary_share(theta, nc, nb), canary_share(theta_null, nc, nb));
            ec * (p / p0).ln() + eb * ((1.0 - p) / (1.0 - p0)).ln()
        })
        .sum()
}

/// ln Λ against H0 "canary bad ratio ≤ θ0 × baseline": a mixture over θ, half of it on
/// (θ0, 3θ0] (a 2x regression is judged near there), half on (θ0, 200θ0] (broken canaries).
///
/// The baseline counts as having at least `baseline_floor` bad requests per request (a
/// tenth of the absolute bound): next to a spotless baseline, a canary's first few
/// errors would otherwise weigh as infinitely worse. Adding baseline bad requests only
/// lowers Λ (for θ > θ0 each one multiplies it by (1-p)/(1-p0) < 1), so the chance of a
/// false rollback stays under α; what is given up is telling apart two versions that are
/// both far inside the bound.
pub fn ln_lambda_worse(steps: &[StepCounts], theta0: f64, baseline_floor: f64) -> f64 {
    let over = |span: f64| {
        ln_mean_exp((1..=GRID).map(|j| {
            let theta = theta0 * span.powf(j as f64 / GRID as f64);
            ln_split_ratio(steps, theta, theta0, baseline_floor)
        }))
    };
    // Half the weight on moderate regressions, half spread up to broken canaries.
    ln_sum_exp([over(NEAR_SPAN), over(THETA_SPAN)].into_iter()) - 2f64.ln()
}

/// The Λ at which the sequential judge rolls back: two tests can roll back per metric,
/// and α is split so the rollout as a whole keeps it.
pub fn rollback_threshold(count_metrics: usize, alpha: f64) -> f64 {
    2.0 * count_metrics.max(1) as f64 / alpha
}

/// ln Λ against H0 "canary bad ratio ≥ δ × baseline": mixture over θ ∈ [δ/200, δ).
pub fn ln_lambda_no_worse(steps: &[StepCounts], delta: f64) -> f64 {
    ln_mean_exp((1..=GRID).map(|j| {
        let theta = delta * THETA_SPAN.powf(-(j as f64) / GRID as f64);
        ln_split_ratio(steps, theta, delta, 0.0)
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

/// Counts since `before` (never below zero).
fn since(now: Counts, before: Counts) -> Counts {
    Counts {
        requests: now.requests.saturating_sub(before.requests),
        bad: now.bad.saturating_sub(before.bad),
    }
}

fn over(c: Counts, bound: f64) -> bool {
    ratio(c).is_some_and(|r| r > bound)
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

/// The absolute test's view of a step: the interval since the previous look, whether the
/// baseline was shown over the bound in it (a shared incident, if the canary is too), and
/// the canary's counts over the intervals in which the baseline stayed within the bound.
struct AbsoluteView {
    interval: StepCounts,
    incident: bool,
    clean: Counts,
}

/// Leaving out the intervals in which the baseline was over the bound keeps the absolute
/// test anytime-valid: whether an interval is left out depends on the baseline's counts,
/// not on the canary's, so the product of the canary's likelihood ratios over the kept
/// intervals is still a test martingale (Ville: P(ever ≥ 1/α) ≤ α). An incident that
/// ended no longer weighs on the step, however large it was.
fn absolute_view(now: StepCounts, last: Option<LastLook>, bound: f64) -> AbsoluteView {
    let last = last.unwrap_or_default();
    let went_down = |n: Counts, b: Counts| n.requests < b.requests || n.bad < b.bad;
    // Counts that went down belong to another step (or a counter reset): start over.
    let last = if went_down(now.canary, last.counts.canary) || went_down(now.baseline, last.counts.baseline) {
        LastLook::default()
    } else {
        last
    };
    let interval = StepCounts {
        canary: since(now.canary, last.counts.canary),
        baseline: since(now.baseline, last.counts.baseline),
    };
    // Left out: any interval the baseline ended over the bound (one bad request in a
    // quiet interval is enough: leaving out costs a little power, never validity). A
    // shared incident that holds the step: only one the baseline's counts show.
    let incident = ln_lambda_over_bound(interval.baseline, bound) >= INCIDENT_EVIDENCE.ln();
    let clean = if over(interval.baseline, bound) {
        last.clean_canary
    } else {
        sum_counts([last.clean_canary, interval.canary].into_iter())
    };
    AbsoluteView {
        interval,
        incident,
        clean,
    }
}

/// The sequential tests for one count metric.
// Long: the sequential test's steps in the order of the README's derivation.
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
    let mut steps = input.history.clone();
    steps.push(now);
    let ln_rollback = rollback_threshold(count_metrics, cfg.alpha).ln();
    let ln_worse = ln_lambda_worse(&steps, cfg.theta0, bound / RARE_FACTOR);
    let view = absolute_view(now, input.last, bound);
    let fill = |s: &mut MetricStatus| {
        s.canary_counts = Some(now.canary);
        s.baseline_counts = Some(now.baseline);
        s.clean_canary_counts = Some(view.clean);
        s.canary_value = canary_value;
        s.baseline_value = baseline_value;
        s.lambda = Some(lambda_value(ln_worse));
    };
    let versions = format!("canary {} vs baseline {}", percent(now.canary), percent(now.baseline));
    let breach = |reason: String| {
        let value = ratio(now.canary).map(|r| r * 100.0);
        outcome(
            &plan.name,
            MetricVerdict::Breach { decisive: true, value },
            reason,
            fill,
        )
    };
    if ln_worse >= ln_rollback {
        return breach(format!(
            "canary is worse than {}x baseline: Λ={:.3e} ≥ {:.0} ({versions})",
            cfg.theta0,
            lambda_value(ln_worse),
            ln_rollback.exp()
        ));
    }
    if ln_lambda_over_bound(view.clean, bound) >= ln_rollback {
        return breach(format!(
            "canary exceeds the absolute bound {} while the baseline stays within it ({}, outside shared incidents; {versions})",
            plan.kind.bound_text(),
            percent(view.clean)
        ));
    }
    if view.incident && over(view.interval.canary, bound) {
        let reason = format!(
            "both versions over the absolute bound {} since the last look: shared incident, holding ({versions})",
            plan.kind.bound_text()
        );
        return outcome(&plan.name, MetricVerdict::Inconclusive, reason, fill);
    }
    if now.canary.requests < cfg.min_requests {
        let reason = format!(
            "too little canary traffic this step: {} of {} requests needed",
            now.canary.requests, cfg.min_requests
        );
        return outcome(&plan.name, MetricVerdict::Inconclusive, reason, fill);
    }
    let (verdict, reason) = pass_or_wait(cfg, &steps, bound, clock, ln_worse, ln_rollback);
    outcome(&plan.name, verdict, format!("{reason} ({versions})"), fill)
}

/// No rollback: may the step pass (early, or at its planned end), or must it wait?
fn pass_or_wait(
    cfg: &SequentialConfig,
    steps: &[StepCounts],
    bound: f64,
    clock: StepClock,
    ln_worse: f64,
    ln_rollback: f64,
) -> (MetricVerdict, String) {
    let ln_pass = (1.0 / cfg.alpha).ln();
    // Passing early needs positive evidence, and evidence against the rollback
    // alternative itself, not only a lean away from it.
    let relative_ok = ln_lambda_no_worse(steps, cfg.delta) >= ln_pass && ln_worse <= LN_EARLY_PASS_WORSE;
    // Showing "within the absolute bound" is enough only where relative evidence cannot
    // come in time: when the baseline's bad requests are far rarer than the bound allows
    // (latency tails), or when no baseline serves (the 100 % step) and the relative test
    // never had data. Otherwise a regression under the bound (3x of 0.2 % errors) could
    // pass on absolute grounds before the rollback test has seen enough.
    let all_canary = sum_counts(steps.iter().map(|s| s.canary));
    let all_baseline = sum_counts(steps.iter().map(|s| s.baseline));
    let baseline_far_inside = ratio(all_baseline).is_some_and(|r| r * RARE_FACTOR <= bound);
    let no_baseline = all_baseline.requests == 0;
    let absolute_ok =
        (baseline_far_inside || no_baseline) && ln_worse < 0.0 && ln_lambda_under_bound(all_canary, bound) >= ln_pass;
    if clock.elapsed >= cfg.min_dwell && (relative_ok || absolute_ok) {
        let why = if relative_ok {
            format!("shown no worse than {}x baseline", cfg.delta)
        } else {
            "shown within the bound".to_string()
        };
        return (MetricVerdict::Pass, why);
    }
    if clock.elapsed >= clock.duration {
        // At the planned end of the step, pass unless the evidence leans against the canary.
        if ln_worse < 0.5 * ln_rollback {
            return (MetricVerdict::Pass, "step duration reached, no evidence against".into());
        }
        return (
            MetricVerdict::Inconclusive,
            format!(
                "evidence leans against the canary (Λ={:.1}); collecting more",
                lambda_value(ln_worse)
            ),
        );
    }
    (MetricVerdict::Inconclusive, "collecting evidence".into())
}

fn judge_metric(
    judge: JudgeKind,
    cfg: &SequentialConfig,
    input: &MetricInput,
    clock: StepClock,
    count_metrics: usize,
) -> MetricOutcome {
    match (&input.reading, input.plan.kind.bad_ratio_bound()) {
        // The last look's counts stay, so the next look's interval starts from them.
        (Reading::Error(e), _) => outcome(
            &input.plan.name,
            MetricVerdict::Error,
            format!("Prometheus: {e}"),
            |s| {
                if let Some(last) = input.last {
                    s.canary_counts = Some(last.counts.canary);
                    s.baseline_counts = Some(last.counts.baseline);
                    s.clean_canary_counts = Some(last.clean_canary);
                }
            },
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
        assert!(ln_lambda_worse(&s, 1.5, 0.0) < 0.0);
    }

    #[test]
    fn a_broken_canary_crosses_the_rollback_bar_within_a_few_errors() {
        let s = [StepCounts {
            canary: c(20, 6),
            baseline: c(180, 0),
        }];
        assert!(ln_lambda_worse(&s, 1.5, 0.0) > (2.0 / 0.005f64).ln());
    }

    #[test]
    fn an_incident_on_both_versions_cancels_out() {
        // Both versions at 20 % errors: the canary's share of errors is its share of traffic.
        let s = [StepCounts {
            canary: c(200, 40),
            baseline: c(1800, 360),
        }];
        assert!(ln_lambda_worse(&s, 1.5, 0.0) < 0.0);
    }

    #[test]
    fn lambda_is_finite_for_zero_and_extreme_counts() {
        for (n, e) in [(0, 0), (1, 1), (u32::MAX as u64, u32::MAX as u64), (10, 0)] {
            let s = [StepCounts {
                canary: c(n, e),
                baseline: c(n, e),
            }];
            assert!(lambda_value(ln_lambda_worse(&s, 1.5, 0.0)).is_finite());
            assert!(lambda_value(ln_lambda_over_bound(c(n, e), 0.01)).is_finite());
            assert!(lambda_value(ln_lambda_under_bound(c(n, e), 0.01)).is_finite());
        }
    }
}
