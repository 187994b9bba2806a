//! Webhook gates through the engine, on a simulated clock: a smoke test before any
//! traffic, confirmations that hold a passed step until someone says yes (`weir
//! promote` too), a rollback webhook, post-rollout, and what "no" and "no answer" mean.

mod support;

use std::collections::VecDeque;

use support::*;
use weir_core::hooks::Reply;
use weir_core::plan;
use weir_core::status::{Phase, WebhookRecord};

/// The fixture Rollout with `webhooks` (YAML flow list items).
fn sim_with(webhooks: &[&str]) -> Sim {
    let mut spec = spec("");
    let yaml = format!("[{}]", webhooks.join(", "));
    spec.webhooks = serde_saphyr::from_str(&yaml).expect("webhooks parse");
    Sim::new(&spec)
}

fn replies(sim: &mut Sim, hook: &str, answers: &[Reply]) {
    sim.hook_replies
        .insert(hook.into(), answers.iter().copied().collect::<VecDeque<_>>());
}

fn record<'a>(sim: &'a Sim, hook: &str) -> &'a WebhookRecord {
    sim.status
        .webhooks
        .iter()
        .find(|r| r.name == hook)
        .unwrap_or_else(|| panic!("no record of {hook}: {:?}", sim.status.webhooks))
}

fn calls_of(sim: &Sim, hook: &str) -> usize {
    sim.hook_calls.iter().filter(|c| c.key.hook == hook).count()
}

const SMOKE: &str = "{name: smoke, type: pre-rollout, url: 'http://smoke.apps.svc/'}";

#[test]
fn a_smoke_test_says_yes_before_any_traffic_reaches_the_canary() {
    let mut sim = sim_with(&[SMOKE]);
    replies(&mut sim, "smoke", &[Reply::Yes]);
    sim.bump(NEW);
    sim.run_until(minutes(5), |s| !s.hook_calls.is_empty());
    assert_eq!(sim.weight, 0, "asked before any traffic");
    assert!(sim.canary_ready_pods() > 0, "asked once the canary pods are ready");
    let call = &sim.hook_calls[0];
    assert_eq!((call.key.revision.as_str(), call.key.step), (NEW, 1));
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
    assert_eq!(sim.weights_written, vec![10, 25, 50, 100, 0]);
    assert_eq!(calls_of(&sim, "smoke"), 1, "asked once per release");
    assert_eq!(record(&sim, "smoke").answer, "Yes");
}

#[test]
fn a_smoke_test_that_says_no_rolls_back_before_any_traffic() {
    let mut sim = sim_with(&[SMOKE]);
    replies(&mut sim, "smoke", &[Reply::No]);
    sim.bump(NEW);
    sim.run_until(minutes(5), phase_is(Phase::RolledBack));
    assert!(sim.weights_written.iter().all(|w| *w == 0), "{:?}", sim.weights_written);
    let rb = sim.status.rollback.as_ref().unwrap();
    assert!(
        rb.reason.contains("webhook smoke (pre-rollout) said no"),
        "{}",
        rb.reason
    );
    assert_eq!(record(&sim, "smoke").answer, "No");
    sim.run_until(minutes(5), |s| !s.status.history.is_empty());
    let history = &sim.status.history[0];
    assert!(history.evidence.contains("webhook smoke"), "{}", history.evidence);
}

#[test]
fn a_smoke_test_that_never_answers_rolls_back_at_the_progress_deadline() {
    let mut sim = sim_with(&[SMOKE]);
    sim.bump(NEW);
    sim.run_until(minutes(1), |s| !s.hook_calls.is_empty());
    assert!(
        sim.status
            .message
            .contains("waiting for webhook smoke (pre-rollout) to answer"),
        "{}",
        sim.status.message
    );
    assert_eq!(record(&sim, "smoke").answer, "Asked");
    let asked = sim.now;
    sim.run_until(minutes(5), phase_is(Phase::RolledBack));
    let waited = sim.now.duration_since(asked).as_secs();
    assert!(
        (110..=125).contains(&waited),
        "rolled back {waited}s after the call (deadline 2m)"
    );
    assert!(sim.weights_written.iter().all(|w| *w == 0));
    let reason = &sim.status.rollback.as_ref().unwrap().reason;
    assert!(reason.contains("did not say yes within progressDeadline"), "{reason}");
    assert_eq!(calls_of(&sim, "smoke"), 1, "one call: it is still in flight");
}

#[test]
fn a_smoke_test_on_hold_is_asked_again_every_interval_until_it_says_yes() {
    let mut sim = sim_with(&["{name: smoke, type: pre-rollout, url: 'http://smoke.apps.svc/', onFailure: hold}"]);
    replies(&mut sim, "smoke", &[Reply::NoAnswer, Reply::Yes]);
    sim.bump(NEW);
    sim.run_until(minutes(1), |s| s.status.message.contains("did not answer"));
    assert!(sim.status.message.contains("asked again at"), "{}", sim.status.message);
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
    assert_eq!(calls_of(&sim, "smoke"), 2);
    assert_eq!(
        (record(&sim, "smoke").answer.as_str(), record(&sim, "smoke").round),
        ("Yes", 1)
    );
    assert_eq!(sim.event_reasons().iter().filter(|r| **r == "WebhookHolds").count(), 1);
}

#[test]
fn confirm_promotion_holds_the_passed_last_step_until_it_says_yes() {
    let mut sim = sim_with(&["{name: release-manager, type: confirm-promotion, url: 'http://gate.apps.svc/'}"]);
    replies(&mut sim, "release-manager", &[Reply::No, Reply::No, Reply::Yes]);
    sim.bump(NEW);
    sim.run_until(minutes(30), |s| s.status.message.contains("said no"));
    assert_eq!(sim.weight, 100, "the last step passed and holds its weight");
    assert_eq!(sim.status.phase, Phase::Progressing);
    let asked_while_held = sim.queries.len();
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
    assert!(
        sim.queries.len() > asked_while_held,
        "the analysis went on while it held"
    );
    assert_eq!(calls_of(&sim, "release-manager"), 3);
    let reasons = sim.event_reasons();
    assert_eq!(reasons.iter().filter(|r| **r == "WebhookHolds").count(), 2);
    assert_eq!(reasons.iter().filter(|r| **r == "WaitingForConfirmation").count(), 1);
    assert_eq!(sim.weights_written, vec![10, 25, 50, 100, 0]);
}

#[test]
fn confirm_step_is_asked_after_every_step_but_the_last() {
    let mut sim = sim_with(&["{name: ops, type: confirm-step, url: 'http://gate.apps.svc/'}"]);
    replies(&mut sim, "ops", &[Reply::Yes]);
    sim.bump(NEW);
    sim.run_until(minutes(30), phase_is(Phase::Succeeded));
    let steps: Vec<u32> = sim.hook_calls.iter().map(|c| c.key.step).collect();
    assert_eq!(steps, vec![1, 2, 3]);
}

#[test]
fn weir_promote_says_yes_to_a_confirmation_that_does_not_answer() {
    let mut sim = sim_with(&["{name: ops, type: confirm-step, url: 'http://gate.apps.svc/'}"]);
    sim.bump(NEW);
    sim.run_until(minutes(10), |s| s.status.message.contains("waiting for webhook ops"));
    assert_eq!(sim.weight, 10);
    assert!(
        sim.status.message.contains("`weir promote` says yes too"),
        "{}",
        sim.status.message
    );
    sim.request = Some("promote/1".into());
    sim.run_until(minutes(2), |s| s.weight == 25);
    let r = record(&sim, "ops");
    assert_eq!((r.answer.as_str(), r.step), ("Yes", 1));
    assert!(r.detail.contains("weir promote"), "{}", r.detail);
}

#[test]
fn a_bad_canary_waiting_for_a_confirmation_is_still_rolled_back() {
    let mut sim = sim_with(&["{name: ops, type: confirm-step, url: 'http://gate.apps.svc/'}"]);
    sim.bump(NEW);
    sim.run_until(minutes(10), |s| s.status.message.contains("waiting for webhook ops"));
    sim.metrics = Metrics::Traffic {
        rps: 200.0,
        canary: BROKEN,
    };
    sim.run_until(minutes(5), phase_is(Phase::RolledBack));
    assert_eq!(sim.weights_written, vec![10, 0]);
}

#[test]
fn a_rollback_webhook_that_says_yes_rolls_the_canary_back() {
    let mut sim = sim_with(&["{name: kill-switch, type: rollback, url: 'http://gate.apps.svc/'}"]);
    replies(&mut sim, "kill-switch", &[Reply::No, Reply::No, Reply::Yes]);
    sim.bump(NEW);
    sim.run_until(minutes(10), phase_is(Phase::RolledBack));
    assert_eq!(calls_of(&sim, "kill-switch"), 3, "asked once per interval");
    let reason = &sim.status.rollback.as_ref().unwrap().reason;
    assert!(
        reason.contains("webhook kill-switch (rollback) asked for it"),
        "{reason}"
    );
    // Its noes were recorded once, not at every call.
    let status_writes_in_step = sim.writes.iter().filter(|(a, w)| a.is_empty() && *w > 0).count();
    assert!(status_writes_in_step <= 2, "{status_writes_in_step} status-only writes");
}

#[test]
fn post_rollout_hears_how_the_release_ended_once_and_its_no_changes_nothing() {
    let mut sim = sim_with(&["{name: tell-ci, type: post-rollout, url: 'http://ci.apps.svc/'}"]);
    replies(&mut sim, "tell-ci", &[Reply::No]);
    sim.bump(NEW);
    sim.run_until(minutes(30), |s| !s.hook_calls.is_empty());
    assert_eq!(sim.status.phase, Phase::Succeeded);
    assert_eq!(sim.hook_calls[0].outcome.as_deref(), Some("Promoted"));
    sim.run_until(minutes(30), |s| s.event_reasons().contains(&"WebhookFailed"));
    let until = sim.now + jiff::SignedDuration::from_mins(20);
    sim.run_until(minutes(30), |s| s.now >= until);
    assert_eq!(calls_of(&sim, "tell-ci"), 1);
    assert_eq!(sim.status.phase, Phase::Succeeded);
    assert_eq!(record(&sim, "tell-ci").answer, "No");
}

#[test]
fn webhooks_are_validated_field_by_field() {
    let mut s = spec("");
    s.webhooks = serde_saphyr::from_str(
        "[{name: a, type: pre-rollout, url: 'ftp://x/'},
          {name: a, type: rollback, url: 'http://u:p@x/', onFailure: hold, timeout: 5m, retries: 9}]",
    )
    .unwrap();
    let errors = plan::plan(&s)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    for expected in [
        "spec.webhooks[0].url: \"ftp://x/\" is not an http:// or https:// address",
        "spec.webhooks[1].name: \"a\" appears twice",
        "spec.webhooks[1].url: must not carry credentials",
        "spec.webhooks[1].timeout: must be above 0s and at most 1m",
        "spec.webhooks[1].retries: 9 is above 5",
        "spec.webhooks[1].onFailure: a rollback webhook cannot hold or roll back",
    ] {
        assert!(errors.contains(expected), "{expected:?} not in:\n{errors}");
    }
}
