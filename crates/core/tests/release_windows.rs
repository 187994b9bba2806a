//! Release windows through the engine, on a simulated clock: a canary that may not start
//! yet, a step that passes after its window closed, a bad canary rolled back while it
//! waits, a daylight-saving change.

mod support;

use std::time::Duration;
use weir_core::vocabulary::ConditionType;

use support::*;
use weir_core::spec::ReleaseWindows;
use weir_core::status::Phase;

fn hours(h: u64) -> Duration {
    Duration::from_secs(3600 * h)
}

fn at(text: &str) -> jiff::Timestamp {
    text.parse().unwrap()
}

fn sim_with(windows: ReleaseWindows, now: &str) -> Sim {
    let mut spec = spec("");
    spec.release_windows = Some(windows);
    let mut sim = Sim::new(&spec);
    sim.now = at(now);
    sim
}

fn window_condition(sim: &Sim) -> Option<String> {
    sim.status
        .condition(ConditionType::WithinReleaseWindow)
        .map(|c| c.status.clone())
}

/// The night clocks go forward in Berlin (2027-03-28, 02:00 CET -> 03:00 CEST), a canary
/// bumped the afternoon before waits for "daily 02:30-05:00": 02:30 never shows on the
/// clock that night, so it starts at 03:00 CEST, 01:00 UTC.
#[test]
fn a_canary_waits_for_its_start_window_across_a_daylight_saving_change() {
    let windows = ReleaseWindows {
        time_zone: Some("Europe/Berlin".into()),
        start: vec!["daily 02:30-05:00".into()],
        ..Default::default()
    };
    let mut sim = sim_with(windows, "2027-03-27T15:00:00Z");
    sim.bump(NEW);
    sim.run_until(Duration::from_secs(10), |s| s.now >= at("2027-03-27T15:00:05Z"));
    assert!(sim.canary.as_ref().is_none_or(|c| c.pods.desired == 0), "no canary yet");
    assert_eq!(sim.weight, 0);
    assert!(
        sim.status.message.contains("revision rev-new waits to start")
            && sim.status.message.contains("opens Sun 2027-03-28 03:00 Europe/Berlin"),
        "{}",
        sim.status.message
    );
    assert_eq!(window_condition(&sim).as_deref(), Some("False"));
    sim.run_until(hours(12), |s| s.canary.as_ref().is_some_and(|c| c.pods.desired > 0));
    assert_eq!(
        sim.now,
        at("2027-03-28T01:00:00Z"),
        "woken exactly when the window opened"
    );
    let waiting = sim.event_reasons().iter().filter(|r| **r == "WaitingForWindow").count();
    assert_eq!(waiting, 1, "one Event when the wait began, not one per look");
    sim.run_until(hours(1), phase_is(Phase::Succeeded));
    assert_eq!(window_condition(&sim).as_deref(), Some("True"));
}

/// The advance window closes while step 1 is analysed: the step passes after 05:00,
/// holds at 10 % through the day (far past the 2-minute progress deadline, which does
/// not run while a passed step waits) and goes on at 01:00 the next night.
#[test]
fn a_step_that_passes_after_its_window_closed_waits_without_a_deadline() {
    let windows = ReleaseWindows {
        advance: vec!["daily 01:00-05:00".into()],
        ..Default::default()
    };
    let mut sim = sim_with(windows, "2026-12-01T04:59:30Z");
    sim.bump(NEW);
    sim.run_until(hours(1), |s| {
        s.status.analysis.as_ref().is_some_and(|a| a.passed_at.is_some())
    });
    assert!(sim.now >= at("2026-12-01T05:00:00Z"));
    assert_eq!(sim.weight, 10);
    assert!(
        sim.status
            .message
            .contains("step 1/4 passed: outside the release windows to advance")
    );
    let queries_before = sim.queries.len();
    sim.run_until(hours(24), |s| s.weight > 10 || s.status.phase == Phase::RolledBack);
    assert_eq!(sim.weight, 25, "{}", sim.status.message);
    assert_eq!(sim.now, at("2026-12-02T01:00:00Z"));
    assert!(
        sim.queries.len() > queries_before + 1000,
        "analysis went on while it waited"
    );
    // Later steps are inside the window: no more waiting tonight.
    sim.run_until(hours(1), phase_is(Phase::Succeeded));
    assert!(sim.now < at("2026-12-02T02:00:00Z"));
}

/// Waiting is not a free pass: a canary that turns bad while its passed step waits for
/// the window is rolled back at once, at any hour.
#[test]
fn a_canary_that_turns_bad_while_it_waits_is_rolled_back_at_once() {
    let windows = ReleaseWindows {
        promote: vec!["Mon-Thu 01:00-05:00".into()],
        freeze: vec!["2026-12-21/2027-01-03".into()],
        ..Default::default()
    };
    // Friday: steps run, promotion waits for Monday night.
    let mut sim = sim_with(windows, "2026-12-04T10:00:00Z");
    sim.bump(NEW);
    sim.run_until(hours(1), |s| {
        s.weight == 100 && s.status.analysis.as_ref().is_some_and(|a| a.passed_at.is_some())
    });
    assert!(
        sim.status.message.contains("opens Mon 2026-12-07 01:00 UTC"),
        "{}",
        sim.status.message
    );
    sim.run_until(hours(20), |s| s.now >= at("2026-12-05T03:00:00Z"));
    sim.metrics = Metrics::Traffic {
        rps: 200.0,
        canary: BROKEN,
    };
    let turned_bad = sim.now;
    sim.run_until(hours(1), phase_is(Phase::RolledBack));
    assert!(sim.now.duration_since(turned_bad) <= jiff::SignedDuration::from_secs(30));
    assert_eq!(sim.weight, 0);
}
