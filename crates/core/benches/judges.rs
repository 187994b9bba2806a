//! Decision quality of weir's sequential judge against a Flagger-style and an Argo-style
//! judge, on simulated traffic. Not a timing benchmark: it counts outcomes.
//!
//! Traffic: Poisson arrivals per second, split by the step's weight; each request fails
//! (5xx) or is slow (over 500 ms) with its version's probability. Shapes: shared incidents
//! of several sizes and lengths on both versions, regressions from 1.2x to 30 %, a
//! spotless baseline, traffic that collapses at night, a canary that degrades mid-step,
//! canary-only blips. Steps 10/25/50/100 %, 5 minutes each. Prometheus is modelled as a
//! 5-second scrape: a judge sees counts up to the last scrape.
//!
//!   cargo bench --bench judges                 # 1,000 runs per cell, seed 1
//!   WEIR_BENCH_RUNS=200 WEIR_BENCH_SEED=7 cargo bench --bench judges
//!   WEIR_BENCH_ONLY=incident WEIR_BENCH_WHY=1 cargo bench --bench judges   # some rows, and why weir rolled back
//!
//! Writes the table to stdout and a plot to benches/judges.svg.

use std::fmt::Write as _;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Binomial, Distribution, Poisson};
use weir_core::judge::{self, LastLook, MetricInput, Reading, StepClock, StepCounts, Verdict};
use weir_core::plan::{MetricKind, MetricPlan, SequentialConfig};
use weir_core::spec::JudgeKind;
use weir_core::status::Counts;

const WEIGHTS: [u32; 4] = [10, 25, 50, 100];
const STEP_SECONDS: u64 = 300;
const SCRAPE_SECONDS: u64 = 5;
const TICK_SECONDS: u64 = 5;
/// weir's progress deadline: a step not passed this long after it was due rolls back.
const DEADLINE_SECONDS: u64 = 600;
const HORIZON: u64 = WEIGHTS.len() as u64 * STEP_SECONDS + DEADLINE_SECONDS;
const BASE_ERRORS: f64 = 0.002;
const BASE_SLOW: f64 = 0.0005;

/// When something starts: at a second of the run, or some seconds into a step (0-based),
/// wherever the rollout is by then.
#[derive(Clone, Copy)]
enum Start {
    At(u64),
    IntoStep(usize, u64),
}

/// A shared incident: both versions fail at `ratio` for `seconds`.
#[derive(Clone, Copy)]
struct Incident {
    start: Start,
    seconds: u64,
    ratio: f64,
}

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    rps: f64,
    /// The baseline's error ratio (the stable version).
    base_errors: f64,
    canary_errors: f64,
    canary_slow: f64,
    incident: Option<Incident>,
    /// Traffic falls to this rate from this second on (night).
    collapse: Option<(u64, f64)>,
    /// The canary's error ratio becomes this from then on.
    degrade: Option<(Start, f64)>,
    /// Canary-only bursts: every `period` seconds, `seconds` long, at this error ratio.
    blips: Option<(u64, u64, f64)>,
    /// Should the canary be promoted?
    healthy: bool,
}

const fn scenario(name: &'static str, rps: f64, canary_errors: f64, healthy: bool) -> Scenario {
    Scenario {
        name,
        rps,
        base_errors: BASE_ERRORS,
        canary_errors,
        canary_slow: BASE_SLOW,
        incident: None,
        collapse: None,
        degrade: None,
        blips: None,
        healthy,
    }
}

/// A healthy canary through a shared incident.
const fn incident(name: &'static str, rps: f64, start: Start, seconds: u64, ratio: f64) -> Scenario {
    Scenario {
        incident: Some(Incident { start, seconds, ratio }),
        ..scenario(name, rps, BASE_ERRORS, true)
    }
}

const SCENARIOS: [Scenario; 21] = [
    scenario("A/A healthy, 2 rps", 2.0, BASE_ERRORS, true),
    scenario("A/A healthy, 20 rps", 20.0, BASE_ERRORS, true),
    scenario("A/A healthy, 200 rps", 200.0, BASE_ERRORS, true),
    incident("healthy + shared incident, 20 rps", 20.0, Start::At(240), 120, 0.10),
    incident(
        "shared incident 50 % x 2 min in step 2, 20 rps",
        20.0,
        Start::IntoStep(1, 30),
        120,
        0.50,
    ),
    incident(
        "shared incident 50 % x 2 min in step 2, 200 rps",
        200.0,
        Start::IntoStep(1, 30),
        120,
        0.50,
    ),
    incident(
        "shared incident 50 % x 2 min in step 3, 200 rps",
        200.0,
        Start::IntoStep(2, 10),
        120,
        0.50,
    ),
    incident(
        "shared incident 20 % x 8 min in step 1, 200 rps",
        200.0,
        Start::IntoStep(0, 30),
        480,
        0.20,
    ),
    incident(
        "shared incident 50 % x 2 min in the 100 % step, 200 rps",
        200.0,
        Start::IntoStep(3, 10),
        120,
        0.50,
    ),
    scenario("1.2x errors (0.24 %), 200 rps", 200.0, 1.2 * BASE_ERRORS, true),
    scenario("2x errors (0.4 %), 200 rps", 200.0, 2.0 * BASE_ERRORS, false),
    scenario("3x errors (0.6 %), 200 rps", 200.0, 3.0 * BASE_ERRORS, false),
    scenario("10x errors (2 %), 200 rps", 200.0, 10.0 * BASE_ERRORS, false),
    scenario("broken (30 %), 20 rps", 20.0, 0.30, false),
    scenario("broken (30 %), 200 rps", 200.0, 0.30, false),
    Scenario {
        canary_slow: 0.08,
        ..scenario("slow (8 % over 500 ms), 200 rps", 200.0, BASE_ERRORS, false)
    },
    Scenario {
        base_errors: 0.0,
        ..scenario("spotless baseline, canary 0.05 %, 200 rps", 200.0, 0.0005, true)
    },
    Scenario {
        collapse: Some((400, 1.0)),
        ..scenario("healthy, traffic 200 -> 1 rps at night", 200.0, BASE_ERRORS, true)
    },
    Scenario {
        degrade: Some((Start::IntoStep(1, 30), 10.0 * BASE_ERRORS)),
        ..scenario("degrades to 10x 30 s into step 2, 200 rps", 200.0, BASE_ERRORS, false)
    },
    Scenario {
        blips: Some((240, 5, 0.5)),
        // Failures of the canary alone (pods crashing every few minutes): not healthy.
        ..scenario(
            "canary-only 5 s blips of 50 % every 4 min, 200 rps",
            200.0,
            BASE_ERRORS,
            false,
        )
    },
    Scenario {
        canary_slow: 0.0,
        ..scenario("1.2x errors (0.24 %), 20 rps", 20.0, 1.2 * BASE_ERRORS, true)
    },
];

#[derive(Clone, Copy, PartialEq, Debug)]
enum Outcome {
    Promoted { at: u64 },
    RolledBack { at: u64, bad_served: u64 },
}

/// Per-second traffic of one version.
#[derive(Clone, Copy, Default)]
struct Second {
    requests: u64,
    errors: u64,
    slow: u64,
}

fn sample(rng: &mut StdRng, rate: f64, p_error: f64, p_slow: f64) -> Second {
    let requests = if rate > 0.0 {
        Poisson::new(rate).map(|d| d.sample(rng) as u64).unwrap_or(0)
    } else {
        0
    };
    let draw = |rng: &mut StdRng, p: f64| {
        Binomial::new(requests, p.clamp(0.0, 1.0))
            .map(|d| d.sample(rng))
            .unwrap_or(0)
    };
    Second {
        requests,
        errors: draw(rng, p_error),
        slow: draw(rng, p_slow),
    }
}

/// What a judge says at a look.
enum Look {
    Hold,
    Pass,
    Rollback,
}

trait Judge {
    /// Called every second with the traffic seen (up to the last scrape) in the current step.
    fn look(&mut self, t_in_step: u64, step: usize, canary: &[Second], baseline: &[Second]) -> Look;
    /// Called when a step passes.
    fn step_passed(&mut self, canary: &[Second], baseline: &[Second]);
}

fn sum(seconds: &[Second]) -> Second {
    seconds.iter().fold(Second::default(), |a, s| Second {
        requests: a.requests + s.requests,
        errors: a.errors + s.errors,
        slow: a.slow + s.slow,
    })
}

// ------------------------------------------------------------------ weir

struct Weir {
    cfg: SequentialConfig,
    metrics: [MetricPlan; 2],
    history: [Vec<StepCounts>; 2],
    /// The step's previous look per metric, as weir keeps it in status.
    last: [Option<LastLook>; 2],
}

impl Weir {
    fn new() -> Weir {
        Weir {
            cfg: SequentialConfig::default(),
            metrics: [
                MetricPlan {
                    name: "request-success-rate".into(),
                    kind: MetricKind::SuccessRate { min: 99.0 },
                },
                MetricPlan {
                    name: "request-duration".into(),
                    kind: MetricKind::Duration {
                        quantile: 0.99,
                        max_ms: 500.0,
                    },
                },
            ],
            history: [vec![], vec![]],
            last: [None, None],
        }
    }

    fn counts(canary: &[Second], baseline: &[Second], slow: bool) -> StepCounts {
        let (c, b) = (sum(canary), sum(baseline));
        let bad = |s: Second| if slow { s.slow } else { s.errors };
        StepCounts {
            canary: Counts {
                requests: c.requests,
                bad: bad(c),
            },
            baseline: Counts {
                requests: b.requests,
                bad: bad(b),
            },
        }
    }
}

impl Judge for Weir {
    fn look(&mut self, t_in_step: u64, _step: usize, canary: &[Second], baseline: &[Second]) -> Look {
        if t_in_step == 0 || !t_in_step.is_multiple_of(TICK_SECONDS) {
            return Look::Hold;
        }
        let inputs: Vec<MetricInput> = self
            .metrics
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let now = Weir::counts(canary, baseline, i == 1);
                MetricInput {
                    plan: m,
                    reading: Reading::Counts {
                        canary: now.canary,
                        baseline: now.baseline,
                        canary_value: None,
                        baseline_value: None,
                    },
                    history: self.history[i].clone(),
                    last: self.last[i],
                }
            })
            .collect();
        let clock = StepClock {
            elapsed: Duration::from_secs(t_in_step),
            duration: Duration::from_secs(STEP_SECONDS),
        };
        let judgement = judge::judge(JudgeKind::Sequential, &self.cfg, &inputs, clock);
        for (i, m) in judgement.metrics.iter().enumerate() {
            if let (Some(canary), Some(baseline)) = (m.canary_counts, m.baseline_counts) {
                self.last[i] = Some(LastLook {
                    counts: StepCounts { canary, baseline },
                    clean_canary: m.clean_canary_counts.unwrap_or(canary),
                });
            }
        }
        match judgement.verdict {
            Verdict::Pass { .. } => Look::Pass,
            Verdict::Breach { .. } => {
                if std::env::var_os("WEIR_BENCH_WHY").is_some() {
                    eprintln!("rollback at step {} + {t_in_step} s: {}", _step + 1, judgement.reason);
                }
                Look::Rollback
            }
            Verdict::Inconclusive | Verdict::Error => {
                if t_in_step >= STEP_SECONDS + DEADLINE_SECONDS {
                    Look::Rollback
                } else {
                    Look::Hold
                }
            }
        }
    }

    fn step_passed(&mut self, canary: &[Second], baseline: &[Second]) {
        for i in 0..2 {
            self.history[i].push(Weir::counts(canary, baseline, i == 1));
        }
        self.last = [None, None];
    }
}

// ------------------------------------------------------------------ the baselines

/// Checks every minute over the last minute; a check fails when success < `min_success`,
/// when the p99 is over 500 ms (more than 1 % slow), or when there is no data (NaN).
/// Rolls back after `failure_threshold` failed checks (cumulative); a step lasts 5 minutes.
struct WindowJudge {
    min_success: f64,
    failure_threshold: u32,
    failures: u32,
}

impl WindowJudge {
    fn flagger() -> WindowJudge {
        WindowJudge {
            min_success: 0.99,
            failure_threshold: 5,
            failures: 0,
        }
    }
    fn argo() -> WindowJudge {
        // failureLimit 0: the first failed measurement aborts.
        WindowJudge {
            min_success: 0.95,
            failure_threshold: 1,
            failures: 0,
        }
    }
}

impl Judge for WindowJudge {
    fn look(&mut self, t_in_step: u64, _step: usize, canary: &[Second], _baseline: &[Second]) -> Look {
        if t_in_step == 0 || !t_in_step.is_multiple_of(60) {
            return Look::Hold;
        }
        let window = sum(&canary[canary.len().saturating_sub(60)..]);
        let n = window.requests as f64;
        let success = 1.0 - window.errors as f64 / n;
        let slow_share = window.slow as f64 / n;
        let failed = window.requests == 0 || success < self.min_success || slow_share > 0.01;
        if failed {
            self.failures += 1;
            if self.failures >= self.failure_threshold {
                return Look::Rollback;
            }
        }
        if t_in_step >= STEP_SECONDS {
            Look::Pass
        } else {
            Look::Hold
        }
    }

    fn step_passed(&mut self, _canary: &[Second], _baseline: &[Second]) {}
}

// ------------------------------------------------------------------ one run

/// When each timed event of a run began (seconds), once it has.
#[derive(Default)]
struct Began {
    incident: Option<u64>,
    degrade: Option<u64>,
}

impl Began {
    fn update(&mut self, s: &Scenario, t: u64, step: usize, t_in_step: u64) {
        let starts = |start: Start| match start {
            Start::At(at) => t >= at,
            Start::IntoStep(k, offset) => step == k && t_in_step >= offset,
        };
        if self.incident.is_none() && s.incident.is_some_and(|i| starts(i.start)) {
            self.incident = Some(t);
        }
        if self.degrade.is_none() && s.degrade.is_some_and(|(start, _)| starts(start)) {
            self.degrade = Some(t);
        }
    }
}

/// Requests per second and the error ratios of canary and baseline at second `t`.
fn traffic(s: &Scenario, began: &Began, t: u64) -> (f64, f64, f64) {
    let rps = match s.collapse {
        Some((from, low)) if t >= from => low,
        _ => s.rps,
    };
    let mut canary = match (s.degrade, began.degrade) {
        (Some((_, p)), Some(_)) => p,
        _ => s.canary_errors,
    };
    if let Some((period, seconds, p)) = s.blips
        && t % period >= period - seconds
    {
        canary = canary.max(p);
    }
    match (s.incident, began.incident) {
        (Some(i), Some(from)) if t < from + i.seconds => (rps, canary.max(i.ratio), s.base_errors.max(i.ratio)),
        _ => (rps, canary, s.base_errors),
    }
}

fn run(s: &Scenario, judge: &mut dyn Judge, rng: &mut StdRng) -> Outcome {
    let mut step = 0;
    let mut step_start = 0;
    let (mut canary, mut baseline): (Vec<Second>, Vec<Second>) = (vec![], vec![]);
    let mut bad_served = 0;
    let mut began = Began::default();
    for t in 0..HORIZON {
        began.update(s, t, step, t - step_start);
        let (rps, pc, pb) = traffic(s, &began, t);
        let w = f64::from(WEIGHTS[step]) / 100.0;
        let c = sample(rng, rps * w, pc, s.canary_slow);
        let b = sample(rng, rps * (1.0 - w), pb, BASE_SLOW);
        bad_served += c.errors + c.slow;
        canary.push(c);
        baseline.push(b);
        let t_in_step = t + 1 - step_start;
        // The judge sees what the last scrape saw.
        let seen = (canary.len() as u64).saturating_sub(t_in_step % SCRAPE_SECONDS) as usize;
        match judge.look(t_in_step, step, &canary[..seen], &baseline[..seen]) {
            Look::Hold => {}
            Look::Rollback => return Outcome::RolledBack { at: t + 1, bad_served },
            Look::Pass => {
                judge.step_passed(&canary[..seen], &baseline[..seen]);
                step += 1;
                if step == WEIGHTS.len() {
                    return Outcome::Promoted { at: t + 1 };
                }
                step_start = t + 1;
                canary.clear();
                baseline.clear();
            }
        }
    }
    Outcome::RolledBack {
        at: HORIZON,
        bad_served,
    }
}

#[derive(Clone, Debug, Default)]
struct Cell {
    runs: usize,
    rollbacks: usize,
    rollback_times: Vec<u64>,
    bad_served: Vec<u64>,
    promotion_times: Vec<u64>,
}

impl Cell {
    fn rollback_rate(&self) -> f64 {
        self.rollbacks as f64 / self.runs as f64
    }
}

fn median(v: &[u64]) -> Option<u64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    (!v.is_empty()).then(|| v[v.len() / 2])
}

fn measure(s: &Scenario, which: usize, runs: usize, seed: u64) -> Cell {
    let mut cell = Cell {
        runs,
        ..Cell::default()
    };
    for r in 0..runs {
        // The same traffic for every judge: seeded by scenario and run only.
        let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(r as u64) ^ fxhash(s.name));
        let mut judge: Box<dyn Judge> = match which {
            0 => Box::new(Weir::new()),
            1 => Box::new(WindowJudge::flagger()),
            _ => Box::new(WindowJudge::argo()),
        };
        match run(s, judge.as_mut(), &mut rng) {
            Outcome::Promoted { at } => cell.promotion_times.push(at),
            Outcome::RolledBack { at, bad_served } => {
                cell.rollbacks += 1;
                cell.rollback_times.push(at);
                cell.bad_served.push(bad_served);
            }
        }
    }
    cell
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

fn fmt_time(t: Option<u64>) -> String {
    match t {
        None => "-".into(),
        Some(s) if s < 120 => format!("{s} s"),
        Some(s) => format!("{:.1} min", s as f64 / 60.0),
    }
}

const JUDGES: [&str; 3] = ["weir (sequential)", "Flagger-style", "Argo-style"];

fn main() {
    let runs: usize = std::env::var("WEIR_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let seed: u64 = std::env::var("WEIR_BENCH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: then a quick smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let runs = if smoke { 20 } else { runs };
    println!("weir judge benchmark: {runs} runs per cell, seed {seed}; steps 10/25/50/100 % x 5 min\n");
    println!(
        "| scenario | judge | rollback rate | median time to rollback | median bad requests served | median time to promotion |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    let mut results = vec![];
    let only = std::env::var("WEIR_BENCH_ONLY").unwrap_or_default();
    for s in SCENARIOS.iter().filter(|s| s.name.contains(&only)) {
        for (j, name) in JUDGES.iter().enumerate() {
            let cell = measure(s, j, runs, seed);
            println!(
                "| {} | {} | {:.1} % | {} | {} | {} |",
                s.name,
                name,
                100.0 * cell.rollback_rate(),
                fmt_time(median(&cell.rollback_times)),
                median(&cell.bad_served)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
                fmt_time(median(&cell.promotion_times)),
            );
            results.push((s, j, cell));
        }
    }
    let weir = |name: &str| {
        results
            .iter()
            .find(|(s, j, _)| s.name == name && *j == 0)
            .map(|(_, _, c)| c.clone())
            .unwrap_or_default()
    };
    let mut targets = vec![];
    for n in ["A/A healthy, 2 rps", "A/A healthy, 20 rps", "A/A healthy, 200 rps"] {
        targets.push((
            format!("{n}: false rollback <= 0.5 %"),
            weir(n).rollback_rate() <= 0.005,
        ));
    }
    targets.push((
        "shared incident: false rollback <= 1 %".into(),
        weir("healthy + shared incident, 20 rps").rollback_rate() <= 0.01,
    ));
    for n in [
        "shared incident 50 % x 2 min in step 2, 20 rps",
        "shared incident 50 % x 2 min in step 2, 200 rps",
        "shared incident 50 % x 2 min in step 3, 200 rps",
    ] {
        targets.push((format!("{n}: false rollback <= 1 %"), weir(n).rollback_rate() <= 0.01));
    }
    targets.push((
        "2x at 200 rps: caught in >= 90 % of runs".into(),
        weir("2x errors (0.4 %), 200 rps").rollback_rate() >= 0.90,
    ));
    targets.push((
        "1.2x at 200 rps: promoted in >= 95 % of runs".into(),
        weir("1.2x errors (0.24 %), 200 rps").rollback_rate() <= 0.05,
    ));
    targets.push((
        "spotless baseline, canary inside the bound: false rollback <= 1 %".into(),
        weir("spotless baseline, canary 0.05 %, 200 rps").rollback_rate() <= 0.01,
    ));
    let broken = weir("broken (30 %), 20 rps");
    targets.push((
        "broken at 20 rps: rolled back in <= 30 s with <= 10 bad requests".into(),
        broken.rollback_rate() == 1.0
            && median(&broken.rollback_times) <= Some(30)
            && median(&broken.bad_served) <= Some(10),
    ));
    let ten = weir("10x errors (2 %), 200 rps");
    targets.push((
        "10x at 200 rps: caught in <= 1 min with <= 15 bad requests".into(),
        ten.rollback_rate() == 1.0 && median(&ten.rollback_times) <= Some(60) && median(&ten.bad_served) <= Some(15),
    ));
    targets.push((
        "3x at 200 rps: caught in 100 % of runs".into(),
        weir("3x errors (0.6 %), 200 rps").rollback_rate() == 1.0,
    ));
    let healthy = weir("A/A healthy, 200 rps");
    targets.push((
        "healthy at 200 rps: promoted in <= 10 min".into(),
        median(&healthy.promotion_times) <= Some(600),
    ));
    if !only.is_empty() {
        // Some scenarios were left out: the targets would judge empty cells.
        return;
    }
    println!("\nTargets for weir's judge:");
    for (what, ok) in &targets {
        println!("  [{}] {what}", if *ok { "met" } else { "MISSED" });
    }
    if !smoke {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/judges.svg");
        match std::fs::write(path, plot(&results)) {
            Ok(()) => println!("\nplot written to benches/judges.svg"),
            Err(e) => eprintln!("could not write {path}: {e}"),
        }
    }
}

/// Bars of median bad requests served before rollback (log scale), per bad scenario.
fn plot(results: &[(&Scenario, usize, Cell)]) -> String {
    let bad: Vec<&Scenario> = SCENARIOS.iter().filter(|s| !s.healthy).collect();
    let colors = ["#1b9e77", "#d95f02", "#7570b3"];
    let (w, row, left) = (1000.0, 54.0, 370.0);
    let h = 70.0 + row * bad.len() as f64;
    let scale = |v: f64| (w - left - 40.0) * (1.0 + v).log10() / 4.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="14">Median bad requests served by the canary before rollback (log scale; shorter is better)</text>
"#
    );
    for (i, s) in bad.iter().enumerate() {
        let y = 40.0 + row * i as f64;
        let _ = writeln!(svg, r#"<text x="10" y="{}">{}</text>"#, y + 22.0, s.name);
        for (j, color) in colors.iter().enumerate() {
            let cell = results
                .iter()
                .find(|(sc, jj, _)| sc.name == s.name && *jj == j)
                .map(|(_, _, c)| c);
            let v = cell.and_then(|c| median(&c.bad_served)).unwrap_or(0) as f64;
            let caught = cell.map(|c| c.rollback_rate()).unwrap_or(0.0);
            let label = if caught == 0.0 {
                "never rolled back: promoted".to_string()
            } else {
                format!("{v} ({:.0} % caught)", caught * 100.0)
            };
            let yy = y + 14.0 * j as f64;
            let _ = writeln!(
                svg,
                r#"<rect x="{left}" y="{yy}" width="{:.1}" height="12" fill="{}"/><text x="{:.1}" y="{}">{label}</text>"#,
                scale(v).max(1.0),
                color,
                left + scale(v).max(1.0) + 4.0,
                yy + 10.0,
            );
        }
    }
    for (j, name) in JUDGES.iter().enumerate() {
        let x = left + 170.0 * j as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{name}</text>"#,
            h - 20.0,
            colors[j],
            x + 16.0,
            h - 10.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}
