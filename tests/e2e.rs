//! End to end, against a real Kubernetes control plane (built from Go modules, kwok for
//! nodes), a real Prometheus scraping the mesh simulator, and the `weir` binary as the
//! controller. Every scenario runs in its own namespace, all at once against one
//! controller, with steps of a few seconds.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::json;
use weir::api::{Phase, Rollout};
use weir_testkit::devcluster::{self, LocalCluster, LocalPrometheus, Process};
use weir_testkit::meshsim::{self, MeshConfig};

type Failures = Arc<Mutex<Vec<String>>>;

struct Env {
    client: Client,
    /// The metric provider most scenarios name (declared to weir by `Bed`).
    provider: String,
    mesh: Arc<Mutex<meshsim::Telemetry>>,
    /// The admin's kubeconfig and the control plane's binaries (kubectl among them).
    kubeconfig: std::path::PathBuf,
    bin: std::path::PathBuf,
}

/// The example application, made fast: steps of 4 s, looks every second.
fn app(ns: &str, provider: &str, vs_name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}, labels: {{istio-injection: enabled}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: backend, namespace: {ns}}}
spec:
  replicas: 4
  selector: {{matchLabels: {{app: backend, weir.dev/track: stable}}}}
  strategy: {{rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  template:
    metadata: {{labels: {{app: backend, weir.dev/track: stable}}}}
    spec:
      containers: [{{name: backend, image: "nginxdemos/hello:1.0"}}]
---
apiVersion: v1
kind: Service
metadata: {{name: backend, namespace: {ns}}}
spec:
  selector: {{app: backend}}
  ports: [{{name: http, port: 80}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: backend, namespace: {ns}}}
spec:
  host: backend
  subsets:
    - {{name: stable, labels: {{weir.dev/track: stable}}}}
    - {{name: canary, labels: {{weir.dev/track: canary}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: backend, namespace: {ns}}}
spec:
  hosts: [backend]
  http:
    - name: primary
      retries: {{attempts: 2, perTryTimeout: 2s}}
      timeout: 5s
      route:
        - {{destination: {{host: backend, subset: stable}}, weight: 100}}
        - {{destination: {{host: backend, subset: canary}}, weight: 0}}
---
apiVersion: weir.dev/v1alpha1
kind: Rollout
metadata: {{name: backend, namespace: {ns}}}
spec:
  targetRef: {{kind: Deployment, name: backend}}
  trafficRouting:
    istio:
      virtualService: {{name: {vs_name}}}
      destinationRule: {{name: backend, stableSubset: stable, canarySubset: canary}}
  steps: [{{weight: 10}}, {{weight: 25}}, {{weight: 50}}, {{weight: 100}}]
  progressDeadline: 15s
  scaleDownDelay: 2s
  analysis:
    interval: 4s
    tick: 1s
    sequential: {{minDwell: 2s, minRequests: 10}}
    provider: {provider}
    metrics:
      - {{name: request-success-rate, min: 99}}
      - {{name: request-duration, quantile: 0.99, max: 500ms}}
"#
    )
}

fn vs_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "networking.istio.io",
        "v1",
        "VirtualService",
    ));
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// Records every canary weight the VirtualService shows, as it changes.
fn record_weights(client: Client, ns: &str) -> (Arc<Mutex<Vec<u64>>>, tokio::task::JoinHandle<()>) {
    let weights = Arc::new(Mutex::new(vec![]));
    let (w, api) = (weights.clone(), vs_api(&client, ns));
    let task = tokio::spawn(async move {
        loop {
            if let Ok(vs) = api.get("backend").await {
                let weight = vs
                    .data
                    .pointer("/spec/http/0/route/1/weight")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0);
                let mut w = w.lock().unwrap();
                if w.last() != Some(&weight) {
                    w.push(weight);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (weights, task)
}

async fn rollout(client: &Client, ns: &str) -> Rollout {
    Api::<Rollout>::namespaced(client.clone(), ns)
        .get("backend")
        .await
        .expect("get rollout")
}

async fn wait_phase(client: &Client, ns: &str, want: &[Phase], limit: Duration) -> Result<Rollout, String> {
    let start = Instant::now();
    loop {
        let r = rollout(client, ns).await;
        let phase = r.status.as_ref().map(|s| s.phase.clone());
        if phase.as_ref().is_some_and(|p| want.contains(p)) {
            return Ok(r);
        }
        if start.elapsed() > limit {
            return Err(format!("{ns}: not {want:?} within {limit:?}; status {:#?}", r.status));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (at most 2 min) for the release to end, and checks it was promoted.
async fn expect_promoted(env: &Env, f: &Failures, ns: &str, when: &str) -> Result<(), String> {
    let ended = [Phase::Succeeded, Phase::RolledBack];
    let r = wait_phase(&env.client, ns, &ended, Duration::from_secs(120)).await?;
    check(
        f,
        r.status.as_ref().is_some_and(|s| s.phase == Phase::Succeeded),
        format!("{ns}: not promoted {when}"),
    );
    Ok(())
}

async fn wait_weight(weights: &Arc<Mutex<Vec<u64>>>, weight: u64, limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    while weights.lock().unwrap().last() != Some(&weight) {
        if start.elapsed() > limit {
            return Err(format!(
                "weight {weight} not reached within {limit:?}: {:?}",
                weights.lock().unwrap()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn bump(client: &Client, ns: &str, image: &str) {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "backend", "image": image}]}}}});
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch("backend", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .expect("bump the image");
}

async fn deployment(client: &Client, ns: &str, name: &str) -> Option<Deployment> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .expect("get deployment")
}

fn image_of(d: &Deployment) -> String {
    d.spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].image.clone())
        .unwrap_or_default()
}

/// Applies the application and waits until weir has taken it over. Requests that met
/// no ready pod before that (the VirtualService can land before the first pods are
/// ready) are weir's business only from here on: the count is returned as the baseline.
async fn setup(env: &Env, ns: &str, provider: &str) -> Result<(Arc<Mutex<Vec<u64>>>, u64), String> {
    devcluster::apply_yaml(&env.client, &app(ns, provider, "backend"))
        .await
        .map_err(|e| format!("{ns}: apply: {e}"))?;
    wait_phase(&env.client, ns, &[Phase::Healthy], Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let no_ready_before = env.mesh.lock().unwrap().no_ready_pods(ns);
    let (weights, _task) = record_weights(env.client.clone(), ns);
    Ok((weights, no_ready_before))
}

/// Since `before` (the mesh simulator's count when the scenario began), no request of
/// `ns` met a destination without ready pods.
fn check_no_request_met_no_pods(env: &Env, f: &Failures, ns: &str, before: u64) {
    let no_ready = env.mesh.lock().unwrap().no_ready_pods(ns) - before;
    check(
        f,
        no_ready == 0,
        format!("{ns}: {no_ready} requests met a destination without ready pods"),
    );
}

fn check(failures: &Failures, ok: bool, what: String) {
    if !ok {
        failures.lock().unwrap().push(what);
    }
}

async fn healthy_canary_is_promoted(env: &Env, f: &Failures) -> Result<(), String> {
    let ns = "e2e-healthy";
    let (weights, no_ready_before) = setup(env, ns, &env.provider).await?;
    let before = rollout(&env.client, ns).await.status.unwrap().stable_revision;
    let bumped = Instant::now();
    bump(&env.client, ns, "nginxdemos/hello:2.0").await;
    // Responsiveness, measured by polling every 10 ms (printed, not asserted: numbers
    // on a shared machine belong in a report, not in a pass/fail line).
    let poll = |what: &'static str| async move {
        let start = Instant::now();
        loop {
            let c = deployment(&env.client, ns, "backend-canary").await;
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
    wait_weight(&weights, 10, Duration::from_secs(30)).await?;
    eprintln!(
        "responsiveness: image bump -> canary scaled up {} ms; canary ready -> first weight written {} ms (10 ms polling)",
        scaled.duration_since(bumped).as_millis(),
        Instant::now().duration_since(ready).as_millis()
    );
    let r = wait_phase(
        &env.client,
        ns,
        &[Phase::Succeeded, Phase::RolledBack],
        Duration::from_secs(120),
    )
    .await?;
    let status = r.status.unwrap();
    check(
        f,
        status.phase == Phase::Succeeded,
        format!("{ns}: not promoted: {}", status.message),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let w = weights.lock().unwrap().clone();
    check(f, w == vec![0, 10, 25, 50, 100, 0], format!("{ns}: weights went {w:?}"));
    check(
        f,
        status.stable_revision != before,
        format!("{ns}: stable revision unchanged"),
    );
    let target = deployment(&env.client, ns, "backend").await.unwrap();
    let st = target.status.clone().unwrap_or_default();
    check(
        f,
        image_of(&target) == "nginxdemos/hello:2.0"
            && st.updated_replicas == Some(4)
            && st.available_replicas == Some(4),
        format!("{ns}: stable does not run the new template on every replica: {st:?}"),
    );
    check(
        f,
        target.spec.paused == Some(true),
        format!("{ns}: the Deployment is not paused again"),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let canary = deployment(&env.client, ns, "backend-canary").await.unwrap();
    check(
        f,
        canary.spec.replicas == Some(0),
        format!("{ns}: canary not scaled down: {:?}", canary.spec.replicas),
    );
    check_no_request_met_no_pods(env, f, ns, no_ready_before);
    let (canary_served, _) = env.mesh.lock().unwrap().served(ns, "backend-canary");
    check(
        f,
        canary_served > 100,
        format!("{ns}: the canary served only {canary_served} requests"),
    );
    Ok(())
}

async fn bad_canary_is_rolled_back(env: &Env, f: &Failures, tag: &str, metric: &str) -> Result<(), String> {
    let ns = &format!("e2e-{tag}");
    let (weights, no_ready_before) = setup(env, ns, &env.provider).await?;
    bump(&env.client, ns, &format!("nginxdemos/hello:2.0-{tag}")).await;
    let r = wait_phase(
        &env.client,
        ns,
        &[Phase::Succeeded, Phase::RolledBack],
        Duration::from_secs(120),
    )
    .await?;
    let status = r.status.unwrap();
    check(
        f,
        status.phase == Phase::RolledBack,
        format!("{ns}: not rolled back: {}", status.message),
    );
    let rb = status.rollback.clone().unwrap_or_default();
    check(
        f,
        rb.metric.as_deref() == Some(metric),
        format!("{ns}: rolled back on {:?}, expected {metric}: {}", rb.metric, rb.reason),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let w = weights.lock().unwrap().clone();
    let max = w.iter().copied().max().unwrap_or(0);
    check(
        f,
        max <= u64::from(rb.weight) && w.last() == Some(&0),
        format!("{ns}: weights {w:?} vs rollback at {}%", rb.weight),
    );
    check(f, max < 100, format!("{ns}: a bad canary reached 100%: {w:?}"));
    let target = deployment(&env.client, ns, "backend").await.unwrap();
    check(
        f,
        target.spec.paused == Some(true),
        format!("{ns}: the Deployment rolled out the bad template"),
    );
    // Stable still serves: its pods are the old ReplicaSet's.
    let (stable_before, _) = env.mesh.lock().unwrap().served(ns, "backend");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (stable_after, _) = env.mesh.lock().unwrap().served(ns, "backend");
    check(
        f,
        stable_after > stable_before + 50,
        format!("{ns}: stable is not serving after the rollback"),
    );
    check_no_request_met_no_pods(env, f, ns, no_ready_before);
    Ok(())
}

async fn controller_killed_mid_rollout_resumes(
    env: &Env,
    f: &Failures,
    controller: &Arc<Mutex<Controller>>,
    gates: &Gates,
) -> Result<(), String> {
    let ns = "e2e-sigkill";
    let (weights, no_ready_before) = setup(env, ns, &env.provider).await?;
    notify_inbox(env, ns).await?;
    bump(&env.client, ns, "nginxdemos/hello:2.0").await;
    wait_weight(&weights, 25, Duration::from_secs(60)).await?;
    // The kill must land after Started was told: a kill between the status write and
    // the delivery loses it by design (at most once), and that is not what this tests.
    wait_told(gates, ns, "Started", Duration::from_secs(30)).await?;
    controller.lock().unwrap().kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    controller
        .lock()
        .unwrap()
        .start()
        .map_err(|e| format!("restart controller: {e}"))?;
    let r = wait_phase(
        &env.client,
        ns,
        &[Phase::Succeeded, Phase::RolledBack],
        Duration::from_secs(120),
    )
    .await?;
    check(
        f,
        r.status.as_ref().unwrap().phase == Phase::Succeeded,
        format!("{ns}: {}", r.status.unwrap().message),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let w = weights.lock().unwrap().clone();
    check(
        f,
        w == vec![0, 10, 25, 50, 100, 0],
        format!("{ns}: after SIGKILL the weights went {w:?}"),
    );
    check_no_request_met_no_pods(env, f, ns, no_ready_before);
    // Started before the kill, Promoted after the restart: each told once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let told = gates.notifications(ns);
    check(
        f,
        told == ["Started", "Promoted"],
        format!("{ns}: notifications across the SIGKILL: {told:?}"),
    );
    Ok(())
}

async fn prometheus_outage_never_promotes_blind(
    env: &Env,
    f: &Failures,
    prometheus: &Mutex<LocalPrometheus>,
) -> Result<(), String> {
    let ns = "e2e-blind";
    let (weights, _) = setup(env, ns, "blind").await?;
    bump(&env.client, ns, "nginxdemos/hello:2.0").await;
    wait_weight(&weights, 25, Duration::from_secs(60)).await?;
    prometheus.lock().unwrap().stop();
    let r = wait_phase(
        &env.client,
        ns,
        &[Phase::Succeeded, Phase::RolledBack],
        Duration::from_secs(120),
    )
    .await?;
    let status = r.status.unwrap();
    check(
        f,
        status.phase == Phase::RolledBack,
        format!("{ns}: promoted while blind: {}", status.message),
    );
    let reason = status.rollback.map(|r| r.reason).unwrap_or_default();
    check(
        f,
        reason.contains("progressDeadline") && reason.contains("Prometheus"),
        format!("{ns}: rollback reason: {reason}"),
    );
    let w = weights.lock().unwrap().clone();
    check(f, !w.contains(&100), format!("{ns}: weights {w:?}"));
    Ok(())
}

async fn prometheus_back_in_time_resumes_the_rollout(
    env: &Env,
    f: &Failures,
    prometheus: &Mutex<LocalPrometheus>,
) -> Result<(), String> {
    let ns = "e2e-blip";
    let (weights, _) = setup(env, ns, "blip").await?;
    bump(&env.client, ns, "nginxdemos/hello:2.0").await;
    wait_weight(&weights, 25, Duration::from_secs(60)).await?;
    prometheus.lock().unwrap().stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    prometheus
        .lock()
        .unwrap()
        .restart()
        .map_err(|e| format!("{ns}: restart Prometheus: {e}"))?;
    let r = wait_phase(
        &env.client,
        ns,
        &[Phase::Succeeded, Phase::RolledBack],
        Duration::from_secs(120),
    )
    .await?;
    let status = r.status.unwrap();
    check(
        f,
        status.phase == Phase::Succeeded,
        format!("{ns}: did not resume after the outage: {}", status.message),
    );
    Ok(())
}

async fn second_bump_restarts_for_the_newest(env: &Env, f: &Failures) -> Result<(), String> {
    let ns = "e2e-rebump";
    let (weights, no_ready_before) = setup(env, ns, &env.provider).await?;
    bump(&env.client, ns, "nginxdemos/hello:2.0").await;
    wait_weight(&weights, 25, Duration::from_secs(60)).await?;
    bump(&env.client, ns, "nginxdemos/hello:3.0").await;
    let r = wait_phase(
        &env.client,
        ns,
        &[Phase::Succeeded, Phase::RolledBack],
        Duration::from_secs(120),
    )
    .await?;
    check(
        f,
        r.status.as_ref().unwrap().phase == Phase::Succeeded,
        format!("{ns}: {}", r.status.unwrap().message),
    );
    let target = deployment(&env.client, ns, "backend").await.unwrap();
    check(
        f,
        image_of(&target) == "nginxdemos/hello:3.0",
        format!("{ns}: stable runs {}", image_of(&target)),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let w = weights.lock().unwrap().clone();
    let restart = w
        .iter()
        .position(|x| *x == 25)
        .map(|i| w[i + 1..].to_vec())
        .unwrap_or_default();
    check(
        f,
        restart.first() == Some(&0) && restart.ends_with(&[10, 25, 50, 100, 0]),
        format!("{ns}: weights {w:?}"),
    );
    check_no_request_met_no_pods(env, f, ns, no_ready_before);
    Ok(())
}

/// The message of a Rollout once it is InvalidSpec (or whatever it says after 20 s).
async fn invalid_spec_message(env: &Env, ns: &str, name: &str) -> String {
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

async fn invalid_rollouts_are_refused_or_reported(env: &Env, f: &Failures) -> Result<(), String> {
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
async fn the_example_application_is_taken_over(env: &Env, f: &Failures) -> Result<(), String> {
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

/// Deleting a Rollout mid-canary leaves a plain working setup: all traffic on stable
/// before the canary goes, no request to a destination without ready pods, the
/// Deployment no longer held (its pending template rolls out), the canary removed.
async fn rollout_deleted_mid_canary_leaves_a_plain_setup(env: &Env, f: &Failures) -> Result<(), String> {
    let ns = "e2e-delete";
    let (weights, no_ready_before) = setup(env, ns, &env.provider).await?;
    bump(&env.client, ns, "nginxdemos/hello:2.0").await;
    wait_weight(&weights, 25, Duration::from_secs(60)).await?;
    Api::<Rollout>::namespaced(env.client.clone(), ns)
        .delete("backend", &Default::default())
        .await
        .map_err(|e| format!("{ns}: delete: {e}"))?;
    let start = Instant::now();
    while Api::<Rollout>::namespaced(env.client.clone(), ns)
        .get_opt("backend")
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!("{ns}: the Rollout is still there 30 s after its deletion"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let w = weights.lock().unwrap().clone();
    check(f, w.last() == Some(&0), format!("{ns}: weights after deletion {w:?}"));
    let target = deployment(&env.client, ns, "backend").await.unwrap();
    check(
        f,
        target.spec.paused != Some(true),
        format!("{ns}: the Deployment is still paused after the Rollout went"),
    );
    let managers: Vec<String> = target
        .metadata
        .managed_fields
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    check(
        f,
        !managers.iter().any(|m| m == "weir"),
        format!("{ns}: weir still owns fields of the Deployment: {managers:?}"),
    );
    let start = Instant::now();
    while deployment(&env.client, ns, "backend-canary").await.is_some() {
        if start.elapsed() > Duration::from_secs(30) {
            check(
                f,
                false,
                format!("{ns}: the canary Deployment was not garbage-collected"),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    check_no_request_met_no_pods(env, f, ns, no_ready_before);
    Ok(())
}

/// A GitOps sync that puts the VirtualService's weights back to what Git says (all on
/// stable) mid-canary: weir, watching the VirtualService, writes the canary's weight
/// again at once (printed), and the rollout goes on to promotion.
async fn a_synced_weight_is_repaired_at_once(env: &Env, f: &Failures) -> Result<(), String> {
    let ns = "e2e-drift";
    let (weights, no_ready_before) = setup(env, ns, &env.provider).await?;
    bump(&env.client, ns, "nginxdemos/hello:2.0").await;
    wait_weight(&weights, 25, Duration::from_secs(60)).await?;
    let sync = json!([
        {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 100},
        {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 0},
    ]);
    let patch: json_patch::Patch = serde_json::from_value(sync).map_err(|e| e.to_string())?;
    let synced = Instant::now();
    vs_api(&env.client, ns)
        .patch("backend", &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(|e| format!("{ns}: sync: {e}"))?;
    let repaired = loop {
        let vs = vs_api(&env.client, ns)
            .get("backend")
            .await
            .map_err(|e| e.to_string())?;
        let w = vs.data.pointer("/spec/http/0/route/1/weight").and_then(|v| v.as_u64());
        if w.is_some_and(|w| w > 0) {
            break synced.elapsed();
        }
        if synced.elapsed() > Duration::from_secs(10) {
            check(
                f,
                false,
                format!("{ns}: the synced weight was not repaired within 10 s"),
            );
            break synced.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!(
        "drift: a weight rewritten by a sync was repaired {} ms later (10 ms polling)",
        repaired.as_millis()
    );
    expect_promoted(env, f, ns, "after the sync").await?;
    check_no_request_met_no_pods(env, f, ns, no_ready_before);
    Ok(())
}

/// A webhook service on loopback, as a team would run one: `/slow-yes` says yes after
/// 2 s, `/confirm` says no until a person opens it, `/post` takes the post-rollout
/// report, `/never` never answers. It keeps every request.
#[derive(Clone, Default)]
struct Gates {
    base: String,
    open: Arc<std::sync::atomic::AtomicBool>,
    got: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

impl Gates {
    async fn start() -> Gates {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("gate port");
        let gates = Gates {
            base: format!("http://{}", listener.local_addr().unwrap()),
            ..Gates::default()
        };
        let app = axum::Router::new()
            .route("/{path}", axum::routing::post(Gates::answer))
            .with_state(gates.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        gates
    }

    async fn answer(
        axum::extract::State(gates): axum::extract::State<Gates>,
        axum::extract::Path(path): axum::extract::Path<String>,
        body: axum::body::Bytes,
    ) -> (axum::http::StatusCode, &'static str) {
        use axum::http::StatusCode;
        let value = serde_json::from_slice(&body).unwrap_or_default();
        gates.got.lock().unwrap().push((path.clone(), value));
        match path.as_str() {
            "slow-yes" => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                (StatusCode::OK, "smoke test passed")
            }
            "confirm" if gates.open.load(std::sync::atomic::Ordering::SeqCst) => (StatusCode::OK, "approved"),
            "confirm" => (StatusCode::FORBIDDEN, "not approved yet"),
            "never" => std::future::pending().await,
            _ => (StatusCode::OK, "noted"),
        }
    }

    /// The kinds of the notifications the `inbox` receiver got about namespace `ns`.
    fn notifications(&self, ns: &str) -> Vec<String> {
        let inbox = self.calls("inbox");
        let of_ns = inbox.iter().filter(|n| n["namespace"] == ns);
        of_ns.map(|n| n["kind"].as_str().unwrap_or("?").to_string()).collect()
    }

    fn calls(&self, path: &str) -> Vec<serde_json::Value> {
        let got = self.got.lock().unwrap();
        got.iter().filter(|(p, _)| p == path).map(|(_, v)| v.clone()).collect()
    }

    /// Waits (at most `limit`) until `path` was called `n` times.
    async fn wait_calls(&self, path: &str, n: usize, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        while self.calls(path).len() < n {
            if start.elapsed() > limit {
                return Err(format!(
                    "/{path} called {} times, not {n}, within {limit:?}",
                    self.calls(path).len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

/// Waits (at most `limit`) until the `inbox` receiver was told `kind` about `ns`.
async fn wait_told(gates: &Gates, ns: &str, kind: &str, limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    while !gates.notifications(ns).iter().any(|k| k == kind) {
        if start.elapsed() > limit {
            let told = gates.notifications(ns);
            return Err(format!("{ns}: {kind} not told within {limit:?}; told {told:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Sends the Rollout's notifications to the `inbox` receiver the admin declared.
async fn notify_inbox(env: &Env, ns: &str) -> Result<(), String> {
    patch_spec(&env.client, ns, json!({"spec": {"notify": ["inbox"]}}), "notify").await
}

/// Merges `patch` into the Rollout `backend` and waits until weir has observed it: a
/// bump right after the patch could otherwise be decided on the spec before it (the
/// Deployment and Rollout watches are apart).
async fn patch_spec(client: &Client, ns: &str, patch: serde_json::Value, what: &str) -> Result<(), String> {
    let patched = Api::<Rollout>::namespaced(client.clone(), ns)
        .patch("backend", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(|e| format!("{ns}: {what}: {e}"))?;
    let generation = patched.metadata.generation.unwrap_or(0);
    let start = Instant::now();
    loop {
        let seen = rollout(client, ns).await.status.and_then(|s| s.observed_generation);
        if seen >= Some(generation) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "{ns}: {what}: weir did not observe generation {generation} within 30 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The answer status records for a webhook.
async fn webhook_answer(client: &Client, ns: &str, name: &str) -> Option<String> {
    let status = rollout(client, ns).await.status?;
    status
        .webhooks
        .iter()
        .find(|w| w.name == name)
        .map(|w| w.answer.clone())
}

/// A smoke test that answers slowly lets traffic in only once it said yes; a
/// confirmation that says no holds the passed last step (asked again each interval)
/// until it says yes; post-rollout hears the outcome; a smoke test that never answers
/// rolls the next release back with no traffic sent to it.
async fn webhook_gates_hold_and_roll_back(env: &Env, f: &Failures, gates: &Gates) -> Result<(), String> {
    let ns = "e2e-gates";
    let (weights, no_ready_before) = setup(env, ns, &env.provider).await?;
    let webhooks = |smoke: &str, timeout: &str| {
        let url = |path: &str| format!("{}/{path}", gates.base);
        json!({"spec": {"webhooks": [
            {"name": "smoke", "type": "pre-rollout", "url": url(smoke), "timeout": timeout, "retries": 0},
            {"name": "release-manager", "type": "confirm-promotion", "url": url("confirm")},
            {"name": "tell-ci", "type": "post-rollout", "url": url("post")},
        ]}})
    };
    patch_spec(&env.client, ns, webhooks("slow-yes", "5s"), "add webhooks").await?;
    bump(&env.client, ns, "nginxdemos/hello:2.0").await;
    gates.wait_calls("slow-yes", 1, Duration::from_secs(30)).await?;
    let at_smoke = weights.lock().unwrap().clone();
    check(
        f,
        at_smoke == vec![0],
        format!("{ns}: traffic before the smoke test said yes: {at_smoke:?}"),
    );
    wait_weight(&weights, 100, Duration::from_secs(60)).await?;
    // Said no, held, asked again one interval (4 s) later.
    gates.wait_calls("confirm", 2, Duration::from_secs(30)).await?;
    let held = rollout(&env.client, ns).await.status.unwrap_or_default();
    check(
        f,
        held.phase == Phase::Progressing && held.canary_weight == 100,
        format!(
            "{ns}: not held at the last step after a no: {:?} {}",
            held.phase, held.message
        ),
    );
    let said = webhook_answer(&env.client, ns, "release-manager").await;
    check(f, said.is_some(), format!("{ns}: the confirmation is not in status"));
    gates.open.store(true, std::sync::atomic::Ordering::SeqCst);
    expect_promoted(env, f, ns, "once confirmed").await?;
    gates.wait_calls("post", 1, Duration::from_secs(30)).await?;
    let post = gates.calls("post");
    check(
        f,
        post[0]["outcome"] == "Promoted",
        format!("{ns}: post-rollout heard {}", post[0]),
    );
    let w = weights.lock().unwrap().clone();
    check(f, w == vec![0, 10, 25, 50, 100, 0], format!("{ns}: weights went {w:?}"));
    // The next release: its smoke test never answers; rolled back with no traffic.
    patch_spec(&env.client, ns, webhooks("never", "2s"), "change webhooks").await?;
    bump(&env.client, ns, "nginxdemos/hello:3.0").await;
    let r = wait_phase(&env.client, ns, &[Phase::RolledBack], Duration::from_secs(60)).await?;
    let reason = r
        .status
        .and_then(|s| s.rollback)
        .map(|rb| rb.reason)
        .unwrap_or_default();
    check(
        f,
        reason.contains("webhook smoke (pre-rollout) did not answer: no answer within 2s"),
        format!("{ns}: rollback reason {reason:?}"),
    );
    let w = weights.lock().unwrap().clone();
    check(
        f,
        w == vec![0, 10, 25, 50, 100, 0],
        format!("{ns}: the silent smoke test let traffic in: {w:?}"),
    );
    check_no_request_met_no_pods(env, f, ns, no_ready_before);
    Ok(())
}

/// Runs a command of the control plane's `bin` (or weir itself) as the admin; its stdout.
/// Awaited, not blocking: the other scenarios' tasks share the runtime's threads.
async fn run_as_admin(env: &Env, program: &Path, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .env("KUBECONFIG", &env.kubeconfig)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("{}: {e}", program.display()))?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(format!(
            "{} {args:?}: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

/// A night: a bump inside a freeze waits (status says until when, the window condition
/// is False, one Waiting notification); the freeze lifted, the canary is promoted
/// (Started and Promoted told once each); `kubectl wait --for=condition=Promoted` and
/// `weir history` / `weir report` tell the morning what happened.
async fn a_night_with_a_window_a_report_and_conditions(env: &Env, f: &Failures, gates: &Gates) -> Result<(), String> {
    let ns = "e2e-night";
    let (weights, no_ready_before) = setup(env, ns, &env.provider).await?;
    notify_inbox(env, ns).await?;
    let berlin = jiff::Zoned::now()
        .in_tz("Europe/Berlin")
        .map_err(|e| e.to_string())?
        .date();
    let (from, to) = (
        berlin.yesterday().map_err(|e| e.to_string())?,
        berlin.tomorrow().map_err(|e| e.to_string())?,
    );
    let api = Api::<Rollout>::namespaced(env.client.clone(), ns);
    let freeze = json!({"spec": {"releaseWindows": {"timeZone": "Europe/Berlin", "freeze": [format!("{from}/{to}")]}}});
    patch_spec(&env.client, ns, freeze, "freeze").await?;
    bump(&env.client, ns, "nginxdemos/hello:2.0").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let waiting = rollout(&env.client, ns).await.status.unwrap_or_default();
    let window = waiting
        .condition(weir::vocabulary::ConditionType::WithinReleaseWindow)
        .map(|c| c.status.clone());
    check(
        f,
        waiting.message.contains("outside the release windows") && window.as_deref() == Some("False"),
        format!(
            "{ns}: a bump in a freeze does not wait: {} ({window:?})",
            waiting.message
        ),
    );
    check(
        f,
        *weights.lock().unwrap() == vec![0],
        format!("{ns}: a canary started in a freeze"),
    );
    let lift = json!({"spec": {"releaseWindows": null}});
    api.patch("backend", &PatchParams::default(), &Patch::Merge(lift))
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
    check(
        f,
        history.contains("Promoted") && history.contains("nginxdemos/hello:2.0"),
        format!("{ns}: weir history says:\n{history}"),
    );
    let report = run_as_admin(env, weir, &["report", "--since", "1h", "-A", "--output", "json"]).await?;
    check(
        f,
        report.contains(&format!("\"{ns}\"")) && report.contains("Promoted"),
        format!("{ns}: weir report misses the night's release:\n{report}"),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let told = gates.notifications(ns);
    check(
        f,
        told == ["Waiting", "Started", "Promoted"],
        format!("{ns}: notifications: {told:?}"),
    );
    check_no_request_met_no_pods(env, f, ns, no_ready_before);
    Ok(())
}

/// The `weir` binary as the controller, restartable.
struct Controller {
    process: Option<Process>,
    /// Of its /metrics, /healthz and /readyz.
    port: String,
    kubeconfig: String,
    dir: std::path::PathBuf,
    /// The metric providers file the cluster admin gives weir.
    providers: String,
    /// `--namespace`: the one namespace weir watches, or all.
    namespace: Option<String>,
    /// The admin's webhook allow list and notification receivers.
    webhooks: String,
    notifications: String,
    /// Its log's name (`<name>.log` in `dir`) and arguments of its own.
    name: String,
    extra: Vec<String>,
}

/// Who weir runs as in a test bed.
#[derive(Clone, Copy, PartialEq)]
enum Identity {
    /// The cluster's admin: the suite's default, RBAC not under test.
    Admin,
    /// Its own ServiceAccount with exactly `config/`'s cluster-wide RBAC.
    ServiceAccount,
    /// Its own ServiceAccount with exactly `config/namespaced`'s RBAC, made for this
    /// namespace, and `--namespace` set to it.
    NamespacedServiceAccount(&'static str),
}

impl Controller {
    fn start(&mut self) -> Result<(), weir_testkit::Error> {
        let port = devcluster::free_port()?.to_string();
        self.port = port.clone();
        let args = [
            "controller".to_string(),
            format!("--http-addr=127.0.0.1:{port}"),
            format!("--providers={}", self.providers),
            format!("--webhooks={}", self.webhooks),
            format!("--notifications={}", self.notifications),
        ]
        .into_iter()
        .chain(self.extra.iter().cloned())
        .chain(self.namespace.iter().map(|ns| format!("--namespace={ns}")))
        .collect::<Vec<_>>();
        let env = [("KUBECONFIG", self.kubeconfig.as_str()), ("RUST_LOG", "info,kube=warn")];
        self.process = Some(devcluster::spawn_with_env(
            &self.name,
            Path::new(env!("CARGO_BIN_EXE_weir")),
            &args,
            &self.dir,
            &env,
        )?);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }
}

/// A local cluster with the Istio and weir CRDs, the mesh simulator, a Prometheus
/// scraping it and weir running as the controller.
struct Bed {
    cluster: LocalCluster,
    client: Client,
    mesh: meshsim::Mesh,
    /// Behind the providers `main`, `blind` and `blip` declared to weir (`main` is only
    /// kept running).
    _prometheus: LocalPrometheus,
    blind: Mutex<LocalPrometheus>,
    blip: Mutex<LocalPrometheus>,
    controller: Arc<Mutex<Controller>>,
    /// The webhook service the admin allowed Rollouts to call.
    gates: Gates,
}

impl Bed {
    async fn start(seed: u64) -> Bed {
        Bed::start_with(seed, "", Identity::Admin).await
    }

    /// `extra_providers`: more lines for the providers file.
    async fn start_with(seed: u64, extra_providers: &str, identity: Identity) -> Bed {
        let bin = devcluster::binaries().expect("control-plane binaries (testcluster/build.sh)");
        let cluster = LocalCluster::start(&bin).await.expect("local cluster");
        let client = cluster.client().await.unwrap();
        let repo = devcluster::repo_dir();
        for file in ["testcluster/istio-crds.yaml", "crds/rollout.yaml"] {
            let text = std::fs::read_to_string(repo.join(file)).unwrap();
            devcluster::apply_yaml(&client, &text)
                .await
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        let config =
            MeshConfig::from_yaml(&std::fs::read_to_string(repo.join("testcluster/mesh.yaml")).unwrap()).unwrap();
        let mesh = meshsim::start(client.clone(), config, "127.0.0.1:0".parse().unwrap(), seed)
            .await
            .unwrap();
        let start = || LocalPrometheus::start(&[mesh.addr.to_string()]).expect("Prometheus");
        let (prometheus, blind, blip) = (start(), start(), start());
        let providers = cluster.dir().join("providers.yaml");
        let declare = |name: &str, p: &LocalPrometheus| {
            let default = name == "main";
            format!(
                "  - {{name: {name}, address: '{}', timeout: 1s, default: {default}}}\n",
                p.address
            )
        };
        std::fs::write(
            &providers,
            format!(
                "providers:\n{}{}{}{extra_providers}",
                declare("main", &prometheus),
                declare("blind", &blind),
                declare("blip", &blip)
            ),
        )
        .unwrap();
        let kubeconfig = match identity {
            Identity::Admin => cluster.kubeconfig.display().to_string(),
            _ => service_account_kubeconfig(&cluster, &client, &bin, identity).await,
        };
        let namespace = match identity {
            Identity::NamespacedServiceAccount(ns) => Some(ns.to_string()),
            _ => None,
        };
        let gates = Gates::start().await;
        let webhooks = cluster.dir().join("webhooks.yaml");
        std::fs::write(&webhooks, format!("allowedUrls: [\"{}/\"]\n", gates.base)).unwrap();
        let notifications = cluster.dir().join("notifications.yaml");
        let inbox = format!(
            "receivers:\n  - {{name: inbox, type: webhook, url: '{}/inbox'}}\n",
            gates.base
        );
        std::fs::write(&notifications, inbox).unwrap();
        let controller = Arc::new(Mutex::new(Controller {
            process: None,
            port: String::new(),
            kubeconfig,
            dir: cluster.dir().to_path_buf(),
            providers: providers.display().to_string(),
            namespace,
            webhooks: webhooks.display().to_string(),
            notifications: notifications.display().to_string(),
            name: "weir".into(),
            extra: Vec::new(),
        }));
        controller.lock().unwrap().start().expect("start weir");
        let port = controller.lock().unwrap().port.clone();
        wait_ready(&port).await;
        Bed {
            cluster,
            client,
            mesh,
            _prometheus: prometheus,
            blind: Mutex::new(blind),
            blip: Mutex::new(blip),
            controller,
            gates,
        }
    }

    fn env(&self) -> Env {
        Env {
            client: self.client.clone(),
            provider: "main".into(),
            mesh: self.mesh.telemetry.clone(),
            kubeconfig: self.cluster.kubeconfig.clone(),
            bin: devcluster::binaries().expect("control-plane binaries"),
        }
    }

    /// Fails the test with the failures, weir's log and the Events of `namespaces`.
    async fn report(&self, errors: Vec<String>, namespaces: &[String]) {
        if errors.is_empty() {
            return;
        }
        let log = self
            .controller
            .lock()
            .unwrap()
            .process
            .as_ref()
            .map(|p| p.tail())
            .unwrap_or_default();
        let mut events = BTreeMap::new();
        for ns in namespaces {
            let list = Api::<k8s_openapi::api::events::v1::Event>::namespaced(self.client.clone(), ns)
                .list(&Default::default())
                .await;
            let notes: Vec<String> = list
                .map(|l| {
                    l.items
                        .iter()
                        .map(|e| format!("{:?}: {:?}", e.reason, e.note))
                        .collect()
                })
                .unwrap_or_default();
            events.insert(ns.clone(), notes);
        }
        // The whole log outlives the cluster's temporary directory, for a post-mortem.
        let kept = devcluster::repo_dir().join("target/e2e-failure-weir.log");
        let _ = std::fs::copy(self.cluster.dir().join("weir.log"), &kept);
        panic!(
            "{} failure(s):\n{}\n\nweir log (tail; whole in {}):\n{log}\n\nEvents: {events:#?}",
            errors.len(),
            errors.join("\n"),
            kept.display()
        );
    }
}

/// What `kubectl apply -k` would install from a kustomization under `config/`, but for
/// the controller's Deployment (the tests run weir as a process). The namespaced set is
/// made for `namespace`, as its kustomization tells a user to.
fn config_objects(bin: &Path, kustomization: &str, namespace: Option<&str>) -> String {
    let out = std::process::Command::new(bin.join("kubectl"))
        .args([
            "kustomize",
            &devcluster::repo_dir().join(kustomization).display().to_string(),
        ])
        .output()
        .expect("kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {kustomization}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut text = String::from_utf8(out.stdout).unwrap();
    if let Some(ns) = namespace {
        text = text
            .replace("namespace: apps\n", &format!("namespace: {ns}\n"))
            .replace("--namespace=apps", &format!("--namespace={ns}"));
    }
    text.split("\n---\n")
        .filter(|doc| !doc.contains("\nkind: Deployment\n"))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Applies `config/`'s namespace, ServiceAccount and RBAC (cluster-wide or namespaced, as
/// `identity` says), asks the TokenRequest API for a token of weir's ServiceAccount, and
/// writes a kubeconfig that uses it.
async fn service_account_kubeconfig(cluster: &LocalCluster, client: &Client, bin: &Path, identity: Identity) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let objects = match identity {
        Identity::NamespacedServiceAccount(ns) => {
            devcluster::apply_yaml(
                client,
                &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"),
            )
            .await
            .expect("the watched namespace");
            let text = config_objects(bin, "config/namespaced", Some(ns));
            assert!(
                !text.contains("kind: ClusterRole"),
                "config/namespaced grants cluster-wide: {text}"
            );
            text
        }
        _ => config_objects(bin, "config", None),
    };
    devcluster::apply_yaml(client, &objects)
        .await
        .unwrap_or_else(|e| panic!("config/: {e}"));
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(client.clone(), "weir-system")
        .create_token_request("weir", &PostParams::default(), &request)
        .await
        .expect("a token for weir's ServiceAccount")
        .status
        .and_then(|s| s.token)
        .expect("a token");
    let path = cluster.dir().join("weir-sa.kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: \"{}\", insecure-skip-tls-verify: true}}\n\
             users:\n- name: weir\n  user: {{token: {token}}}\ncontexts:\n- name: local\n  context: {{cluster: local, user: weir}}\ncurrent-context: local\n",
            cluster.server
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// weir answers /readyz with 200 once its Rollout watch has synced (503 before), and
/// /healthz with 200 while its loop runs.
async fn wait_ready(port: &str) {
    let get = |path: &str| {
        let url = format!("http://127.0.0.1:{port}{path}");
        async move { reqwest::get(url).await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    let start = Instant::now();
    while get("/readyz").await != 200 {
        assert!(start.elapsed() < Duration::from_secs(30), "weir not ready within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get("/healthz").await, 200);
}

/// The two tests each run a cluster; one at a time on a small machine.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn end_to_end() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Children are started from this thread, which lives for the whole test.
    runtime().block_on(async {
        let bed = Bed::start(7).await;
        let (blind, blip) = (&bed.blind, &bed.blip);
        let env = bed.env();
        let controller = bed.controller.clone();
        let failures: Failures = Arc::default();
        let started = Instant::now();
        let results = tokio::join!(
            healthy_canary_is_promoted(&env, &failures),
            bad_canary_is_rolled_back(&env, &failures, "bad", "request-success-rate"),
            bad_canary_is_rolled_back(&env, &failures, "slow", "request-duration"),
            controller_killed_mid_rollout_resumes(&env, &failures, &controller, &bed.gates),
            prometheus_outage_never_promotes_blind(&env, &failures, blind),
            prometheus_back_in_time_resumes_the_rollout(&env, &failures, blip),
            second_bump_restarts_for_the_newest(&env, &failures),
            invalid_rollouts_are_refused_or_reported(&env, &failures),
            the_example_application_is_taken_over(&env, &failures),
            rollout_deleted_mid_canary_leaves_a_plain_setup(&env, &failures),
            a_synced_weight_is_repaired_at_once(&env, &failures),
            webhook_gates_hold_and_roll_back(&env, &failures, &bed.gates),
            a_night_with_a_window_a_report_and_conditions(&env, &failures, &bed.gates),
        );
        let mut errors: Vec<String> = [
            results.0, results.1, results.2, results.3, results.4, results.5, results.6, results.7, results.8,
            results.9, results.10, results.11, results.12,
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect();
        errors.extend(failures.lock().unwrap().iter().cloned());
        eprintln!("end-to-end scenarios took {:?}", started.elapsed());
        let namespaces: Vec<String> = [
            "e2e-healthy",
            "e2e-bad",
            "e2e-slow",
            "e2e-sigkill",
            "e2e-blind",
            "e2e-blip",
            "e2e-rebump",
            "e2e-invalid",
            "e2e-delete",
            "e2e-drift",
            "e2e-gates",
            "e2e-night",
        ]
        .map(String::from)
        .to_vec();
        bed.report(errors, &namespaces).await;
    });
}

/// A small deterministic generator (xorshift), so the chaos is the same in every run.
struct Chaos(u64);

impl Chaos {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The phase of a Rollout, reading through API server restarts.
async fn phase_of(client: &Client, ns: &str) -> Option<Phase> {
    let r = Api::<Rollout>::namespaced(client.clone(), ns)
        .get("backend")
        .await
        .ok()?;
    r.status.map(|s| s.phase)
}

/// Twelve releases at once, good and bad, while weir is SIGKILLed at seeded random
/// instants (ten times) and kube-apiserver is restarted once: every Rollout must end as
/// it would have, and no request may meet a destination without ready pods.
#[test]
fn chaos() {
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
        let setups = futures::future::join_all(namespaces.iter().map(|ns| setup(&env, ns, &env.provider))).await;
        let baselines: Vec<u64> = match setups.into_iter().collect::<Result<Vec<_>, _>>() {
            Ok(s) => s.into_iter().map(|(_, before)| before).collect(),
            Err(e) => return bed.report(vec![e], &namespaces).await,
        };
        for (i, ns) in namespaces.iter().enumerate() {
            // The mesh simulator, like Envoy, learns of a weight change through a watch;
            // right after the API server restarts its watches relist with backoff, which
            // took longer than the suite's 2 s drain (158 and 160 requests met a canary
            // already gone, in two runs). 10 s stands for a drain that outlasts the push.
            let patch = json!({"spec": {"scaleDownDelay": "10s"}});
            Api::<Rollout>::namespaced(env.client.clone(), ns)
                .patch("backend", &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap_or_else(|e| panic!("{ns}: {e}"));
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
        // The last drains end scaleDownDelay after the phase; then count.
        tokio::time::sleep(Duration::from_secs(12)).await;
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

/// An address on loopback that accepts connections and never answers (a provider or
/// webhook that hangs); abort the task to close it.
async fn silent_endpoint() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (address, holder)
}

/// From the image bump to Succeeded, for a healthy release in `ns` on provider `main`.
async fn promotion_time(env: &Env, ns: &str) -> Result<Duration, String> {
    setup(env, ns, &env.provider).await?;
    let times = promotion_times(env, &[ns.to_string()], "nginxdemos/hello:2.0").await?;
    times.first().copied().ok_or_else(|| format!("{ns}: no time"))
}

/// A metric provider that accepts connections and never answers, used by 50 Rollouts
/// under analysis at once, delays no other Rollout: a healthy release on another
/// provider is promoted beside them about as fast as alone (both printed).
#[test]
fn a_provider_that_never_answers_delays_no_one_else() {
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

/// Healthy releases in `namespaces` at once, each bumped to `image`: how long each took
/// from its bump to Succeeded.
async fn promotion_times(env: &Env, namespaces: &[String], image: &str) -> Result<Vec<Duration>, String> {
    let runs = namespaces.iter().map(|ns| async move {
        let bumped = Instant::now();
        bump(&env.client, ns, image).await;
        // A Rollout promoted before still says Succeeded until weir sees the bump.
        wait_phase(&env.client, ns, &[Phase::Progressing], Duration::from_secs(60)).await?;
        let r = wait_phase(
            &env.client,
            ns,
            &[Phase::Succeeded, Phase::RolledBack],
            Duration::from_secs(240),
        )
        .await?;
        match r.status.map(|s| s.phase) {
            Some(Phase::Succeeded) => Ok(bumped.elapsed()),
            other => Err(format!("{ns}: ended {other:?}")),
        }
    });
    futures::future::join_all(runs).await.into_iter().collect()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// weir's resident and peak memory (VmRSS, VmHWM), in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One hostile namespace beside 20 healthy releases (issue 23): its Rollout asks 16
/// rollback webhooks that accept and never answer at the shortest interval (1 s, 30 s
/// timeout, 5 retries), reads a provider that never answers (its whole 5-s timeout each
/// look), and floods the shared receiver (a new revision every second, each a Started
/// notification). The 20 healthy releases, each with a pre-rollout gate and the same
/// receiver, are timed alone and then beside it: their median promotion time, their
/// gates answered, their notifications delivered, weir's memory — all printed.
#[test]
fn one_hostile_namespace_does_not_slow_twenty_healthy_releases() {
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
fn with_only_the_rbac_in_config() {
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

/// A Rollout deleted mid-canary while weir cannot read: weir's `get` on DestinationRules is
/// taken from its ClusterRole (its watches keep working), so the deletion's fresh read
/// fails. The finalizer stays, traffic stays where it was (no weight on nothing), the
/// status says why; once the verb is back, the deletion completes as usual.
#[test]
fn a_deletion_that_cannot_read_keeps_its_finalizer_until_it_can() {
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

/// Sets the verbs of weir's ClusterRole rule for `resource`; returns the verbs before.
async fn set_weir_verbs(client: &Client, resource: &str, verbs: &[&str]) -> Result<Vec<String>, String> {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let api: Api<ClusterRole> = Api::all(client.clone());
    let mut role = api.get("weir").await.map_err(|e| format!("ClusterRole weir: {e}"))?;
    let mut before = vec![];
    for rule in role.rules.iter_mut().flatten() {
        if rule.resources.iter().flatten().any(|r| r == resource) {
            before = std::mem::replace(&mut rule.verbs, verbs.iter().map(|v| v.to_string()).collect());
        }
    }
    api.replace("weir", &Default::default(), &role)
        .await
        .map_err(|e| format!("ClusterRole weir: {e}"))?;
    Ok(before)
}

async fn deletion_waits_for_a_read(env: &Env, f: &Failures) -> Result<(), String> {
    let ns = "e2e-delete-blind";
    let (weights, no_ready_before) = setup(env, ns, &env.provider).await?;
    bump(&env.client, ns, "nginxdemos/hello:2.0").await;
    wait_weight(&weights, 25, Duration::from_secs(60)).await?;
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
    let during = weights.lock().unwrap().clone();
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
    let w = weights.lock().unwrap().clone();
    check(f, w.last() == Some(&0), format!("{ns}: weights after deletion {w:?}"));
    check_no_request_met_no_pods(env, f, ns, no_ready_before);
    Ok(())
}

/// weir for one namespace, as its own ServiceAccount with exactly `config/namespaced`'s
/// RBAC (a Role there, no ClusterRole): a release in that namespace is promoted, and a
/// Rollout in another namespace is left alone.
#[test]
fn with_only_the_namespaced_rbac_in_config() {
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

/// What weir answers on one of its HTTP paths (empty when it does not answer).
async fn http_text(port: &str, path: &str) -> String {
    let url = format!("http://127.0.0.1:{port}{path}");
    match reqwest::get(url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Who holds weir's Lease.
async fn lease_holder(client: &Client) -> Option<String> {
    use k8s_openapi::api::coordination::v1::Lease;
    let lease = Api::<Lease>::namespaced(client.clone(), "weir-system")
        .get_opt("weir-leader")
        .await
        .ok()??;
    lease.spec?.holder_identity
}

#[test]
fn a_standby_takes_over_when_the_leader_is_killed() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        // weir as its ServiceAccount with config/'s RBAC: the Lease's Role is enough.
        let bed = Bed::start_with(11, "", Identity::ServiceAccount).await;
        let env = bed.env();
        let failures: Failures = Arc::default();
        let result = standby_takes_over(&bed, &env, &failures).await;
        let mut errors: Vec<String> = result.err().into_iter().collect();
        errors.extend(failures.lock().unwrap().iter().cloned());
        bed.report(errors, &["e2e-ha".to_string()]).await;
    });
}

/// Two replicas with `--leader-elect`: the first leads, the second waits (its /readyz
/// says standby, its weir_leader is 0). The leader is SIGKILLed at 25 %; the standby
/// takes the Lease within its duration and finishes the release with no step repeated
/// or skipped and no request to a destination without ready pods.
/// A replica of weir with `--leader-elect`, like the bed's controller otherwise.
fn replica(bed: &Bed, name: &str, lease: Duration) -> Controller {
    let c = bed.controller.lock().unwrap();
    Controller {
        process: None,
        port: String::new(),
        kubeconfig: c.kubeconfig.clone(),
        dir: c.dir.clone(),
        providers: c.providers.clone(),
        namespace: None,
        webhooks: c.webhooks.clone(),
        notifications: c.notifications.clone(),
        name: name.to_string(),
        extra: vec![
            "--leader-elect".into(),
            format!("--lease-duration={}s", lease.as_secs()),
            format!("--identity={name}"),
        ],
    }
}

async fn standby_takes_over(bed: &Bed, env: &Env, f: &Failures) -> Result<(), String> {
    const LEASE: Duration = Duration::from_secs(6);
    let replica = |name: &str| replica(bed, name, LEASE);
    bed.controller.lock().unwrap().kill();
    let (mut first, mut second) = (replica("weir-a"), replica("weir-b"));
    first.start().map_err(|e| format!("start weir-a: {e}"))?;
    wait_ready(&first.port).await;
    second.start().map_err(|e| format!("start weir-b: {e}"))?;
    let start = Instant::now();
    while http_text(&second.port, "/readyz").await.is_empty() && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ns = "e2e-ha";
    let (weights, no_ready_before) = setup(env, ns, &env.provider).await?;
    check(
        f,
        http_text(&first.port, "/readyz").await == "leader",
        "weir-a does not lead".into(),
    );
    let standby = http_text(&second.port, "/readyz").await;
    check(
        f,
        standby.starts_with("standby"),
        format!("weir-b /readyz: {standby:?}"),
    );
    let metrics = http_text(&second.port, "/metrics").await;
    check(
        f,
        metrics.contains("weir_leader 0"),
        "weir-b's weir_leader is not 0".into(),
    );
    check(
        f,
        lease_holder(&env.client).await.as_deref() == Some("weir-a"),
        "the Lease is not weir-a's".into(),
    );
    bump(&env.client, ns, "nginxdemos/hello:2.0").await;
    wait_weight(&weights, 25, Duration::from_secs(60)).await?;
    first.kill();
    let killed = Instant::now();
    while http_text(&second.port, "/readyz").await != "leader" {
        if killed.elapsed() > LEASE * 3 {
            return Err(format!("weir-b did not take over within {:?}", LEASE * 3));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed.elapsed();
    eprintln!(
        "takeover: the standby led {} ms after the leader's SIGKILL (Lease {LEASE:?})",
        took.as_millis()
    );
    check(
        f,
        took <= LEASE + Duration::from_secs(4),
        format!("takeover took {took:?}"),
    );
    check(
        f,
        lease_holder(&env.client).await.as_deref() == Some("weir-b"),
        "the Lease is not weir-b's after the takeover".into(),
    );
    expect_promoted(env, f, ns, "after the takeover").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let w = weights.lock().unwrap().clone();
    check(f, w == vec![0, 10, 25, 50, 100, 0], format!("{ns}: weights went {w:?}"));
    check_no_request_met_no_pods(env, f, ns, no_ready_before);
    check(
        f,
        http_text(&second.port, "/metrics").await.contains("weir_leader 1"),
        "weir-b's weir_leader is not 1".into(),
    );
    second.kill();
    Ok(())
}

#[test]
fn a_leader_that_cannot_renew_fences_itself() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let bed = Bed::start_with(23, "", Identity::ServiceAccount).await;
        let env = bed.env();
        let failures: Failures = Arc::default();
        let result = leader_fences_itself(&bed, &env, &failures).await;
        let mut errors: Vec<String> = result.err().into_iter().collect();
        errors.extend(failures.lock().unwrap().iter().cloned());
        bed.report(errors, &["e2e-fence".to_string()]).await;
    });
}

/// weir-a's renewals of the Lease fail (an admission policy refuses every update of the
/// Lease that keeps weir-a its holder; everything else of weir-a's still works) while a
/// release runs. weir-a stops before its Lease can expire — before weir-b takes it, so
/// no write of weir-a can follow weir-b's first — and weir-b finishes the release with
/// no step repeated or skipped.
async fn leader_fences_itself(bed: &Bed, env: &Env, f: &Failures) -> Result<(), String> {
    const LEASE: Duration = Duration::from_secs(6);
    bed.controller.lock().unwrap().kill();
    let (mut first, mut second) = (replica(bed, "weir-a", LEASE), replica(bed, "weir-b", LEASE));
    first.start().map_err(|e| format!("start weir-a: {e}"))?;
    wait_ready(&first.port).await;
    second.start().map_err(|e| format!("start weir-b: {e}"))?;
    let ns = "e2e-fence";
    let (weights, no_ready_before) = setup(env, ns, &env.provider).await?;
    check(
        f,
        lease_holder(&env.client).await.as_deref() == Some("weir-a"),
        "the Lease is not weir-a's".into(),
    );
    bump(&env.client, ns, "nginxdemos/hello:2.0").await;
    wait_weight(&weights, 25, Duration::from_secs(60)).await?;
    devcluster::apply_yaml(&env.client, RENEWALS_OF_WEIR_A_FAIL)
        .await
        .map_err(|e| format!("admission policy: {e}"))?;
    let cut = Instant::now();
    let running = |c: &mut Controller| c.process.as_mut().is_some_and(|p| p.running());
    while running(&mut first) {
        if cut.elapsed() > LEASE * 3 {
            return Err(format!(
                "weir-a still runs {:?} after its renewals began to fail",
                LEASE * 3
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped = Instant::now();
    let log = first.process.as_ref().map(|p| p.tail()).unwrap_or_default();
    check(
        f,
        log.contains("past the renew deadline"),
        format!("weir-a did not say it fenced itself: {log}"),
    );
    while lease_holder(&env.client).await.as_deref() != Some("weir-b") {
        if cut.elapsed() > LEASE * 4 {
            return Err(format!("weir-b did not take the Lease within {:?}", LEASE * 4));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let taken = Instant::now();
    eprintln!(
        "fence: weir-a stopped {} ms after its renewals began to fail, {} ms before weir-b took the Lease (Lease {LEASE:?})",
        stopped.duration_since(cut).as_millis(),
        taken.duration_since(stopped).as_millis()
    );
    check(f, stopped < taken, "weir-a ran on after weir-b took the Lease".into());
    expect_promoted(env, f, ns, "after the fenced leader stopped").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let w = weights.lock().unwrap().clone();
    check(f, w == vec![0, 10, 25, 50, 100, 0], format!("{ns}: weights went {w:?}"));
    check_no_request_met_no_pods(env, f, ns, no_ready_before);
    second.kill();
    Ok(())
}

/// Every update of weir's Lease by which weir-a stays its holder (a renewal) is refused;
/// a takeover by another replica is not.
const RENEWALS_OF_WEIR_A_FAIL: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: weir-a-cannot-renew}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [coordination.k8s.io]
        apiVersions: [v1]
        operations: [UPDATE]
        resources: [leases]
  validations:
    - expression: >-
        !(object.metadata.name == 'weir-leader'
          && has(object.spec.holderIdentity) && object.spec.holderIdentity == 'weir-a'
          && has(oldObject.spec.holderIdentity) && oldObject.spec.holderIdentity == 'weir-a')
      message: "test: weir-a's renewals of the Lease fail"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: weir-a-cannot-renew}
spec:
  policyName: weir-a-cannot-renew
  validationActions: [Deny]
"#;

/// Debian's chromium, headless, on a page of the dashboard: its DOM after load, or a
/// screenshot into `screenshot`.
async fn chromium(url: &str, screenshot: Option<&Path>) -> Result<String, String> {
    let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut args = vec![
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--hide-scrollbars".into(),
        format!("--user-data-dir={}", profile.path().display()),
    ];
    match screenshot {
        Some(path) => args.extend([
            format!("--screenshot={}", path.display()),
            "--window-size=1100,1450".into(),
        ]),
        None => args.push("--dump-dom".into()),
    }
    args.push(url.to_string());
    let run = tokio::process::Command::new("chromium")
        .args(&args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .map_err(|_| format!("chromium on {url}: no answer within 60 s"))?
        .map_err(|e| format!("chromium: {e} (testcluster/prepare.sh installs it)"))?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(format!("chromium on {url}: {}", String::from_utf8_lossy(&out.stderr))),
    }
}

#[test]
fn the_dashboard_shows_a_release_and_its_rollback() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    runtime().block_on(async {
        let bed = Bed::start(13).await;
        let env = bed.env();
        let failures: Failures = Arc::default();
        let result = dashboard_in_a_browser(&bed, &env, &failures).await;
        let mut errors: Vec<String> = result.err().into_iter().collect();
        errors.extend(failures.lock().unwrap().iter().cloned());
        bed.report(errors, &["e2e-dash".to_string()]).await;
    });
}

/// `weir dashboard` beside the controller; headless Chromium loads the list and the
/// release page while a bad canary runs (Progressing, the weight chart) and after its
/// rollback (the RolledBack decision marked, the error-ratio chart against its bound),
/// and saves a screenshot in target/dashboard.png.
async fn dashboard_in_a_browser(bed: &Bed, env: &Env, f: &Failures) -> Result<(), String> {
    let ns = "e2e-dash";
    let (weights, _) = setup(env, ns, &env.provider).await?;
    let port = devcluster::free_port().map_err(|e| e.to_string())?;
    let kubeconfig = env.kubeconfig.display().to_string();
    let _dashboard = devcluster::spawn_with_env(
        "dashboard",
        Path::new(env!("CARGO_BIN_EXE_weir")),
        &[
            "dashboard".into(),
            format!("--addr=127.0.0.1:{port}"),
            format!("--prometheus={}", bed._prometheus.address),
            "-A".into(),
        ],
        bed.cluster.dir(),
        &[("KUBECONFIG", kubeconfig.as_str())],
    )
    .map_err(|e| format!("start the dashboard: {e}"))?;
    let base = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while http_text(&port.to_string(), "/").await.is_empty() {
        if start.elapsed() > Duration::from_secs(20) {
            return Err("the dashboard did not answer within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bump(&env.client, ns, "nginxdemos/hello:2.0-bad").await;
    wait_weight(&weights, 10, Duration::from_secs(60)).await?;
    let page = format!("{base}/rollouts/{ns}/backend");
    let during = chromium(&page, None).await?;
    check(
        f,
        during.contains("Progressing") && during.contains("Canary weight") && during.contains("<polyline"),
        format!("{ns}: the page during the canary shows no progress:\n{during}"),
    );
    let list = chromium(&format!("{base}/"), None).await?;
    check(
        f,
        list.contains("e2e-dash/backend"),
        format!("{ns}: the list misses the Rollout:\n{list}"),
    );
    wait_phase(&env.client, ns, &[Phase::RolledBack], Duration::from_secs(120)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = chromium(&page, None).await?;
    check(
        f,
        after.contains("RolledBack")
            && after.contains("Error ratio")
            && after.contains("bound 0.0100")
            && after.contains("/ 800"),
        format!("{ns}: the page after the rollback misses it:\n{after}"),
    );
    let shot = devcluster::repo_dir().join("target/dashboard.png");
    chromium(&page, Some(&shot)).await?;
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    check(
        f,
        size > 20_000,
        format!("the screenshot {} has {size} bytes", shot.display()),
    );
    eprintln!("dashboard: screenshot in {} ({size} bytes)", shot.display());
    Ok(())
}
