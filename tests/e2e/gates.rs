//! Gates a release passes: webhooks (smoke test, confirmation, post-rollout, rollback) and
//! release windows, with notifications and the morning report.

use super::*;

/// A smoke test that answers slowly lets traffic in only once it said yes; a
/// confirmation that says no holds the passed last step (asked again each interval)
/// until it says yes; post-rollout hears the outcome; a smoke test that never answers
/// rolls the next release back with no traffic sent to it.
pub(crate) async fn webhook_gates_hold_and_roll_back(env: &Env, f: &Failures, gates: &Gates) -> Result<(), String> {
    let s = Scenario::start(env, f, "e2e-gates", &env.provider).await?;
    let webhooks = |smoke: &str, timeout: &str| {
        let url = |path: &str| format!("{}/{path}", gates.base);
        json!({"spec": {"webhooks": [
            {"name": "smoke", "type": "pre-rollout", "url": url(smoke), "timeout": timeout, "retries": 0},
            {"name": "release-manager", "type": "confirm-promotion", "url": url("confirm")},
            {"name": "tell-ci", "type": "post-rollout", "url": url("post")},
        ]}})
    };
    s.patch_spec(webhooks("slow-yes", "5s"), "add webhooks").await?;
    s.bump("nginxdemos/hello:2.0").await;
    gates.wait_calls("slow-yes", 1, Duration::from_secs(30)).await?;
    let at_smoke = s.weights_now();
    s.expect(
        at_smoke == [0],
        format!("traffic before the smoke test said yes: {at_smoke:?}"),
    );
    s.until_weight(100).await?;
    // Said no, held, asked again one interval (4 s) later.
    gates.wait_calls("confirm", 2, Duration::from_secs(30)).await?;
    let held = s.rollout().await.status.unwrap_or_default();
    s.expect(
        held.phase == Phase::Progressing && held.canary_weight == 100,
        format!(
            "not held at the last step after a no: {:?} {}",
            held.phase, held.message
        ),
    );
    let said = webhook_answer(&env.client, &s.ns, "release-manager").await;
    s.expect(said.is_some(), "the confirmation is not in status");
    gates.open.store(true, std::sync::atomic::Ordering::SeqCst);
    s.expect_promoted().await?;
    gates.wait_calls("post", 1, Duration::from_secs(30)).await?;
    let post = gates.calls("post");
    s.expect(
        post[0]["outcome"] == "Promoted",
        format!("post-rollout heard {}", post[0]),
    );
    s.expect_weights(&[0, 10, 25, 50, 100, 0]).await;
    // The next release: its smoke test never answers; rolled back with no traffic.
    s.patch_spec(webhooks("never", "2s"), "change webhooks").await?;
    s.bump("nginxdemos/hello:3.0").await;
    let status = s.until_phase(&[Phase::RolledBack], Duration::from_secs(60)).await?;
    let reason = status.rollback.map(|rb| rb.reason).unwrap_or_default();
    s.expect(
        reason.contains("webhook smoke (pre-rollout) did not answer: no answer within 2s"),
        format!("rollback reason {reason:?}"),
    );
    let w = s.weights().await;
    s.expect(
        w == [0, 10, 25, 50, 100, 0],
        format!("the silent smoke test let traffic in: {w:?}"),
    );
    s.expect_no_request_met_no_pods();
    Ok(())
}

/// A night: a bump inside a freeze waits (status says until when, the window condition
/// is False, one Waiting notification); the freeze lifted, the canary is promoted
/// (Started and Promoted told once each); `kubectl wait --for=condition=Promoted` and
/// `weir history` / `weir report` tell the morning what happened.
pub(crate) async fn a_night_with_a_window_a_report_and_conditions(
    env: &Env,
    f: &Failures,
    gates: &Gates,
) -> Result<(), String> {
    let s = Scenario::start(env, f, "e2e-night", &env.provider).await?;
    let ns = s.ns.as_str();
    notify_inbox(env, ns).await?;
    let berlin = jiff::Zoned::now()
        .in_tz("Europe/Berlin")
        .map_err(|e| e.to_string())?
        .date();
    let (from, to) = (
        berlin.yesterday().map_err(|e| e.to_string())?,
        berlin.tomorrow().map_err(|e| e.to_string())?,
    );
    let freeze = json!({"spec": {"releaseWindows": {"timeZone": "Europe/Berlin", "freeze": [format!("{from}/{to}")]}}});
    s.patch_spec(freeze, "freeze").await?;
    s.bump("nginxdemos/hello:2.0").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let waiting = s.rollout().await.status.unwrap_or_default();
    let window = waiting
        .condition(weir::vocabulary::ConditionType::WithinReleaseWindow)
        .map(|c| c.status.clone());
    s.expect(
        waiting.message.contains("outside the release windows") && window.as_deref() == Some("False"),
        format!("a bump in a freeze does not wait: {} ({window:?})", waiting.message),
    );
    s.expect(s.weights_now() == [0], "a canary started in a freeze");
    let lift = json!({"spec": {"releaseWindows": null}});
    Api::<Rollout>::namespaced(env.client.clone(), ns)
        .patch("backend", &PatchParams::default(), &Patch::Merge(lift))
        .await
        .map_err(|e| format!("{ns}: lift the freeze: {e}"))?;
    let kubectl = env.bin.join("kubectl");
    let wait = [
        "wait",
        "--for=condition=Promoted",
        "rollout/backend",
        "-n",
        ns,
        "--timeout=120s",
    ];
    run_as_admin(env, &kubectl, &wait).await?;
    let weir = Path::new(env!("CARGO_BIN_EXE_weir"));
    let history = run_as_admin(env, weir, &["history", "backend", "-n", ns]).await?;
    s.expect(
        history.contains("Promoted") && history.contains("nginxdemos/hello:2.0"),
        format!("weir history says:\n{history}"),
    );
    let report = run_as_admin(env, weir, &["report", "--since", "1h", "-A", "--output", "json"]).await?;
    s.expect(
        report.contains(&format!("\"{ns}\"")) && report.contains("Promoted"),
        format!("weir report misses the night's release:\n{report}"),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let told = gates.notifications(ns);
    s.expect(
        told == ["Waiting", "Started", "Promoted"],
        format!("notifications: {told:?}"),
    );
    s.expect_no_request_met_no_pods();
    Ok(())
}
