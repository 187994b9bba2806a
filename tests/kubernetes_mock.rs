//! The exact API calls of a reconcile, asserted against kube's `tower-test` mock (the
//! ApiServerVerifier pattern of kube-rs/controller-rs): method, path and body of each
//! call, in order.

use std::sync::Arc;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use weir::api::{Phase, Rollout, RolloutStatus, StepState};
use weir::controller::{self, Context, Looks, Telemetry};
use weir::kubernetes::{IstioApi, template_hash};
use weir::prometheus::Prometheus;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn rollout(status: Option<RolloutStatus>) -> Rollout {
    let mut r: Rollout = serde_yaml::from_str(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Rollout
metadata: {name: backend, namespace: dev, uid: 6f1c-uid, generation: 1}
spec:
  targetRef: {kind: Deployment, name: backend}
  trafficRouting:
    istio:
      virtualService: {name: backend, routes: [primary]}
      destinationRule: {name: backend, stableSubset: stable, canarySubset: canary}
  steps: [{weight: 10}, {weight: 50}, {weight: 100}]
  analysis:
    prometheus: {address: "http://127.0.0.1:1"}
    metrics: [{name: request-success-rate, min: 99}]
"#,
    )
    .unwrap();
    r.status = status;
    r
}

fn deployment(name: &str, image: &str, paused: bool, extra_labels: Value) -> Value {
    let mut labels = json!({"app": "backend", "weir.dev/track": "stable"});
    if let (Some(l), Some(extra)) = (labels.as_object_mut(), extra_labels.as_object()) {
        l.extend(extra.clone());
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "dev", "generation": 3, "labels": extra_labels},
        "spec": {
            "replicas": 4, "paused": paused,
            "selector": {"matchLabels": {"app": "backend"}},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "backend", "image": image}]}}
        },
        "status": {"observedGeneration": 3, "replicas": 4, "updatedReplicas": 4, "availableReplicas": 4, "readyReplicas": 4}
    })
}

/// weir's canary Deployment running `revision` with one available pod.
fn ready_canary(revision: &str) -> Value {
    let mut canary = deployment(
        "backend-canary",
        "hello:0.4",
        false,
        json!({"weir.dev/rollout": "backend"}),
    );
    canary["metadata"]["annotations"] = json!({"weir.dev/revision": revision});
    canary["spec"]["replicas"] = json!(1);
    canary["status"] = json!({"observedGeneration": 3, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1});
    canary
}

fn target_revision(d: &Value) -> String {
    let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(d.clone()).unwrap();
    template_hash(&d.spec.template)
}

fn destination_rule() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "backend", "namespace": "dev"},
        "spec": {"host": "backend", "subsets": [
            {"name": "stable", "labels": {"weir.dev/track": "stable"}},
            {"name": "canary", "labels": {"weir.dev/track": "canary"}}]}
    })
}

fn virtual_service(canary_weight: u32) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "backend", "namespace": "dev", "resourceVersion": "777"},
        "spec": {"hosts": ["backend"], "gateways": ["mesh"], "http": [
            {"name": "admin", "match": [{"uri": {"prefix": "/admin"}}], "fault": {"abort": {"httpStatus": 500, "percentage": {"value": 1}}},
             "route": [{"destination": {"host": "backend", "subset": "stable"}}]},
            {"name": "primary", "retries": {"attempts": 2, "perTryTimeout": "2s"}, "timeout": "5s",
             "mirror": {"host": "shadow"}, "headers": {"request": {"set": {"x-env": "dev"}}},
             "route": [
               {"destination": {"host": "backend", "subset": "stable", "port": {"number": 80}}, "weight": 100 - canary_weight},
               {"destination": {"host": "backend", "subset": "canary", "port": {"number": 80}}, "weight": canary_weight}]}
        ]}
    })
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

/// Answers the next request after checking its method and path; returns its body.
async fn expect(handle: &mut Handle, method: Method, path: &str, (code, response): (u16, Value)) -> Value {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method(), method, "method of {}", request.uri());
    assert_eq!(request.uri().path(), path, "path");
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    // Null means: answer with what was sent (an Event is created as posted).
    let response = if response.is_null() { body.clone() } else { response };
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&response).unwrap()))
            .unwrap(),
    );
    body
}

fn ok(v: Value) -> (u16, Value) {
    (200, v)
}

fn context(client: Client) -> Arc<Context> {
    Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "weir".into(),
                instance: None,
            },
        ),
        client,
        istio: IstioApi::version("v1"),
        prometheus: Prometheus::new().unwrap(),
        telemetry: Telemetry::default(),
        looks: Looks::default(),
    })
}

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/dev/deployments";
const ISTIO: &str = "/apis/networking.istio.io/v1/namespaces/dev";

#[tokio::test]
async fn taking_over_a_deployment_pauses_it_and_records_the_stable_revision() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "dev"));
    let target = deployment("backend", "hello:0.3", false, json!({}));
    let revision = target_revision(&target);
    let server = tokio::spawn(async move {
        expect(&mut handle, Method::GET, &format!("{DEPLOYMENTS}/backend"), ok(target)).await;
        expect(
            &mut handle,
            Method::GET,
            &format!("{DEPLOYMENTS}/backend-canary"),
            not_found(),
        )
        .await;
        expect(
            &mut handle,
            Method::GET,
            &format!("{ISTIO}/destinationrules/backend"),
            ok(destination_rule()),
        )
        .await;
        expect(
            &mut handle,
            Method::GET,
            &format!("{ISTIO}/virtualservices/backend"),
            ok(virtual_service(0)),
        )
        .await;
        // The only write to the user's Deployment: spec.paused, by server-side apply.
        let pause = expect(
            &mut handle,
            Method::PATCH,
            &format!("{DEPLOYMENTS}/backend"),
            ok(deployment("backend", "hello:0.3", true, json!({}))),
        )
        .await;
        assert_eq!(
            pause,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "backend"}, "spec": {"paused": true}})
        );
        let event = expect(
            &mut handle,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/dev/events",
            ok(Value::Null),
        )
        .await;
        assert_eq!(event["reason"], "Initialized");
        expect(
            &mut handle,
            Method::PATCH,
            "/apis/weir.dev/v1alpha1/namespaces/dev/rollouts/backend/status",
            ok(serde_json::to_value(rollout(None)).unwrap()),
        )
        .await
    });
    controller::reconcile(Arc::new(rollout(None)), ctx)
        .await
        .expect("reconcile");
    let status = server.await.unwrap();
    assert_eq!(status["kind"], "Rollout");
    assert_eq!(status["status"]["phase"], "Healthy");
    assert_eq!(status["status"]["stableRevision"], json!(revision));
}

#[tokio::test]
async fn a_ready_canary_gets_its_weight_by_a_patch_of_exactly_two_fields() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "dev"));
    let target = deployment("backend", "hello:0.4", true, json!({}));
    let revision = target_revision(&target);
    let canary = ready_canary(&revision);
    let status = RolloutStatus {
        phase: Phase::Progressing,
        stable_revision: Some("old".into()),
        canary_revision: Some(revision.clone()),
        current_step: Some(0),
        step_state: Some(StepState::ScalingCanary),
        waiting_since: Some(jiff::Timestamp::now().to_string()),
        analysis: Some(Default::default()),
        ..Default::default()
    };
    let vs = virtual_service(0);
    let vs_for_server = vs.clone();
    let server = tokio::spawn(async move {
        expect(&mut handle, Method::GET, &format!("{DEPLOYMENTS}/backend"), ok(target)).await;
        expect(
            &mut handle,
            Method::GET,
            &format!("{DEPLOYMENTS}/backend-canary"),
            ok(canary),
        )
        .await;
        expect(
            &mut handle,
            Method::GET,
            &format!("{ISTIO}/destinationrules/backend"),
            ok(destination_rule()),
        )
        .await;
        expect(
            &mut handle,
            Method::GET,
            &format!("{ISTIO}/virtualservices/backend"),
            ok(vs_for_server.clone()),
        )
        .await;
        let patch = expect(
            &mut handle,
            Method::PATCH,
            &format!("{ISTIO}/virtualservices/backend"),
            ok(vs_for_server),
        )
        .await;
        let event = expect(
            &mut handle,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/dev/events",
            ok(Value::Null),
        )
        .await;
        assert_eq!(event["reason"], "StepStarted");
        let status = expect(
            &mut handle,
            Method::PATCH,
            "/apis/weir.dev/v1alpha1/namespaces/dev/rollouts/backend/status",
            ok(serde_json::to_value(rollout(None)).unwrap()),
        )
        .await;
        (patch, status)
    });
    controller::reconcile(Arc::new(rollout(Some(status))), ctx)
        .await
        .expect("reconcile");
    let (patch, status) = server.await.unwrap();
    assert_eq!(
        patch,
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": "777"},
            {"op": "add", "path": "/spec/http/1/route/0/weight", "value": 90},
            {"op": "add", "path": "/spec/http/1/route/1/weight", "value": 10},
        ])
    );
    // Applied to the object, the patch leaves every other field as it was.
    let mut patched = vs.clone();
    json_patch::patch(
        &mut patched,
        &serde_json::from_value::<json_patch::Patch>(patch).unwrap(),
    )
    .unwrap();
    let mut expected = vs;
    expected["spec"]["http"][1]["route"][0]["weight"] = json!(90);
    expected["spec"]["http"][1]["route"][1]["weight"] = json!(10);
    assert_eq!(patched, expected);
    assert_eq!(status["status"]["canaryWeight"], 10);
    assert_eq!(status["status"]["stepState"], "Analysing");
}

#[tokio::test]
async fn a_missing_virtual_service_becomes_a_precise_condition_without_writes() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "dev"));
    let target = deployment("backend", "hello:0.3", true, json!({}));
    let server = tokio::spawn(async move {
        expect(&mut handle, Method::GET, &format!("{DEPLOYMENTS}/backend"), ok(target)).await;
        expect(
            &mut handle,
            Method::GET,
            &format!("{DEPLOYMENTS}/backend-canary"),
            not_found(),
        )
        .await;
        expect(
            &mut handle,
            Method::GET,
            &format!("{ISTIO}/destinationrules/backend"),
            ok(destination_rule()),
        )
        .await;
        expect(
            &mut handle,
            Method::GET,
            &format!("{ISTIO}/virtualservices/backend"),
            not_found(),
        )
        .await;
        let event = expect(
            &mut handle,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/dev/events",
            ok(Value::Null),
        )
        .await;
        assert_eq!(event["type"], "Warning");
        expect(
            &mut handle,
            Method::PATCH,
            "/apis/weir.dev/v1alpha1/namespaces/dev/rollouts/backend/status",
            ok(serde_json::to_value(rollout(None)).unwrap()),
        )
        .await
    });
    controller::reconcile(Arc::new(rollout(None)), ctx)
        .await
        .expect("reconcile");
    let status = server.await.unwrap();
    assert_eq!(status["status"]["phase"], "InvalidSpec");
    assert_eq!(status["status"]["message"], "VirtualService dev/backend not found");
    assert_eq!(status["status"]["conditions"][0]["type"], "SpecValid");
    assert_eq!(status["status"]["conditions"][0]["status"], "False");
}

#[tokio::test]
async fn an_invalid_spec_is_reported_without_reading_or_touching_anything() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "dev"));
    let mut r = rollout(None);
    r.spec.steps[1].weight = 5;
    let server = tokio::spawn(async move {
        expect(
            &mut handle,
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/dev/events",
            ok(Value::Null),
        )
        .await;
        expect(
            &mut handle,
            Method::PATCH,
            "/apis/weir.dev/v1alpha1/namespaces/dev/rollouts/backend/status",
            ok(serde_json::to_value(rollout(None)).unwrap()),
        )
        .await
    });
    controller::reconcile(Arc::new(r), ctx).await.expect("reconcile");
    let status = server.await.unwrap();
    assert_eq!(status["status"]["phase"], "InvalidSpec");
    assert!(
        status["status"]["message"]
            .as_str()
            .unwrap()
            .contains("steps[1].weight: 5")
    );
}

#[tokio::test]
async fn a_conflicting_weight_write_fails_the_reconcile_before_any_status_write() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "dev"));
    let target = deployment("backend", "hello:0.3", true, json!({}));
    let revision = target_revision(&target);
    let status = RolloutStatus {
        phase: Phase::Healthy,
        stable_revision: Some(revision),
        ..Default::default()
    };
    let server = tokio::spawn(async move {
        expect(&mut handle, Method::GET, &format!("{DEPLOYMENTS}/backend"), ok(target)).await;
        expect(
            &mut handle,
            Method::GET,
            &format!("{DEPLOYMENTS}/backend-canary"),
            not_found(),
        )
        .await;
        expect(
            &mut handle,
            Method::GET,
            &format!("{ISTIO}/destinationrules/backend"),
            ok(destination_rule()),
        )
        .await;
        // Someone left canary weight on while no canary runs: weir puts it back to 0 ...
        expect(
            &mut handle,
            Method::GET,
            &format!("{ISTIO}/virtualservices/backend"),
            ok(virtual_service(30)),
        )
        .await;
        // ... but the object changed meanwhile: the resourceVersion test fails.
        let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
            "message": "the server rejected our request due to an error in our request: testing value /metadata/resourceVersion failed"});
        expect(
            &mut handle,
            Method::PATCH,
            &format!("{ISTIO}/virtualservices/backend"),
            (422, conflict),
        )
        .await;
        handle
    });
    let err = controller::reconcile(Arc::new(rollout(Some(status))), ctx)
        .await
        .expect_err("conflict surfaces");
    assert!(err.is_conflict(), "{err}");
    let mut handle = server.await.unwrap();
    // The client is gone with the context: no further request (no status write) was made.
    assert!(handle.next_request().await.is_none());
}

/// No request comes within 100 ms.
async fn no_request(handle: &mut Handle) -> bool {
    tokio::time::timeout(std::time::Duration::from_millis(100), handle.next_request())
        .await
        .is_err()
}

/// Answers the four reads of a full observation.
async fn expect_observation(handle: &mut Handle, target: &Value, canary: &Value, vs: &Value) {
    expect(
        handle,
        Method::GET,
        &format!("{DEPLOYMENTS}/backend"),
        ok(target.clone()),
    )
    .await;
    expect(
        handle,
        Method::GET,
        &format!("{DEPLOYMENTS}/backend-canary"),
        ok(canary.clone()),
    )
    .await;
    expect(
        handle,
        Method::GET,
        &format!("{ISTIO}/destinationrules/backend"),
        ok(destination_rule()),
    )
    .await;
    expect(
        handle,
        Method::GET,
        &format!("{ISTIO}/virtualservices/backend"),
        ok(vs.clone()),
    )
    .await;
}

#[tokio::test]
async fn a_look_while_nothing_changed_reads_nothing_from_the_cluster() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let ctx = context(Client::new(service, "dev"));
    let target = deployment("backend", "hello:0.4", true, json!({}));
    let revision = target_revision(&target);
    let canary = ready_canary(&revision);
    let now = jiff::Timestamp::now();
    let status = RolloutStatus {
        phase: Phase::Progressing,
        stable_revision: Some("old".into()),
        canary_revision: Some(revision),
        current_step: Some(0),
        step_display: Some("1/3".into()),
        step_state: Some(StepState::Analysing),
        step_started_at: Some(now.to_string()),
        canary_weight: 10,
        analysis: Some(weir::api::AnalysisStatus {
            // No look is due during this test: Prometheus is not asked.
            next_check_at: Some((now + jiff::SignedDuration::from_hours(1)).to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let rollout = Arc::new(rollout(Some(status)));
    let vs = virtual_service(10);

    // The first reconcile observes and records the SpecValid condition: the status as
    // the API server then holds it is what the next reconciles see.
    let reconcile = tokio::spawn(controller::reconcile(rollout.clone(), ctx.clone()));
    expect_observation(&mut handle, &target, &canary, &vs).await;
    let written = expect(
        &mut handle,
        Method::PATCH,
        "/apis/weir.dev/v1alpha1/namespaces/dev/rollouts/backend/status",
        ok(serde_json::to_value(rollout.as_ref()).unwrap()),
    )
    .await;
    reconcile.await.unwrap().expect("reconcile");
    let mut stored = rollout.as_ref().clone();
    stored.status = Some(serde_json::from_value(written["status"].clone()).unwrap());
    let rollout = Arc::new(stored);
    // The next one observes again (no observation was remembered yet) and writes nothing.
    let reconcile = tokio::spawn(controller::reconcile(rollout.clone(), ctx.clone()));
    expect_observation(&mut handle, &target, &canary, &vs).await;
    reconcile.await.unwrap().expect("reconcile");
    assert!(no_request(&mut handle).await, "no write");
    // Nothing watched changed since: the next reconcile reads nothing.
    let reconcile = tokio::spawn(controller::reconcile(rollout.clone(), ctx.clone()));
    assert!(
        no_request(&mut handle).await,
        "a look without changes reads the cluster"
    );
    reconcile.await.unwrap().expect("reconcile");
    // A Deployment of the Rollout changed: observe again.
    ctx.looks.touch("dev/backend");
    let reconcile = tokio::spawn(controller::reconcile(rollout.clone(), ctx.clone()));
    expect_observation(&mut handle, &target, &canary, &vs).await;
    reconcile.await.unwrap().expect("reconcile");
}
