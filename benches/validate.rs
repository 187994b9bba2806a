//! `weir validate` on hostile 1 MiB inputs, in a release build: each kind of input the
//! reader must refuse or read quickly (deep flow and block nesting, quotes in comments,
//! alias fan-out, many documents, one huge scalar, a wide flat map), timed five times;
//! the table shows the median and the worst against the 0.5 s bound, and the ratio to a
//! real Rollout (examples/dev/40-rollout.yaml) measured in the same run.
//!
//! `cargo bench --bench validate`

use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const BOUND: Duration = Duration::from_millis(500);

fn fill(head: &str, unit: &str, tail: &str) -> String {
    let n = (MIB - head.len() - tail.len()) / unit.len().max(1);
    format!("{head}{}{tail}", unit.repeat(n))
}

fn inputs() -> Vec<(&'static str, String)> {
    let rollout = include_str!("../examples/dev/40-rollout.yaml").to_string();
    let half = MIB / 2 - 64;
    vec![
        ("a real Rollout", rollout),
        (
            "deep flow nesting",
            format!("spec: {}{}", "[".repeat(half), "]".repeat(half)),
        ),
        (
            "quote in a comment, then nesting",
            format!("# it's\nspec: {}{}", "{a: ".repeat(half / 4), "}".repeat(half / 4)),
        ),
        (
            "deep block nesting",
            fill(
                "",
                "",
                &(0..700).map(|i| format!("{}k:\n", " ".repeat(i))).collect::<String>(),
            ),
        ),
        ("alias fan-out", {
            let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x]\n");
            for i in 1..40 {
                s.push_str(&format!(
                    "a{i}: &a{i} [{}]\n",
                    vec![format!("*a{}", i - 1); 8].join(", ")
                ));
            }
            s
        }),
        (
            "many documents",
            fill("", "---\nkind: Rollout\nspec: {steps: []}\n", ""),
        ),
        ("one huge scalar", fill("kind: Rollout\nspec: \"", "x", "\"\n")),
        ("a wide flat map", {
            let keys: String = (0..40_000).map(|i| format!("k{i}: {i}\n")).collect();
            format!(
                "kind: Rollout\nspec:\n{}",
                keys.lines().map(|l| format!("  {l}\n")).collect::<String>()
            )
        }),
    ]
}

fn main() {
    // `cargo bench` (optimised, `--bench`) holds the 0.5 s bound. `cargo test` runs this
    // unoptimised beside other builds as a smoke run: it must end, and fails only past
    // ten times the bound (a timing on a loaded debug build is not a measurement).
    let bound = match std::env::args().any(|a| a == "--bench") {
        true => BOUND,
        false => BOUND * 10,
    };
    println!(
        "| input | bytes | median | worst | within {:.1} s | vs a real Rollout |",
        bound.as_secs_f64()
    );
    println!("|---|---:|---:|---:|:---:|---:|");
    let mut baseline = None;
    let mut all_within = true;
    for (name, text) in inputs() {
        let mut times: Vec<Duration> = (0..5)
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(weir::cli::validate_bytes(text.as_bytes()));
                started.elapsed()
            })
            .collect();
        times.sort();
        let (median, worst) = (times[2], times[4]);
        let base = *baseline.get_or_insert(median);
        all_within &= worst < bound;
        println!(
            "| {name} | {} | {:.2} ms | {:.2} ms | {} | {:.2}x |",
            text.len(),
            median.as_secs_f64() * 1e3,
            worst.as_secs_f64() * 1e3,
            if worst < bound { "yes" } else { "NO" },
            median.as_secs_f64() / base.as_secs_f64()
        );
    }
    if !all_within {
        std::process::exit(1);
    }
}
