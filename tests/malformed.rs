//! The malformed-Rollout corpus (`tests/malformed/*.yaml`): wrong types, injection
//! attempts in names and templates, huge values, deep nesting, duplicate keys, alias
//! bombs, non-UTF-8. Each file says on its first line what its refusal must name
//! (`# expect: ...`); `weir validate` must refuse it with that, quickly, in little memory.

use std::path::Path;
use std::time::{Duration, Instant};

/// The process's peak resident memory so far, in KiB (Linux).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn every_malformed_rollout_is_refused_naming_its_field_quickly_and_in_little_memory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 30, "the corpus holds {} files", files.len());
    let before = peak_rss_kib();
    let mut failures = vec![];
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
        let expect = String::from_utf8_lossy(first)
            .trim_start_matches("# expect:")
            .trim()
            .to_string();
        let timed = || {
            let started = Instant::now();
            let results = weir::cli::validate_bytes(&bytes);
            (results, started.elapsed())
        };
        let (results, mut took) = timed();
        // A guard against hangs, not a benchmark: on a busy machine the best of three
        // tries is what the file costs.
        // A debug build (make test) spends ~0.5 s on the alias bomb alone.
        let limit = Duration::from_millis(if cfg!(debug_assertions) { 2000 } else { 500 });
        for _ in 0..2 {
            if took > limit {
                took = took.min(timed().1);
            }
        }
        let problems: Vec<&String> = results.iter().flatten().collect();
        let name = file.file_name().unwrap().to_string_lossy();
        if problems.is_empty() {
            failures.push(format!("{name}: accepted"));
        } else if !problems.iter().any(|p| p.contains(&expect)) {
            failures.push(format!("{name}: expected {expect:?} in {problems:?}"));
        }
        if took > limit {
            failures.push(format!("{name}: took {took:?}"));
        }
    }
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(grown < 32 * 1024, "peak memory grew by {grown} KiB over the corpus");
}
