//! Releases as a user sees them: a healthy canary promoted, bad ones rolled back on each
//! built-in metric, a second bump mid-canary, invalid Rollouts refused or reported, the
//! example application taken over. `end_to_end` runs these and the other capabilities'
//! scenarios at once on one bed.

use super::*;

pub(crate) async fn healthy_canary_is_promoted(env: &Env, f: &Failures) -> Result<(), String> {
    healthy_canary_is_promoted_on(env, f, Layout::Istio).await
}

pub(crate) async fn healthy_canary_is_promoted_on(env: &Env, f: &Failures, layout: Layout) -> Result<(), String> {
    let s = Scenario::start_on(env, f, &layout.namespace("healthy"), &env.provider, layout).await?;
    let before = s.rollout().await.status.unwrap_or_default().stable_revision;
    let bumped = Instant::now();
    s.bump("nginxdemos/hello:2.0").await;
    // Responsiveness, measured by polling every 10 ms (printed, not asserted: numbers
    // on a shared machine belong in a report, not in a pass/fail line).
    let scenario = &s;
    let poll = |what: &'static str| async move {
        let start = Instant::now();
        loop {
            let c = scenario.deployment("backend-canary").await;
            let ok = match what {
                "scaled" => c.as_ref().is_some_and(|c| c.spec.replicas.unwrap_or(0) >= 1),
                _ => c.and_then(|c| c.status).and_then(|s| s.available_replicas).unwrap_or(0) >= 1,
            };
            if ok || start.elapsed() > Duration::from_secs(30) {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let scaled = poll("scaled").await;
    let ready = poll("ready").await;
    s.until_weight(10).await?;
    eprintln!(
        "responsiveness: image bump -> canary scaled up {} ms; canary ready -> first weight written {} ms (10 ms polling)",
        scaled.duration_since(bumped).as_millis(),
        Instant::now().duration_since(ready).as_millis()
    );
    let status = s.expect_promoted().await?;
    s.expect_weights(&[0, 10, 25, 50, 100, 0]).await;
    s.expect(status.stable_revision != before, "stable revision unchanged");
    let target = s.deployment("backend").await.unwrap_or_default();
    let st = target.status.clone().unwrap_or_default();
    s.expect(
        image_of(&target) == "nginxdemos/hello:2.0"
            && st.updated_replicas == Some(4)
            && st.available_replicas == Some(4),
        format!("stable does not run the new template on every replica: {st:?}"),
    );
    s.expect(target.spec.paused == Some(true), "the Deployment is not paused again");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let canary = s.deployment("backend-canary").await.unwrap_or_default();
    let replicas = canary.spec.replicas;
    s.expect(replicas == Some(0), format!("canary not scaled down: {replicas:?}"));
    s.expect_no_request_met_no_pods();
    let (canary_served, _) = env.mesh.lock().unwrap().served(&s.ns, "backend-canary");
    s.expect(
        canary_served > 100,
        format!("the canary served only {canary_served} requests"),
    );
    Ok(())
}

pub(crate) async fn bad_canary_is_rolled_back(env: &Env, f: &Failures, tag: &str, metric: &str) -> Result<(), String> {
    bad_canary_is_rolled_back_on(env, f, tag, metric, Layout::Istio).await
}

pub(crate) async fn bad_canary_is_rolled_back_on(
    env: &Env,
    f: &Failures,
    tag: &str,
    metric: &str,
    layout: Layout,
) -> Result<(), String> {
    let s = Scenario::start_on(env, f, &layout.namespace(tag), &env.provider, layout).await?;
    s.bump(&format!("nginxdemos/hello:2.0-{tag}")).await;
    let status = s.expect_rolled_back().await?;
    let rb = status.rollback.clone().unwrap_or_default();
    s.expect(
        rb.metric.as_deref() == Some(metric),
        format!("rolled back on {:?}, expected {metric}: {}", rb.metric, rb.reason),
    );
    let w = s.weights().await;
    let max = w.iter().copied().max().unwrap_or(0);
    s.expect(
        max <= u64::from(rb.weight) && w.last() == Some(&0),
        format!("weights {w:?} vs rollback at {}%", rb.weight),
    );
    s.expect(max < 100, format!("a bad canary reached 100%: {w:?}"));
    let target = s.deployment("backend").await.unwrap_or_default();
    s.expect(
        target.spec.paused == Some(true),
        "the Deployment rolled out the bad template",
    );
    // Stable still serves: its pods are the old ReplicaSet's.
    let (stable_before, _) = env.mesh.lock().unwrap().served(&s.ns, "backend");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (stable_after, _) = env.mesh.lock().unwrap().served(&s.ns, "backend");
    s.expect(
        stable_after > stable_before + 50,
        "stable is not serving after the rollback",
    );
    s.expect_no_request_met_no_pods();
    Ok(())
}

pub(crate) async fn second_bump_restarts_for_the_newest(env: &Env, f: &Failures) -> Result<(), String> {
    let s = Scenario::start(env, f, "e2e-rebump", &env.provider).await?;
    s.bump("nginxdemos/hello:2.0").await;
    s.until_weight(25).await?;
    s.bump("nginxdemos/hello:3.0").await;
    s.expect_promoted().await?;
    let target = s.deployment("backend").await.unwrap_or_default();
    s.expect(
        image_of(&target) == "nginxdemos/hello:3.0",
        format!("stable runs {}", image_of(&target)),
    );
    let w = s.weights().await;
    let restart = w
        .iter()
        .position(|x| *x == 25)
        .map(|i| w[i + 1..].to_vec())
        .unwrap_or_default();
    s.expect(
        restart.first() == Some(&0) && restart.ends_with(&[10, 25, 50, 100, 0]),
        format!("weights {w:?}"),
    );
    s.expect_no_request_met_no_pods();
    Ok(())
}

/// The message of a Rollout once it is InvalidSpec (or whatever it says after 20 s).
pub(crate) async fn invalid_spec_message(env: &Env, ns: &str, name: &str) -> String {
    let start = Instant::now();
    loop {
        let got = Api::<Rollout>::namespaced(env.client.clone(), ns).get(name).await;
        let status = got.ok().and_then(|r| r.status).unwrap_or_default();
        if status.phase == Phase::InvalidSpec || start.elapsed() > Duration::from_secs(20) {
            return status.message;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) async fn invalid_rollouts_are_refused_or_reported(env: &Env, f: &Failures) -> Result<(), String> {
    let ns = "e2e-invalid";
    let text = app(ns, &env.provider, "no-such-vs");
    devcluster::apply_yaml(&env.client, &text)
        .await
        .map_err(|e| format!("{ns}: {e}"))?;
    let r = wait_phase(&env.client, ns, &[Phase::InvalidSpec], Duration::from_secs(30)).await?;
    let message = r.status.unwrap().message;
    check(
        f,
        message == format!("VirtualService {ns}/no-such-vs not found"),
        format!("{ns}: message {message:?}"),
    );
    // The schema's CEL rules: the API server refuses decreasing weights.
    let mut bad: Rollout = rollout(&env.client, ns).await;
    bad.metadata = kube::api::ObjectMeta {
        name: Some("decreasing".into()),
        namespace: Some(ns.into()),
        ..Default::default()
    };
    bad.status = None;
    bad.spec.steps = serde_json::from_value(json!([{"weight": 50}, {"weight": 20}])).unwrap();
    let err = Api::<Rollout>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &bad)
        .await;
    let refused =
        matches!(&err, Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("strictly increasing"));
    check(
        f,
        refused,
        format!("{ns}: decreasing weights were not refused: {err:?}"),
    );
    // targetRef is fixed for a Rollout's life (a transition rule).
    let retarget = json!({"spec": {"targetRef": {"kind": "Deployment", "name": "another"}}});
    let err = Api::<Rollout>::namespaced(env.client.clone(), ns)
        .patch("backend", &PatchParams::default(), &Patch::Merge(retarget))
        .await;
    let refused =
        matches!(&err, Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("targetRef cannot change"));
    check(f, refused, format!("{ns}: a new targetRef was not refused: {err:?}"));
    // A latency bound is a number or a duration. The field is untyped in the schema (no
    // structural type says "number or string"), so the API server takes anything there:
    // a list nested 300 deep must neither break weir's watch of every Rollout (the other
    // scenarios run beside this one) nor be taken; it is InvalidSpec, the field named.
    let mut value = serde_json::to_value(&bad).map_err(|e| e.to_string())?;
    value["metadata"]["name"] = json!("bound-a-list");
    value["spec"]["steps"] = json!([{"weight": 50}]);
    value["spec"]["targetRef"]["name"] = json!("app-bound-a-list");
    value["spec"]["analysis"]["metrics"][1]["max"] = serde_json::Value::Null;
    // Sent as raw bytes: serde's own readers stop at 128 levels.
    let body = serde_json::to_string(&value).map_err(|e| e.to_string())?.replace(
        "\"max\":null",
        &format!("\"max\":{}{}", "[".repeat(300), "]".repeat(300)),
    );
    let request = kube::core::Request::new(format!("/apis/weir.dev/v1alpha1/namespaces/{ns}/rollouts"))
        .create(&PostParams::default(), body.into_bytes())
        .map_err(|e| e.to_string())?;
    env.client
        .request_text(request)
        .await
        .map_err(|e| format!("{ns}: create bound-a-list: {e}"))?;
    let message = invalid_spec_message(env, ns, "bound-a-list").await;
    check(
        f,
        message.starts_with("spec.analysis.metrics[1].max: found a list; expected a number, or a duration"),
        format!("{ns}/bound-a-list: message {message:?}"),
    );
    // A Rollout cannot reach an address or a provider the admin did not declare: an
    // address is not a name, and the API server refuses it (the CRD's name pattern); a
    // name the admin did not declare is weir's to refuse.
    let with_provider = |r: &Rollout, name: &str, provider: &str| {
        let mut r = r.clone();
        r.metadata = kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        };
        r.status = None;
        r.spec.target_ref.name = format!("app-{name}");
        r.spec.analysis.provider = Some(provider.into());
        r
    };
    let template: Rollout = rollout(&env.client, ns).await;
    let address = with_provider(&template, "address", "http://10.0.0.1:9090");
    let err = Api::<Rollout>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &address)
        .await;
    let refused =
        matches!(&err, Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("spec.analysis.provider"));
    check(f, refused, format!("{ns}: a provider address was not refused: {err:?}"));
    let undeclared = with_provider(&template, "undeclared", "team-x");
    Api::<Rollout>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &undeclared)
        .await
        .map_err(|e| format!("{ns}: create undeclared: {e}"))?;
    let message = invalid_spec_message(env, ns, "undeclared").await;
    let expected = "spec.analysis.provider: \"team-x\" is not a metric provider the cluster admin declared";
    check(
        f,
        message.starts_with(expected),
        format!("{ns}/undeclared: message {message:?}"),
    );
    Ok(())
}

/// The files under examples/dev, as a user would apply them: the API server accepts them
/// (the Rollout passes the CRD's CEL rules) and weir takes the Deployment over.
pub(crate) async fn the_example_application_is_taken_over(env: &Env, f: &Failures) -> Result<(), String> {
    let dir = devcluster::repo_dir().join("examples/dev");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        devcluster::apply_yaml(&env.client, &text)
            .await
            .map_err(|e| format!("{}: {e}", file.display()))?;
    }
    let r = wait_phase(
        &env.client,
        "dev",
        &[Phase::Healthy, Phase::InvalidSpec],
        Duration::from_secs(60),
    )
    .await?;
    let status = r.status.unwrap();
    check(
        f,
        status.phase == Phase::Healthy,
        format!("examples/dev: {}", status.message),
    );
    // The status (Healthy) is written first, as the intent; the pause follows it.
    let start = Instant::now();
    let mut paused = false;
    while !paused && start.elapsed() < Duration::from_secs(5) {
        paused = deployment(&env.client, "dev", "backend").await.unwrap().spec.paused == Some(true);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check(f, paused, "examples/dev: backend not paused by weir".into());
    Ok(())
}
