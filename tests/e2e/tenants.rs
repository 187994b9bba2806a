//! No tenant can slow another: a provider that never answers, one hostile namespace beside
//! twenty healthy releases, weir with only the RBAC `config/` grants it.

use super::*;
use crate::releases::{bad_canary_is_rolled_back, healthy_canary_is_promoted};
use crate::resilience::rollout_deleted_mid_canary_leaves_a_plain_setup;

/// A metric provider that accepts connections and never answers, used by 50 Rollouts
/// under analysis at once, delays no other Rollout: a healthy release on another
/// provider is promoted beside them about as fast as alone (both printed).
#[test]
pub(crate) fn a_provider_that_never_answers_delays_no_one_else() {
    const STUCK: usize = 50;
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let (dead_address, holder) = silent_endpoint().await;
        let line = format!("  - {{name: dead, address: '{dead_address}', timeout: 5s}}\n");
        let bed = Bed::start_with(13, &line, Identity::Admin).await;
        let env = bed.env();
        let mut errors = vec![];
        let alone = promotion_time(&env, "iso-alone").await;
        let namespaces: Vec<String> = (0..STUCK).map(|i| format!("iso-dead-{i}")).collect();
        let setups = futures::future::join_all(namespaces.iter().map(|ns| setup(&env, ns, "dead"))).await;
        if let Some(Err(e)) = setups.into_iter().find(Result::is_err) {
            errors.push(e);
        }
        for ns in &namespaces {
            // They must keep waiting on the dead provider for the whole measurement.
            let patch = json!({"spec": {"progressDeadline": "10m"}});
            Api::<Rollout>::namespaced(env.client.clone(), ns)
                .patch("backend", &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(|e| e.to_string())
                .unwrap_or_else(|e| panic!("{ns}: {e}"));
            bump(&env.client, ns, "nginxdemos/hello:2.0").await;
        }
        // Wait until the 50 are under analysis, their looks hanging on the dead provider.
        let start = Instant::now();
        loop {
            let mut analysing = 0;
            for ns in &namespaces {
                let r = rollout(&env.client, ns).await;
                if r.status.is_some_and(|s| s.current_step.is_some()) {
                    analysing += 1;
                }
            }
            if analysing == STUCK || start.elapsed() > Duration::from_secs(60) {
                eprintln!("isolation: {analysing} of {STUCK} Rollouts hold on the dead provider");
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let beside = promotion_time(&env, "iso-beside").await;
        match (&alone, &beside) {
            (Ok(a), Ok(b)) => {
                eprintln!(
                    "isolation: a healthy release promoted in {:.1} s alone, {:.1} s beside {STUCK} Rollouts on a provider that never answers ({:.2}x)",
                    a.as_secs_f64(),
                    b.as_secs_f64(),
                    b.as_secs_f64() / a.as_secs_f64()
                );
                // A generous bound on a shared machine: the 50 must not hold the
                // controller's workers (they would add 50 x 15 s of waiting).
                if *b > *a * 2 + Duration::from_secs(10) {
                    errors.push(format!("beside the dead provider's Rollouts: {b:?}, alone: {a:?}"));
                }
            }
            _ => errors.extend([alone.err(), beside.err()].into_iter().flatten()),
        }
        holder.abort();
        let mut shown: Vec<String> = vec!["iso-alone".into(), "iso-beside".into()];
        shown.extend(namespaces.into_iter().take(2));
        bed.report(errors, &shown).await;
    });
}

/// One hostile namespace beside 20 healthy releases (issue 23): its Rollout asks 16
/// rollback webhooks that accept and never answer at the shortest interval (1 s, 30 s
/// timeout, 5 retries), reads a provider that never answers (its whole 5-s timeout each
/// look), and floods the shared receiver (a new revision every second, each a Started
/// notification). The 20 healthy releases, each with a pre-rollout gate and the same
/// receiver, are timed alone and then beside it: their median promotion time, their
/// gates answered, their notifications delivered, weir's memory — all printed.
#[test]
pub(crate) fn one_hostile_namespace_does_not_slow_twenty_healthy_releases() {
    const HEALTHY: usize = 20;
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let (dead_address, holder) = silent_endpoint().await;
        let line = format!("  - {{name: slow, address: '{dead_address}', timeout: 5s}}\n");
        let bed = Bed::start_with(29, &line, Identity::Admin).await;
        let env = bed.env();
        let mut errors = vec![];
        let healthy: Vec<String> = (0..HEALTHY).map(|i| format!("fair-{i}")).collect();
        let gate = format!("{}/smoke", bed.gates.base);
        let prepared = futures::future::join_all(healthy.iter().map(|ns| {
            let (env, gate) = (&env, gate.clone());
            async move {
                setup(env, ns, &env.provider).await?;
                let spec = json!({"spec": {"notify": ["inbox"], "webhooks": [
                    {"name": "smoke", "type": "pre-rollout", "url": gate, "timeout": "5s", "retries": 0}]}});
                patch_spec(&env.client, ns, spec, "gate and receiver").await
            }
        }))
        .await;
        errors.extend(prepared.into_iter().filter_map(Result::err));
        let alone = promotion_times(&env, &healthy, "nginxdemos/hello:2.0").await;
        // The hostile namespace.
        let hostile = "hostile";
        let never = format!("{}/never", bed.gates.base);
        let hooks: Vec<serde_json::Value> = (0..16)
            .map(|i| json!({"name": format!("kill-{i}"), "type": "rollback", "url": never, "timeout": "30s", "retries": 5}))
            .collect();
        let spec = json!({"spec": {"notify": ["inbox"], "progressDeadline": "10m", "webhooks": hooks,
            "analysis": {"interval": "1s", "tick": "1s", "provider": "slow"}}});
        let hostile_ready = match setup(&env, hostile, &env.provider).await {
            Ok(_) => patch_spec(&env.client, hostile, spec, "hostile spec").await,
            Err(e) => Err(e),
        };
        errors.extend(hostile_ready.err());
        let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flood = {
            let (client, flooding) = (env.client.clone(), flooding.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while flooding.load(std::sync::atomic::Ordering::SeqCst) {
                    i += 1;
                    bump(&client, hostile, &format!("nginxdemos/hello:9.{i}")).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                i
            })
        };
        tokio::time::sleep(Duration::from_secs(10)).await;
        let calls_before = bed.gates.calls("smoke").len();
        let beside = promotion_times(&env, &healthy, "nginxdemos/hello:3.0").await;
        flooding.store(false, std::sync::atomic::Ordering::SeqCst);
        let revisions = flood.await.unwrap_or_default();
        let pid = bed.controller.lock().unwrap().process.as_ref().map(|p| p.pid());
        let (rss, peak) = pid.map(memory_mib).unwrap_or_default();
        let never_calls = bed.gates.calls("never").len();
        match (alone, beside) {
            (Ok(alone), Ok(beside)) => {
                let (a, b) = (median(alone), median(beside));
                let ratio = b.as_secs_f64() / a.as_secs_f64();
                eprintln!(
                    "tenancy: {HEALTHY} healthy releases promoted in {:.1} s median alone, {:.1} s beside the hostile namespace ({ratio:.2}x); hostile: {revisions} revisions, {never_calls} calls to never-answering rollback hooks; weir {rss:.1} MiB resident, {peak:.1} MiB peak",
                    a.as_secs_f64(),
                    b.as_secs_f64()
                );
                // Issue 23's goal is 10 %; on this shared 2-core machine the bound has room
                // for its noise. The figure is printed and quoted in the README.
                if ratio > 1.25 {
                    errors.push(format!("beside the hostile namespace: {b:?} median, alone: {a:?} ({ratio:.2}x)"));
                }
            }
            (alone, beside) => errors.extend([alone.err(), beside.err()].into_iter().flatten()),
        }
        let gates_answered = bed.gates.calls("smoke").len() - calls_before;
        if gates_answered < HEALTHY {
            errors.push(format!("{gates_answered} of {HEALTHY} pre-rollout gates called beside the hostile namespace"));
        }
        for ns in &healthy {
            if let Err(e) = wait_told(&bed.gates, ns, "Promoted", Duration::from_secs(30)).await {
                errors.push(e);
            }
            let promoted = bed.gates.notifications(ns).iter().filter(|k| *k == "Promoted").count();
            if promoted < 2 {
                errors.push(format!("{ns}: told Promoted {promoted} times, not 2"));
            }
        }
        if peak > 150.0 {
            errors.push(format!("weir's memory peaked at {peak:.1} MiB (bound: 150 MiB)"));
        }
        holder.abort();
        let mut shown = vec![hostile.to_string()];
        shown.extend(healthy.into_iter().take(2));
        bed.report(errors, &shown).await;
    });
}

/// weir as its own ServiceAccount, with exactly the RBAC of `config/`: a release is
/// promoted, a bad one rolled back, a Rollout deleted mid-canary handed back.
#[test]
pub(crate) fn with_only_the_rbac_in_config() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let bed = Bed::start_with(17, "", Identity::ServiceAccount).await;
        let env = bed.env();
        let failures: Failures = Arc::default();
        let results = tokio::join!(
            healthy_canary_is_promoted(&env, &failures),
            bad_canary_is_rolled_back(&env, &failures, "bad", "request-success-rate"),
            rollout_deleted_mid_canary_leaves_a_plain_setup(&env, &failures),
        );
        let mut errors: Vec<String> = [results.0, results.1, results.2]
            .into_iter()
            .filter_map(Result::err)
            .collect();
        errors.extend(failures.lock().unwrap().iter().cloned());
        let namespaces = ["e2e-healthy", "e2e-bad", "e2e-delete"].map(String::from).to_vec();
        bed.report(errors, &namespaces).await;
    });
}

/// weir for one namespace, as its own ServiceAccount with exactly `config/namespaced`'s
/// RBAC (a Role there, no ClusterRole): a release in that namespace is promoted, and a
/// Rollout in another namespace is left alone.
#[test]
pub(crate) fn with_only_the_namespaced_rbac_in_config() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let bed = Bed::start_with(19, "", Identity::NamespacedServiceAccount("e2e-healthy")).await;
        let env = bed.env();
        let failures: Failures = Arc::default();
        let elsewhere = "e2e-elsewhere";
        let mut errors = vec![];
        if let Err(e) = devcluster::apply_yaml(&env.client, &app(elsewhere, &env.provider, "backend")).await {
            errors.push(format!("{elsewhere}: {e}"));
        }
        if let Err(e) = healthy_canary_is_promoted(&env, &failures).await {
            errors.push(e);
        }
        let untouched = Api::<Rollout>::namespaced(env.client.clone(), elsewhere)
            .get("backend")
            .await
            .map(|r| r.status.is_none() && r.metadata.finalizers.is_none());
        if !matches!(untouched, Ok(true)) {
            errors.push(format!(
                "{elsewhere}: weir touched a Rollout outside its namespace: {untouched:?}"
            ));
        }
        errors.extend(failures.lock().unwrap().iter().cloned());
        bed.report(errors, &["e2e-healthy".into(), elsewhere.into()]).await;
    });
}
