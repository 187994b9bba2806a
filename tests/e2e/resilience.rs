//! weir under failure: a controller killed mid-release, Prometheus down and back, a
//! Rollout deleted mid-canary, a GitOps sync that rewrites the weight, seeded chaos, a
//! deletion that cannot read.

use super::*;

pub(crate) async fn controller_killed_mid_rollout_resumes(
    env: &Env,
    f: &Failures,
    controller: &Arc<Mutex<Controller>>,
    gates: &Gates,
) -> Result<(), String> {
    let s = Scenario::start(env, f, "e2e-sigkill", &env.provider).await?;
    notify_inbox(env, &s.ns).await?;
    s.bump("nginxdemos/hello:2.0").await;
    s.until_weight(25).await?;
    // The kill must land after Started was told: a kill between the status write and
    // the delivery loses it by design (at most once), and that is not what this tests.
    wait_told(gates, &s.ns, "Started", Duration::from_secs(30)).await?;
    controller.lock().unwrap().kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = controller.lock().unwrap().start();
    restarted.map_err(|e| format!("restart controller: {e}"))?;
    s.expect_promoted().await?;
    s.expect_weights(&[0, 10, 25, 50, 100, 0]).await;
    s.expect_no_request_met_no_pods();
    // Started before the kill, Promoted after the restart: each told once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let told = gates.notifications(&s.ns);
    s.expect(
        told == ["Started", "Promoted"],
        format!("notifications across the SIGKILL: {told:?}"),
    );
    Ok(())
}

pub(crate) async fn prometheus_outage_never_promotes_blind(
    env: &Env,
    f: &Failures,
    prometheus: &Mutex<LocalPrometheus>,
) -> Result<(), String> {
    let s = Scenario::start(env, f, "e2e-blind", "blind").await?;
    s.bump("nginxdemos/hello:2.0").await;
    s.until_weight(25).await?;
    prometheus.lock().unwrap().stop();
    let status = s.expect_rolled_back().await?;
    let reason = status.rollback.map(|r| r.reason).unwrap_or_default();
    s.expect(
        reason.contains("progressDeadline") && reason.contains("Prometheus"),
        format!("rollback reason: {reason}"),
    );
    let w = s.weights().await;
    s.expect(!w.contains(&100), format!("promoted while blind: weights {w:?}"));
    Ok(())
}

pub(crate) async fn prometheus_back_in_time_resumes_the_rollout(
    env: &Env,
    f: &Failures,
    prometheus: &Mutex<LocalPrometheus>,
) -> Result<(), String> {
    let s = Scenario::start(env, f, "e2e-blip", "blip").await?;
    s.bump("nginxdemos/hello:2.0").await;
    s.until_weight(25).await?;
    prometheus.lock().unwrap().stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarted = prometheus.lock().unwrap().restart();
    restarted.map_err(|e| format!("{}: restart Prometheus: {e}", s.ns))?;
    s.expect_promoted().await?;
    Ok(())
}

/// Deleting a Rollout mid-canary leaves a plain working setup: all traffic on stable
/// before the canary goes, no request to a destination without ready pods, the
/// Deployment no longer held (its pending template rolls out), the canary removed.
pub(crate) async fn rollout_deleted_mid_canary_leaves_a_plain_setup(env: &Env, f: &Failures) -> Result<(), String> {
    rollout_deleted_mid_canary_leaves_a_plain_setup_on(env, f, Layout::Istio).await
}

pub(crate) async fn rollout_deleted_mid_canary_leaves_a_plain_setup_on(
    env: &Env,
    f: &Failures,
    layout: Layout,
) -> Result<(), String> {
    let s = Scenario::start_on(env, f, &layout.namespace("delete"), &env.provider, layout).await?;
    let ns = s.ns.as_str();
    s.bump("nginxdemos/hello:2.0").await;
    s.until_weight(25).await?;
    let rollouts = Api::<Rollout>::namespaced(env.client.clone(), ns);
    let deleted = rollouts.delete("backend", &Default::default()).await;
    deleted.map_err(|e| format!("{ns}: delete: {e}"))?;
    let start = Instant::now();
    while rollouts.get_opt("backend").await.map_err(|e| e.to_string())?.is_some() {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!("{ns}: the Rollout is still there 30 s after its deletion"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let w = s.weights().await;
    s.expect(w.last() == Some(&0), format!("weights after deletion {w:?}"));
    let target = s.deployment("backend").await.unwrap_or_default();
    s.expect(
        target.spec.paused != Some(true),
        "the Deployment is still paused after the Rollout went",
    );
    let managers: Vec<String> = target
        .metadata
        .managed_fields
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    s.expect(
        !managers.iter().any(|m| m == "weir"),
        format!("weir still owns fields of the Deployment: {managers:?}"),
    );
    let start = Instant::now();
    while s.deployment("backend-canary").await.is_some() {
        if start.elapsed() > Duration::from_secs(30) {
            s.expect(false, "the canary Deployment was not garbage-collected");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.expect_no_request_met_no_pods();
    Ok(())
}

/// A GitOps sync that puts the VirtualService's weights back to what Git says (all on
/// stable) mid-canary: weir, watching the VirtualService, writes the canary's weight
/// again at once (printed), and the rollout goes on to promotion.
pub(crate) async fn a_synced_weight_is_repaired_at_once(env: &Env, f: &Failures) -> Result<(), String> {
    a_synced_weight_is_repaired_at_once_on(env, f, Layout::Istio).await
}

pub(crate) async fn a_synced_weight_is_repaired_at_once_on(
    env: &Env,
    f: &Failures,
    layout: Layout,
) -> Result<(), String> {
    let s = Scenario::start_on(env, f, &layout.namespace("drift"), &env.provider, layout).await?;
    let ns = s.ns.as_str();
    s.bump("nginxdemos/hello:2.0").await;
    s.until_weight(25).await?;
    let (ar, canary_at) = layout.weight_at();
    let stable_at = canary_at.replace("/1/weight", "/0/weight");
    let sync = json!([
        {"op": "replace", "path": stable_at, "value": 100},
        {"op": "replace", "path": canary_at, "value": 0},
    ]);
    let patch: json_patch::Patch = serde_json::from_value(sync).map_err(|e| e.to_string())?;
    let synced = Instant::now();
    let route = Api::<DynamicObject>::namespaced_with(env.client.clone(), ns, &ar);
    route
        .patch("backend", &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(|e| format!("{ns}: sync: {e}"))?;
    let repaired = loop {
        let vs = route.get("backend").await.map_err(|e| e.to_string())?;
        let w = vs.data.pointer(canary_at).and_then(|v| v.as_u64());
        if w.is_some_and(|w| w > 0) {
            break synced.elapsed();
        }
        if synced.elapsed() > Duration::from_secs(10) {
            s.expect(false, "the synced weight was not repaired within 10 s");
            break synced.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!(
        "drift ({layout:?}): a weight rewritten by a sync was repaired {} ms later (10 ms polling)",
        repaired.as_millis()
    );
    s.expect_promoted().await?;
    s.expect_no_request_met_no_pods();
    Ok(())
}

/// Twelve releases at once, good and bad, half through a VirtualService and half through
/// an HTTPRoute, while weir is SIGKILLed at seeded random instants (ten times) and
/// kube-apiserver is restarted once: every Rollout must end as it would have, and no
/// request may meet a destination without ready pods.
#[test]
pub(crate) fn chaos() {
    const RELEASES: usize = 12;
    const KILLS: usize = 10;
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let mut bed = Bed::start(11).await;
        let env = bed.env();
        let namespaces: Vec<String> = (0..RELEASES).map(|i| format!("chaos-{i}")).collect();
        // Every third release is bad: 30 % of its requests fail.
        let image = |i: usize| match i % 3 {
            2 => "nginxdemos/hello:2.0-crash",
            _ => "nginxdemos/hello:2.0",
        };
        // Half the releases route through an HTTPRoute, half through a VirtualService.
        let layout = |i: usize| if i.is_multiple_of(2) { Layout::Istio } else { Layout::GatewayApi };
        let setups = namespaces.iter().enumerate().map(|(i, ns)| setup_on(&env, ns, &env.provider, layout(i)));
        let setups = futures::future::join_all(setups).await;
        let baselines: Vec<u64> = match setups.into_iter().collect::<Result<Vec<_>, _>>() {
            Ok(s) => s.into_iter().map(|(_, before)| before).collect(),
            Err(e) => return bed.report(vec![e], &namespaces).await,
        };
        // The suite's 2 s drain, shorter than the mesh's missed pushes (testcluster/mesh.yaml:
        // one in ten arrives with the 4 s resync) and than its watches' relist after the
        // API server restarts: the canary's pods stay until the mesh confirms weight 0.
        for (i, ns) in namespaces.iter().enumerate() {
            bump(&env.client, ns, image(i)).await;
        }
        let started = Instant::now();
        let mut chaos = Chaos(0x5eed_cafe);
        for kill in 0..KILLS {
            tokio::time::sleep(Duration::from_millis(500 + chaos.below(2500))).await;
            bed.controller.lock().unwrap().kill();
            if kill == KILLS / 2 {
                bed.cluster.restart_apiserver().await.expect("kube-apiserver restarts");
            }
            tokio::time::sleep(Duration::from_millis(200 + chaos.below(1300))).await;
            bed.controller.lock().unwrap().start().expect("restart weir");
        }
        let chaos_for = started.elapsed();
        let mut errors = vec![];
        for (i, ns) in namespaces.iter().enumerate() {
            let want = if i % 3 == 2 { Phase::RolledBack } else { Phase::Succeeded };
            let limit = Instant::now() + Duration::from_secs(180);
            let mut phase = None;
            while Instant::now() < limit {
                phase = phase_of(&env.client, ns).await;
                if matches!(phase, Some(Phase::Succeeded | Phase::RolledBack)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            if phase.as_ref() != Some(&want) {
                errors.push(format!("{ns} ({}): ended {phase:?}, expected {want:?}", image(i)));
            }
        }
        // The last drains end scaleDownDelay after the mesh confirmed; then count.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let mut no_ready_total = 0;
        for (ns, before) in namespaces.iter().zip(&baselines) {
            let no_ready = env.mesh.lock().unwrap().no_ready_pods(ns) - before;
            no_ready_total += no_ready;
            if no_ready > 0 {
                errors.push(format!("{ns}: {no_ready} requests met a destination without ready pods"));
            }
        }
        eprintln!(
            "chaos: {RELEASES} releases, {KILLS} SIGKILLs of weir and 1 kube-apiserver restart in {chaos_for:?}; all ended in {:?}; {no_ready_total} requests to a destination without ready pods",
            started.elapsed()
        );
        bed.report(errors, &namespaces).await;
    });
}

/// A Rollout deleted mid-canary while weir cannot read: weir's `get` on DestinationRules is
/// taken from its ClusterRole (its watches keep working), so the deletion's fresh read
/// fails. The finalizer stays, traffic stays where it was (no weight on nothing), the
/// status says why; once the verb is back, the deletion completes as usual.
#[test]
pub(crate) fn a_deletion_that_cannot_read_keeps_its_finalizer_until_it_can() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let bed = Bed::start_with(31, "", Identity::ServiceAccount).await;
        let env = bed.env();
        let failures: Failures = Arc::default();
        let result = deletion_waits_for_a_read(&env, &failures).await;
        let mut errors: Vec<String> = result.err().into_iter().collect();
        errors.extend(failures.lock().unwrap().iter().cloned());
        bed.report(errors, &["e2e-delete-blind".to_string()]).await;
    });
}

pub(crate) async fn deletion_waits_for_a_read(env: &Env, f: &Failures) -> Result<(), String> {
    let ns = "e2e-delete-blind";
    let s = Scenario::start(env, f, ns, &env.provider).await?;
    s.bump("nginxdemos/hello:2.0").await;
    s.until_weight(25).await?;
    let verbs = set_weir_verbs(&env.client, "destinationrules", &["list", "watch"]).await?;
    // The RBAC authorizer learns of the change from its watch.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rollouts = Api::<Rollout>::namespaced(env.client.clone(), ns);
    rollouts
        .delete("backend", &Default::default())
        .await
        .map_err(|e| format!("{ns}: delete: {e}"))?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let held = rollouts.get_opt("backend").await.map_err(|e| e.to_string())?;
    let message = held.as_ref().and_then(|r| r.status.as_ref()).map(|s| s.message.clone());
    check(
        f,
        message.as_deref().is_some_and(|m| m.contains("keeps its finalizer")),
        format!(
            "{ns}: while weir cannot read, the Rollout {}",
            match &message {
                Some(m) => format!("says {m:?}"),
                None => "is gone".into(),
            }
        ),
    );
    let during = s.weights_now();
    check(
        f,
        deployment(&env.client, ns, "backend-canary").await.is_some() || during.last() == Some(&0),
        format!("{ns}: the canary went while its traffic ({during:?}) was not taken off"),
    );
    let restored: Vec<&str> = verbs.iter().map(String::as_str).collect();
    set_weir_verbs(&env.client, "destinationrules", &restored).await?;
    let start = Instant::now();
    while rollouts.get_opt("backend").await.map_err(|e| e.to_string())?.is_some() {
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "{ns}: the Rollout is still there 60 s after weir could read again"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "deletion: held {} s while weir could not read, released {} ms after it could",
        8,
        start.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let w = s.weights_now();
    check(f, w.last() == Some(&0), format!("{ns}: weights after deletion {w:?}"));
    s.expect_no_request_met_no_pods();
    Ok(())
}
