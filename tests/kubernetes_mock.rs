//! The exact API calls of a reconcile, asserted against kube's `tower-test` mock (the
//! ApiServerVerifier pattern of kube-rs/controller-rs): method, path and body of each
//! call, in order.

use std::future::Future;
use std::sync::Arc;

use http::{Method, Request, Response};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action as Requeue;
use serde_json::{Value, json};
use weir::admin::Admin;
use weir::admin::providers::Providers;
use weir::api::{Phase, Rollout, RolloutStatus};
use weir::controller::cache::Looks;
use weir::controller::copies::Brought;
use weir::controller::index::Named;
use weir::controller::{self, Context};
use weir::edges::events::EventPublisher;
use weir::edges::kubernetes::{RouterApis, template_hash};
use weir::edges::notify::{Notifier, Receivers};
use weir::edges::prometheus::Prometheus;
use weir::edges::webhooks::{WebhookPolicy, Webhooks};
use weir::engine::state_of;
use weir::telemetry::Telemetry;
use weir_core::state::{CanaryAt, STATE_VERSION, State};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn rollout(status: Option<RolloutStatus>) -> Rollout {
    let mut r: Rollout = serde_saphyr::from_str(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Rollout
metadata: {name: backend, namespace: dev, uid: 6f1c-uid, generation: 1, finalizers: [weir.dev/cleanup]}
spec:
  targetRef: {kind: Deployment, name: backend}
  trafficRouting:
    istio:
      virtualService: {name: backend, routes: [primary]}
      destinationRule: {name: backend, stableSubset: stable, canarySubset: canary}
  steps: [{weight: 10}, {weight: 50}, {weight: 100}]
  analysis:
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

/// An API error as the API server sends it.
fn failure(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": message}),
    )
}

fn not_found() -> (u16, Value) {
    failure(404, "NotFound", "not found")
}

/// The status of a Rollout that took the target over and runs no canary.
fn stable_on(target: &Value) -> RolloutStatus {
    status_of(State::Stable {
        stable: target_revision(target),
        last: None,
    })
}

/// Answers the next request after checking its method and path; returns its body.
async fn expect(handle: &mut Handle, method: Method, path: &str, (code, response): (u16, Value)) -> Value {
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), handle.next_request());
    let (request, send) = next.await.expect("a request within 10 s").expect("a request");
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

/// Like `expect`, for a server-side apply: weir's field manager, forced (weir owns the
/// fields it applies; a GitOps tool that owned them before hands them over).
async fn expect_apply(handle: &mut Handle, path: &str, response: (u16, Value)) -> Value {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method(), Method::PATCH, "method of {}", request.uri());
    assert_eq!(request.uri().path(), path, "path");
    let query = request.uri().query().unwrap_or_default().to_string();
    assert!(query.contains("fieldManager=weir"), "field manager in {query}");
    assert!(query.contains("force=true"), "forced apply in {query}");
    assert_eq!(
        request.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/apply-patch+yaml"[..])
    );
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    let (code, response) = response;
    let response = match (response.is_null(), path.ends_with("/status")) {
        (true, true) => stored_with(&body),
        (true, false) => body.clone(),
        (false, _) => response,
    };
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&response).unwrap()))
            .unwrap(),
    );
    body
}

const STATUS: &str = "/apis/weir.dev/v1alpha1/namespaces/dev/rollouts/backend/status";

/// A canary of `revision` against stable revision `old`, at a step and weight, on 4 replicas.
fn canary_at(revision: &str, step: u32, weight: u32) -> CanaryAt {
    CanaryAt {
        stable: "old".into(),
        canary: revision.into(),
        step,
        weight,
        reference_replicas: 4,
    }
}

/// A status as weir writes it: the state and its projection.
fn status_of(state: State) -> RolloutStatus {
    let mut status = RolloutStatus {
        phase: state.phase(),
        stable_revision: state.stable().map(str::to_string),
        canary_revision: state.canary().map(|at| at.canary.clone()),
        current_step: state.canary().map(|at| at.step),
        canary_weight: state.weight(),
        analysis: Some(Default::default()),
        state,
        state_version: Some(STATE_VERSION),
        observed_generation: Some(1),
        conditions: vec![weir::api::Condition {
            type_: "SpecValid".into(),
            status: "True".into(),
            reason: "Valid".into(),
            message: "the Rollout and the objects it names fit".into(),
            last_transition_time: "2026-11-28T00:00:00Z".into(),
        }],
        ..Default::default()
    };
    // As the last reconcile left them: kstatus's conditions follow the phase.
    status.set_readiness("2026-11-28T00:00:00Z".parse().unwrap());
    status
}

fn ok(v: Value) -> (u16, Value) {
    (200, v)
}

/// Reconciles `rollout` while the mocked API server plays `script`, the calls it
/// expects in order (`expect`, `expect_apply`, ...): what the reconcile returned and
/// what the script returned.
async fn reconcile_while<T: Send + 'static>(
    ctx: Arc<Context>,
    rollout: Rollout,
    script: impl Future<Output = T> + Send + 'static,
) -> (Result<Requeue, weir::Error>, T) {
    let server = tokio::spawn(script);
    // The context goes with the reconcile (unless the caller kept a clone): its client is
    // the mock's other end, so a script that waits for "no more requests" sees the end.
    let result = controller::reconcile(Arc::new(rollout), ctx).await;
    (result, server.await.expect("the API server's script"))
}

/// A controller context whose API server is the returned mock handle.
fn mocked() -> (Arc<Context>, Handle) {
    mocked_with(Default::default())
}

/// Like `mocked`, with the admin's notification receivers.
fn mocked_with(receivers: Receivers) -> (Arc<Context>, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (context(Client::new(service, "dev"), receivers), handle)
}

fn context(client: Client, receivers: Receivers) -> Arc<Context> {
    Arc::new(Context {
        events: EventPublisher::new(client.clone(), None),
        client,
        routers: RouterApis::version("v1"),
        prometheus: Prometheus::new().unwrap(),
        admin: Arc::new(Admin {
            providers: Providers::single("http://127.0.0.1:1").unwrap(),
            receivers: receivers.clone(),
            ..Default::default()
        }),
        secrets_namespace: "weir-system".into(),
        notifier: Notifier::start(receivers, None, "weir-system".into()),
        webhooks: Webhooks::start(WebhookPolicy::default()).0,
        telemetry: Telemetry::default(),
        looks: Looks::default(),
        copies: Default::default(),
        credentials: Default::default(),
        hosts: Default::default(),
        confirmed: Default::default(),
        health: Default::default(),
        workers: controller::workers(64, false),
    })
}

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/dev/deployments";
const ISTIO: &str = "/apis/networking.istio.io/v1/namespaces/dev";

/// The Deployment watch brings the canary `d`; whether that is news (it wakes the
/// Rollout).
fn watch_brings_canary(ctx: &Context, d: &Deployment) -> bool {
    ctx.copies.saw(Brought {
        named: Named::Target,
        namespace: "dev",
        name: "backend-canary",
        version: d.metadata.resource_version.as_deref(),
        kept: weir::edges::objects::canary_json(d),
    })
}

/// Answers the four reads of a full observation.
async fn expect_observation(handle: &mut Handle, target: &Value, canary: Option<&Value>, vs: (u16, Value)) {
    expect(
        handle,
        Method::GET,
        &format!("{DEPLOYMENTS}/backend"),
        ok(target.clone()),
    )
    .await;
    let canary = canary.map(|c| ok(c.clone())).unwrap_or_else(not_found);
    expect(handle, Method::GET, &format!("{DEPLOYMENTS}/backend-canary"), canary).await;
    expect(
        handle,
        Method::GET,
        &format!("{ISTIO}/destinationrules/backend"),
        ok(destination_rule()),
    )
    .await;
    expect(handle, Method::GET, &format!("{ISTIO}/virtualservices/backend"), vs).await;
}

async fn expect_event(handle: &mut Handle, reason: &str) -> Value {
    let event = expect(
        handle,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/dev/events",
        ok(Value::Null),
    )
    .await;
    assert_eq!(event["reason"], reason, "{event}");
    event
}

/// The Rollout as the API server answers a status apply: with that status.
fn stored_with(status: &Value) -> Value {
    let mut r = serde_json::to_value(rollout(None)).unwrap();
    r["status"] = status["status"].clone();
    r
}

fn with_status(written: &Value) -> Rollout {
    let mut r = rollout(None);
    r.status = Some(serde_json::from_value(written["status"].clone()).unwrap());
    r
}

#[tokio::test]
async fn a_new_rollout_first_gets_its_finalizer_and_nothing_else() {
    let (ctx, mut handle) = mocked();
    let mut r = rollout(None);
    r.metadata.finalizers = None;
    let (result, mut handle) = reconcile_while(ctx, r, async move {
        let patch = expect(
            &mut handle,
            Method::PATCH,
            "/apis/weir.dev/v1alpha1/namespaces/dev/rollouts/backend",
            ok(serde_json::to_value(rollout(None)).unwrap()),
        )
        .await;
        assert_eq!(
            patch,
            json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
                   {"op": "add", "path": "/metadata/finalizers", "value": ["weir.dev/cleanup"]}])
        );
        handle
    })
    .await;
    result.expect("reconcile");
    assert!(
        handle.next_request().await.is_none(),
        "nothing else before the finalizer is on"
    );
}

/// The cache can still lack weir's own finalizer when the next reconcile begins: the
/// patch's `test` fails (422 `Invalid`, no details, as kube-apiserver 1.37 answers it).
/// That is a race to decide again on, not a failure to warn about or report.
#[tokio::test]
async fn a_finalizer_added_again_from_a_stale_cache_is_a_conflict() {
    let (ctx, mut handle) = mocked();
    let mut r = rollout(None);
    r.metadata.finalizers = None;
    let server = tokio::spawn(async move {
        let invalid = failure(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
        );
        expect(
            &mut handle,
            Method::PATCH,
            "/apis/weir.dev/v1alpha1/namespaces/dev/rollouts/backend",
            invalid,
        )
        .await;
        handle
    });
    let err = controller::reconcile(Arc::new(r), ctx)
        .await
        .expect_err("the failed test surfaces");
    assert!(err.is_conflict(), "{err}");
    let mut handle = server.await.unwrap();
    assert!(handle.next_request().await.is_none(), "nothing reported");
}

#[tokio::test]
async fn taking_over_a_deployment_records_the_stable_revision_then_pauses_it() {
    let (ctx, mut handle) = mocked();
    let target = deployment("backend", "hello:0.3", false, json!({}));
    let revision = target_revision(&target);
    let (result, status) = reconcile_while(ctx, rollout(None), async move {
        expect_observation(&mut handle, &target, None, ok(virtual_service(0))).await;
        // The status first: the state it records is the intent of the writes after it.
        let status = expect_apply(&mut handle, STATUS, ok(Value::Null)).await;
        // The only write to the user's Deployment: spec.paused, by server-side apply.
        let pause = expect_apply(
            &mut handle,
            &format!("{DEPLOYMENTS}/backend"),
            ok(deployment("backend", "hello:0.3", true, json!({}))),
        )
        .await;
        assert_eq!(
            pause,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "backend"}, "spec": {"paused": true}})
        );
        expect_event(&mut handle, "Initialized").await;
        status
    })
    .await;
    result.expect("reconcile");
    assert_eq!(status["kind"], "Rollout");
    assert_eq!(status["status"]["phase"], "Healthy");
    assert_eq!(status["status"]["stableRevision"], json!(revision));
    assert_eq!(status["status"]["state"], json!({"name": "stable", "stable": revision}));
    assert_eq!(status["status"]["stateVersion"], json!(STATE_VERSION));
}

/// A bump: the canary Deployment is applied (its body asserted), then, once its pod is
/// ready, the weight is written by a patch of exactly two fields.
#[tokio::test]
async fn a_bump_starts_a_canary_and_its_ready_pod_gets_the_weight_by_a_patch_of_two_fields() {
    let (ctx, mut handle) = mocked();
    let target = deployment("backend", "hello:0.4", true, json!({}));
    let revision = target_revision(&target);
    let healthy = status_of(State::Stable {
        stable: "old".into(),
        last: None,
    });
    let vs = virtual_service(0);
    let (t, v) = (target.clone(), vs.clone());
    let (result, (mut handle, status, canary)) = reconcile_while(ctx.clone(), rollout(Some(healthy)), async move {
        expect_observation(&mut handle, &t, None, ok(v)).await;
        let status = expect_apply(&mut handle, STATUS, ok(Value::Null)).await;
        let canary = expect_apply(&mut handle, &format!("{DEPLOYMENTS}/backend-canary"), ok(Value::Null)).await;
        expect_event(&mut handle, "CanaryStarted").await;
        (handle, status, canary)
    })
    .await;
    result.expect("reconcile");
    assert_eq!(status["status"]["state"]["name"], "scaling");
    assert_eq!(status["status"]["phase"], "Progressing");
    // The canary: the target's spec, the track label set to canary in the pod labels
    // and the selector, one replica (10 % of 4), owned by the Rollout, named by labels.
    assert_eq!(canary["metadata"]["name"], "backend-canary");
    assert_eq!(canary["metadata"]["labels"]["weir.dev/rollout"], "backend");
    assert_eq!(canary["metadata"]["annotations"]["weir.dev/revision"], json!(revision));
    assert_eq!(canary["metadata"]["ownerReferences"][0]["kind"], "Rollout");
    assert_eq!(canary["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(canary["spec"]["replicas"], 1);
    assert_eq!(
        canary["spec"]["selector"]["matchLabels"],
        json!({"app": "backend", "weir.dev/track": "canary"})
    );
    assert_eq!(
        canary["spec"]["template"]["metadata"]["labels"],
        json!({"app": "backend", "weir.dev/track": "canary"})
    );
    assert_eq!(
        canary["spec"]["template"]["spec"], target["spec"]["template"]["spec"],
        "the canary runs the bumped template"
    );

    // The watch brings the canary's pods ready: the next reconcile writes the weight
    // without reading anything again.
    let mut ready: Deployment = serde_json::from_value(ready_canary(&target_revision(&target))).unwrap();
    ready.metadata.resource_version = Some("2".into());
    assert!(watch_brings_canary(&ctx, &ready));
    let scaling = with_status(&status);
    let v = vs.clone();
    let (result, (patch, status)) = reconcile_while(ctx, scaling, async move {
        let status = expect_apply(&mut handle, STATUS, ok(Value::Null)).await;
        let patch = expect(
            &mut handle,
            Method::PATCH,
            &format!("{ISTIO}/virtualservices/backend"),
            ok(v),
        )
        .await;
        expect_event(&mut handle, "StepStarted").await;
        (patch, status)
    })
    .await;
    result.expect("reconcile");
    assert_eq!(
        patch,
        json!([
            {"op": "replace", "path": "/metadata/resourceVersion", "value": "777"},
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
    assert_eq!(status["status"]["state"]["name"], "analysing");
}

/// A controller that restarts in the middle of a step raises no weight on the evidence
/// of the one before it: here Prometheus does not answer, so the weight stays at 0.
#[tokio::test]
async fn after_a_restart_no_weight_is_raised_before_a_fresh_look() {
    let (ctx, mut handle) = mocked();
    let target = deployment("backend", "hello:0.4", true, json!({}));
    let revision = target_revision(&target);
    let scaling = status_of(State::Scaling {
        at: canary_at(&revision, 0, 0),
        since: jiff::Timestamp::now(),
        drain_until: None,
    });
    let canary = ready_canary(&revision);
    let (result, (mut handle, status)) = reconcile_while(ctx, rollout(Some(scaling)), async move {
        expect_observation(&mut handle, &target, Some(&canary), ok(virtual_service(0))).await;
        let status = expect_apply(&mut handle, STATUS, ok(Value::Null)).await;
        (handle, status)
    })
    .await;
    result.expect("reconcile");
    assert!(no_request(&mut handle).await, "no weight written");
    assert_eq!(status["status"]["canaryWeight"], 0);
    assert!(
        status["status"]["message"].as_str().unwrap().contains("fresh look"),
        "{}",
        status["status"]["message"]
    );
}

#[tokio::test]
async fn a_missing_virtual_service_becomes_a_precise_condition_without_writes() {
    let (ctx, mut handle) = mocked();
    let target = deployment("backend", "hello:0.3", true, json!({}));
    let (result, status) = reconcile_while(ctx, rollout(None), async move {
        expect_observation(&mut handle, &target, None, not_found()).await;
        let status = expect_apply(&mut handle, STATUS, ok(Value::Null)).await;
        let event = expect_event(&mut handle, "TrafficRoutingInvalid").await;
        assert_eq!(event["type"], "Warning");
        status
    })
    .await;
    result.expect("reconcile");
    assert_eq!(status["status"]["phase"], "InvalidSpec");
    assert_eq!(status["status"]["message"], "VirtualService dev/backend not found");
    assert_eq!(status["status"]["conditions"][0]["type"], "SpecValid");
    assert_eq!(status["status"]["conditions"][0]["status"], "False");
}

#[tokio::test]
async fn an_invalid_spec_is_reported_without_reading_or_touching_anything() {
    let (ctx, mut handle) = mocked();
    let mut r = rollout(None);
    r.spec.steps[1].weight = 5;
    let (result, status) = reconcile_while(ctx, r, async move {
        let status = expect_apply(&mut handle, STATUS, ok(Value::Null)).await;
        expect_event(&mut handle, "InvalidSpec").await;
        status
    })
    .await;
    result.expect("reconcile");
    assert_eq!(status["status"]["phase"], "InvalidSpec");
    assert!(
        status["status"]["message"]
            .as_str()
            .unwrap()
            .contains("steps[1].weight: 5")
    );
}

#[tokio::test]
async fn a_conflicting_weight_write_fails_the_reconcile_after_its_intent_is_recorded() {
    let (ctx, mut handle) = mocked();
    let target = deployment("backend", "hello:0.3", true, json!({}));
    let healthy = stable_on(&target);
    let server = tokio::spawn(async move {
        // Someone left canary weight on while no canary runs: weir takes it off ...
        expect_observation(&mut handle, &target, None, ok(virtual_service(30))).await;
        // ... recording the intent first (Draining: weight 0) ...
        let status = expect_apply(&mut handle, STATUS, ok(Value::Null)).await;
        assert_eq!(status["status"]["state"]["name"], "draining");
        // ... but the object changed meanwhile: the resourceVersion precondition fails.
        let conflict = failure(
            409,
            "Conflict",
            "Operation cannot be fulfilled on virtualservices.networking.istio.io \"backend\": the object has been modified",
        );
        expect(
            &mut handle,
            Method::PATCH,
            &format!("{ISTIO}/virtualservices/backend"),
            conflict,
        )
        .await;
        handle
    });
    let err = controller::reconcile(Arc::new(rollout(Some(healthy))), ctx)
        .await
        .expect_err("conflict surfaces");
    assert!(err.is_conflict(), "{err}");
    let mut handle = server.await.unwrap();
    // The client is gone with the context: a conflict is retried, not reported.
    assert!(handle.next_request().await.is_none());
}

/// The watches list `objects` (kind, JSON) as their first list: the copies keep them
/// (each is named by the Rollout), and know that nothing else exists.
fn watches_list(ctx: &Context, objects: &[(Named, &Value)]) {
    for named in [Named::Target, Named::VirtualService, Named::DestinationRule] {
        ctx.copies.relisting(named);
    }
    for (named, o) in objects {
        let meta = &o["metadata"];
        ctx.copies.saw(Brought {
            named: *named,
            namespace: "dev",
            name: meta["name"].as_str().unwrap(),
            version: meta["resourceVersion"].as_str(),
            kept: Some(serde_json::to_vec(o).unwrap()),
        });
    }
    for named in [Named::Target, Named::VirtualService, Named::DestinationRule] {
        ctx.copies.listed(named);
    }
}

/// The cache lags the API server: someone set the canary weight back to 0 (version 778)
/// and the VirtualService's watch has not brought it yet; weir's copy says 30 %. Its
/// decision (take the weight off) writes the intent, then the weight patch tests the
/// version it read (777): the API server refuses it as a conflict, so nothing is
/// written on the stale copy. The next reconcile reads every object from the API server,
/// not from the copies, and decides on what is there.
#[tokio::test]
async fn a_decision_on_a_lagging_copy_fails_as_a_conflict_and_the_next_reads_afresh() {
    let (ctx, mut handle) = mocked();
    let target = deployment("backend", "hello:0.3", true, json!({}));
    let (stale, mut fresh) = (virtual_service(30), virtual_service(0));
    fresh["metadata"]["resourceVersion"] = json!("778");
    watches_list(
        &ctx,
        &[
            (Named::Target, &target),
            (Named::DestinationRule, &destination_rule()),
            (Named::VirtualService, &stale),
        ],
    );
    let rollout = Arc::new(rollout(Some(stable_on(&target))));
    let reconcile = tokio::spawn(controller::reconcile(rollout.clone(), ctx.clone()));
    // No read: the copies hold every object.
    let status = expect_apply(&mut handle, STATUS, ok(Value::Null)).await;
    assert_eq!(status["status"]["state"]["name"], "draining", "the intent first");
    let conflict = failure(409, "Conflict", "the object has been modified");
    let patch = expect(
        &mut handle,
        Method::PATCH,
        &format!("{ISTIO}/virtualservices/backend"),
        conflict,
    )
    .await;
    assert_eq!(
        patch[0],
        json!({"op": "replace", "path": "/metadata/resourceVersion", "value": "777"}),
        "the patch holds only on the version the decision read"
    );
    let err = reconcile.await.unwrap().expect_err("conflict surfaces");
    assert!(err.is_conflict(), "{err}");
    controller::error_policy(rollout.clone(), &err, ctx.clone());

    // The next reconcile reads afresh: the weight is already off, nothing to patch.
    let reconcile = tokio::spawn(controller::reconcile(rollout.clone(), ctx.clone()));
    expect_observation(&mut handle, &target, None, ok(fresh)).await;
    while let Ok(Some((request, send))) =
        tokio::time::timeout(std::time::Duration::from_millis(300), handle.next_request()).await
    {
        assert_ne!(request.method(), Method::GET, "read once: {}", request.uri());
        assert!(!request.uri().path().contains("virtualservices"), "no weight write");
        let body = request.into_body().collect_bytes().await.unwrap();
        send.send_response(Response::builder().body(Body::from(body.to_vec())).unwrap());
    }
    reconcile.await.unwrap().expect("decided on the fresh read");
    // And the copies keep what the fresh read found.
    let kept = ctx
        .copies
        .copy(weir::edges::objects::Object::VirtualService("backend"), "dev");
    let kept: Value = serde_json::from_slice(&kept.flatten().expect("kept")).unwrap();
    assert_eq!(kept["metadata"]["resourceVersion"], "778");
}

#[tokio::test]
async fn a_failed_write_reaches_status_and_events() {
    let (ctx, mut handle) = mocked();
    let target = deployment("backend", "hello:0.3", false, json!({}));
    let healthy = stable_on(&target);
    let server = tokio::spawn(async move {
        expect_observation(&mut handle, &target, None, ok(virtual_service(0))).await;
        let forbidden = failure(403, "Forbidden", "deployments.apps \"backend\" is forbidden");
        expect_apply(&mut handle, &format!("{DEPLOYMENTS}/backend"), forbidden).await;
        let event = expect_event(&mut handle, "ApplyFailed").await;
        assert_eq!(event["type"], "Warning");
        expect_apply(&mut handle, STATUS, ok(Value::Null)).await
    });
    let err = controller::reconcile(Arc::new(rollout(Some(healthy))), ctx)
        .await
        .expect_err("the failure surfaces");
    assert!(!err.is_conflict());
    let status = server.await.unwrap();
    let conditions = status["status"]["conditions"].as_array().unwrap();
    let applied = conditions.iter().find(|c| c["type"] == "Applied").expect("Applied");
    assert_eq!(applied["status"], "False");
    assert!(
        applied["message"].as_str().unwrap().contains("PauseTarget(true)"),
        "{applied}"
    );
}

/// Deleting a Rollout mid-canary: traffic goes back to stable first (intent recorded),
/// the finalizer stays while the canary drains; then weir lets go of the Deployment
/// and the finalizer goes.
#[tokio::test]
async fn deleting_a_rollout_hands_traffic_and_the_deployment_back_before_the_finalizer_goes() {
    let (ctx, mut handle) = mocked();
    let target = deployment("backend", "hello:0.4", true, json!({}));
    let revision = target_revision(&target);
    let analysing = status_of(State::Analysing {
        at: canary_at(&revision, 1, 50),
        started: jiff::Timestamp::now(),
        awaiting_mesh: false,
    });
    let mut deleted = rollout(Some(analysing));
    deleted.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    deleted.spec.scale_down_delay = Some("1s".into());
    let canary = ready_canary(&revision);
    let (t, c) = (target.clone(), canary.clone());
    let server = tokio::spawn(async move {
        expect_observation(&mut handle, &t, Some(&c), ok(virtual_service(50))).await;
        let status = expect_apply(&mut handle, STATUS, ok(Value::Null)).await;
        let patch = expect(
            &mut handle,
            Method::PATCH,
            &format!("{ISTIO}/virtualservices/backend"),
            ok(virtual_service(0)),
        )
        .await;
        expect_event(&mut handle, "Releasing").await;
        (handle, status, patch)
    });
    let err = controller::reconcile(Arc::new(deleted.clone()), ctx.clone())
        .await
        .expect_err("not released while the canary drains");
    assert!(matches!(err, weir::Error::NotReleasedYet(_)), "{err}");
    let (mut handle, status, patch) = server.await.unwrap();
    assert_eq!(status["status"]["phase"], "Deleting");
    assert_eq!(status["status"]["state"]["name"], "draining");
    assert_eq!(
        patch[2],
        json!({"op": "add", "path": "/spec/http/1/route/1/weight", "value": 0})
    );

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut drained = deleted;
    drained.status = with_status(&status).status;
    let (result, mut handle) = reconcile_while(ctx, drained, async move {
        expect_observation(&mut handle, &target, Some(&canary), ok(virtual_service(0))).await;
        let release = expect_apply(&mut handle, &format!("{DEPLOYMENTS}/backend"), ok(Value::Null)).await;
        assert_eq!(
            release,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "backend"}}),
            "an apply without spec.paused: weir owns nothing on the Deployment any more"
        );
        expect(
            &mut handle,
            Method::DELETE,
            &format!("{DEPLOYMENTS}/backend-canary"),
            ok(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})),
        )
        .await;
        expect_event(&mut handle, "Released").await;
        let finalizer = expect(
            &mut handle,
            Method::PATCH,
            "/apis/weir.dev/v1alpha1/namespaces/dev/rollouts/backend",
            ok(serde_json::to_value(rollout(None)).unwrap()),
        )
        .await;
        assert_eq!(finalizer[1], json!({"op": "remove", "path": "/metadata/finalizers/0"}));
        handle
    })
    .await;
    result.expect("released");
    assert!(no_request(&mut handle).await);
}

/// No request comes within 100 ms.
async fn no_request(handle: &mut Handle) -> bool {
    match tokio::time::timeout(std::time::Duration::from_millis(100), handle.next_request()).await {
        Err(_) => true,
        Ok(None) => true,
        Ok(Some((request, _))) => {
            eprintln!("unexpected request: {} {}", request.method(), request.uri());
            false
        }
    }
}

/// Step 1 at 10 %, as the engine itself would write it, with no look due for an hour
/// (Prometheus is not asked).
fn analysing_at_10(revision: &str) -> RolloutStatus {
    let now = jiff::Timestamp::now();
    let mut status = status_of(State::Analysing {
        at: canary_at(revision, 0, 10),
        started: now,
        awaiting_mesh: false,
    });
    status.step_display = Some("1/3".into());
    status.analysis = Some(weir::api::AnalysisStatus {
        next_check_at: Some((now + jiff::SignedDuration::from_hours(1)).to_string()),
        ..Default::default()
    });
    status
}

#[tokio::test]
async fn a_look_while_nothing_changed_reads_nothing_from_the_cluster() {
    let (ctx, mut handle) = mocked();
    let target = deployment("backend", "hello:0.4", true, json!({}));
    let revision = target_revision(&target);
    let canary = ready_canary(&revision);
    let status = analysing_at_10(&revision);
    assert_eq!(status.phase, Phase::Progressing);
    assert!(matches!(state_of(&status), State::Analysing { .. }));
    let rollout = Arc::new(rollout(Some(status)));
    let vs = virtual_service(10);

    // The first reconcile reads the cluster (nothing remembered yet) and writes nothing:
    // the status says what the cluster shows.
    let reconcile = tokio::spawn(controller::reconcile(rollout.clone(), ctx.clone()));
    expect_observation(&mut handle, &target, Some(&canary), ok(vs.clone())).await;
    reconcile.await.unwrap().expect("reconcile");
    assert!(no_request(&mut handle).await, "no write");
    // The next ones read nothing: the watches keep the objects current.
    for _ in 0..2 {
        let reconcile = tokio::spawn(controller::reconcile(rollout.clone(), ctx.clone()));
        assert!(
            no_request(&mut handle).await,
            "a look without changes reads the cluster"
        );
        reconcile.await.unwrap().expect("reconcile");
    }
    // The echo of an object weir holds wakes nothing; a newer version does.
    let mut canary: Deployment = serde_json::from_value(canary).unwrap();
    canary.metadata.resource_version = Some("7".into());
    assert!(watch_brings_canary(&ctx, &canary));
    assert!(!watch_brings_canary(&ctx, &canary), "the same version again");
    canary.metadata.resource_version = Some("6".into());
    assert!(!watch_brings_canary(&ctx, &canary), "a watch that lags is not news");
    // The canary lost its pods (a newer version the watch brought): the next look sees
    // it without reading the cluster, and holds the weight where it is, writing the
    // status that says so.
    canary.metadata.resource_version = Some("8".into());
    if let Some(st) = canary.status.as_mut() {
        st.available_replicas = Some(0);
    }
    assert!(watch_brings_canary(&ctx, &canary));
    let reconcile = tokio::spawn(controller::reconcile(rollout.clone(), ctx.clone()));
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), handle.next_request());
    let (request, _) = next.await.expect("a write within 5 s").expect("a write");
    assert_ne!(
        request.method(),
        Method::GET,
        "the change came from the watch, not a read"
    );
    drop(request);
    reconcile.abort();
    // A write met a conflict (a copy may be stale): the next reconcile reads.
    ctx.looks.conflicted("dev/backend");
    let reconcile = tokio::spawn(controller::reconcile(rollout.clone(), ctx.clone()));
    expect_observation(&mut handle, &target, Some(&ready_canary(&revision)), ok(vs.clone())).await;
    reconcile.abort();
}

/// A change the watch brings while a reconcile reads is not lost: the copies keep the
/// later version, whatever the read answered, and the next reconcile decides on it.
#[tokio::test]
async fn a_change_during_a_reconcile_is_not_lost() {
    let (ctx, mut handle) = mocked();
    let target = deployment("backend", "hello:0.4", true, json!({}));
    let revision = target_revision(&target);
    let mut canary = ready_canary(&revision);
    canary["metadata"]["resourceVersion"] = json!("5");
    let rollout = Arc::new(rollout(Some(analysing_at_10(&revision))));
    let vs = virtual_service(10);

    let reconcile = tokio::spawn(controller::reconcile(rollout.clone(), ctx.clone()));
    // The canary loses its pods while weir reads: the watch brings it between the
    // canary's read and the end of the reconcile.
    expect(
        &mut handle,
        Method::GET,
        &format!("{DEPLOYMENTS}/backend"),
        ok(target.clone()),
    )
    .await;
    expect(
        &mut handle,
        Method::GET,
        &format!("{DEPLOYMENTS}/backend-canary"),
        ok(canary.clone()),
    )
    .await;
    let mut changed: Deployment = serde_json::from_value(canary.clone()).unwrap();
    changed.metadata.resource_version = Some("9".into());
    if let Some(st) = changed.status.as_mut() {
        st.available_replicas = Some(0);
    }
    assert!(watch_brings_canary(&ctx, &changed));
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
        ok(vs.clone()),
    )
    .await;
    // The reconcile decided on the read (a ready canary: nothing to write).
    reconcile.await.unwrap().expect("reconcile");
    // The next one reads nothing, and sees the change the watch brought: it writes the
    // status that says the canary has no pods.
    let reconcile = tokio::spawn(controller::reconcile(rollout.clone(), ctx.clone()));
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), handle.next_request());
    let (request, _) = next.await.expect("a write within 5 s").expect("a write");
    assert_ne!(request.method(), Method::GET, "the later version, from the copies");
    drop(request);
    reconcile.abort();
}

/// The watch delivers weir's own status write later than the Deployment event its pause
/// causes: the reconcile that event wakes still gets the Rollout as it was before the
/// takeover. It must decide from what weir wrote, not take the paused Deployment over a
/// second time (as a "paused Deployment with a template change not rolled out").
#[tokio::test]
async fn a_reconcile_right_after_the_takeover_does_not_take_over_again() {
    let (ctx, mut handle) = mocked();
    let target = deployment("backend", "hello:0.3", false, json!({}));
    let paused = deployment("backend", "hello:0.3", true, json!({}));
    let revision = target_revision(&target);
    let before_takeover = Arc::new(rollout(None));

    let reconcile = tokio::spawn(controller::reconcile(before_takeover.clone(), ctx.clone()));
    expect_observation(&mut handle, &target, None, ok(virtual_service(0))).await;
    let written = expect_apply(&mut handle, STATUS, ok(Value::Null)).await;
    expect_apply(&mut handle, &format!("{DEPLOYMENTS}/backend"), ok(paused.clone())).await;
    expect_event(&mut handle, "Initialized").await;
    reconcile.await.unwrap().expect("takeover");
    assert_eq!(written["status"]["stableRevision"], json!(revision));

    // Woken by the pause, given the Rollout without the status weir just wrote. The
    // copies hold what weir read and wrote (the paused target, as the API server
    // answered); only the canary, not found, is read again: no watch here has listed
    // the Deployments, so nothing says it does not exist.
    let reconcile = tokio::spawn(controller::reconcile(before_takeover.clone(), ctx.clone()));
    expect_canary_not_found(&mut handle).await;
    assert!(no_request(&mut handle).await, "no second takeover");
    reconcile.await.unwrap().expect("reconcile on a stale copy");

    // The watch caught up: nothing to do.
    let caught_up = Arc::new(with_status(&written));
    let reconcile = tokio::spawn(controller::reconcile(caught_up.clone(), ctx.clone()));
    expect_canary_not_found(&mut handle).await;
    assert!(no_request(&mut handle).await, "nothing to write");
    reconcile.await.unwrap().expect("reconcile on the written status");

    // A Rollout at rest is not remembered once its status is stored: the next
    // reconcile starts from the stored status and writes nothing.
    let reconcile = tokio::spawn(controller::reconcile(caught_up, ctx.clone()));
    expect_canary_not_found(&mut handle).await;
    assert!(no_request(&mut handle).await, "nothing to write");
    reconcile.await.unwrap().expect("reconcile at rest");
}

/// Answers the read of a canary with "not found".
async fn expect_canary_not_found(handle: &mut Handle) {
    expect(
        handle,
        Method::GET,
        &format!("{DEPLOYMENTS}/backend-canary"),
        not_found(),
    )
    .await;
}

/// A bump of a Rollout with `spec.notify` queues a "canary started" notification after
/// the status that records the start was written; the receiver is a real HTTP server.
#[tokio::test]
async fn a_started_canary_is_notified_to_the_receivers_the_rollout_names() {
    let (tx, mut delivered) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let receivers = Receivers::from_yaml(&format!("receivers: [{{name: team, type: webhook, url: '{url}'}}]")).unwrap();
    let (ctx, mut handle) = mocked_with(receivers);

    let target = deployment("backend", "hello:0.4", true, json!({}));
    let revision = target_revision(&target);
    let mut bumped = rollout(Some(stable_on(&deployment("backend", "hello:0.3", true, json!({})))));
    bumped.spec.notify = vec!["team".into()];
    let reconcile = tokio::spawn(controller::reconcile(Arc::new(bumped), ctx));
    expect_observation(&mut handle, &target, None, ok(virtual_service(0))).await;
    expect_apply(&mut handle, STATUS, ok(Value::Null)).await;
    expect_apply(&mut handle, &format!("{DEPLOYMENTS}/backend-canary"), ok(Value::Null)).await;
    expect_event(&mut handle, "CanaryStarted").await;
    reconcile.await.unwrap().expect("reconcile");

    let got = tokio::time::timeout(std::time::Duration::from_secs(10), delivered.recv())
        .await
        .expect("delivered within 10 s")
        .expect("a notification");
    assert_eq!(got["kind"], "Started");
    assert_eq!(got["namespace"], "dev");
    assert_eq!(got["name"], "backend");
    assert_eq!(got["revision"], json!(revision));
    assert_eq!(got["step"], 1);
    assert_eq!(got["id"], json!(format!("6f1c-uid/{revision}/Started/1")));
}

/// Defence in depth: a reconcile that panics anyway (here an injected panic) is caught,
/// told on its Rollout (status message and a Warning Event), retried with a backoff that
/// doubles, and the next Rollout is reconciled as usual by the same controller.
#[tokio::test]
async fn a_panicking_reconcile_is_told_on_its_rollout_and_retried_with_backoff() {
    let (ctx, mut handle) = mocked();
    let r = Arc::new(rollout(None));
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let status = expect(
                &mut handle,
                Method::PATCH,
                "/apis/weir.dev/v1alpha1/namespaces/dev/rollouts/backend/status",
                ok(serde_json::to_value(rollout(None)).unwrap()),
            )
            .await;
            let message = status["status"]["message"].as_str().unwrap_or_default().to_string();
            assert!(message.contains("injected: steps[7]"), "{message}");
            let event = expect_event(&mut handle, "ReconcilePanicked").await;
            assert_eq!(event["type"], "Warning");
            assert!(event["note"].as_str().unwrap().contains("injected: steps[7]"));
        }
        handle
    });
    let mut retries = Vec::new();
    for _ in 0..2 {
        let work = async { panic!("injected: steps[7] is not there") };
        let error = controller::guarded(&ctx, &r, work)
            .await
            .expect_err("a panic is an error");
        let weir::Error::Panicked { retry, .. } = &error else {
            panic!("not a caught panic: {error}");
        };
        retries.push(*retry);
        let requeue = controller::error_policy(r.clone(), &error, ctx.clone());
        assert_eq!(requeue, kube::runtime::controller::Action::requeue(*retry));
    }
    assert!(retries[1] > retries[0], "the backoff grows: {retries:?}");
    let _handle = server.await.unwrap();
    // The same controller goes on: a Rollout that does not panic is decided as usual.
    let fine = controller::guarded(&ctx, &r, async {
        Ok(kube::runtime::controller::Action::await_change())
    })
    .await;
    assert!(fine.is_ok());
}

/// A deletion proves no traffic is left before the finalizer goes: a failed read (here
/// the VirtualService's GET answers 500) keeps the finalizer, says why in status and a
/// Warning Event, and is retried with a growing backoff; once the read shows weight 0 on
/// the canary, weir lets go.
#[tokio::test]
async fn a_deletion_whose_reads_fail_keeps_its_finalizer_until_a_fresh_read_shows_no_canary_traffic() {
    let (ctx, mut handle) = mocked();
    let target = deployment("backend", "hello:0.4", true, json!({}));
    let revision = target_revision(&target);
    let draining = status_of(State::Draining {
        stable: "rev-stable".into(),
        canary: revision.clone(),
        until: jiff::Timestamp::now(),
        outcome: weir_core::state::Outcome::Cancelled,
    });
    let mut deleted = rollout(Some(draining));
    deleted.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        jiff::Timestamp::now(),
    ));
    let canary = ready_canary(&revision);
    let (t, c) = (target.clone(), canary.clone());
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let broken = failure(500, "InternalError", "etcd timed out");
            expect_observation(&mut handle, &t, Some(&c), broken).await;
            let status = expect_apply(&mut handle, STATUS, ok(Value::Null)).await;
            let message = status["status"]["message"].as_str().unwrap_or_default().to_string();
            assert!(message.contains("keeps its finalizer"), "{message}");
            expect_event(&mut handle, "ReleaseWaiting").await;
        }
        handle
    });
    let mut retries = vec![];
    for _ in 0..2 {
        let err = controller::reconcile(Arc::new(deleted.clone()), ctx.clone())
            .await
            .expect_err("no release without a read");
        let weir::Error::NotReleasedYet(retry) = err else {
            panic!("{err}");
        };
        retries.push(retry);
    }
    assert!(retries[1] > retries[0], "the backoff grows: {retries:?}");
    let mut handle = server.await.unwrap();
    // The routes still send 30 % to the canary (a sync put it back): not yet released,
    // the weight goes to 0 (the drain test covers those writes).
    let (t, c) = (target.clone(), canary.clone());
    let server = tokio::spawn(async move {
        expect_observation(&mut handle, &t, Some(&c), ok(virtual_service(30))).await;
        let writes = answer_the_rest(&mut handle).await;
        (handle, writes)
    });
    let err = controller::reconcile(Arc::new(deleted.clone()), ctx.clone()).await;
    assert!(matches!(err, Err(weir::Error::NotReleasedYet(_))), "{err:?}");
    let (handle, writes) = server.await.unwrap();
    assert!(
        !writes.iter().any(|(m, _)| m == Method::DELETE),
        "nothing deleted while the canary has traffic: {writes:?}"
    );
    drop(handle);
    // Once a fresh read shows the canary's weight 0 (here after a restart, the drain
    // over), weir lets go.
    let (ctx, mut handle) = mocked();
    let server = tokio::spawn(async move {
        expect_observation(&mut handle, &target, Some(&canary), ok(virtual_service(0))).await;
        answer_the_rest(&mut handle).await
    });
    let released = controller::reconcile(Arc::new(deleted), ctx).await;
    let methods = server.await.unwrap();
    assert!(released.is_ok(), "{released:?} after {methods:?}");
    assert!(
        methods
            .iter()
            .any(|(m, p)| m == Method::DELETE && p.ends_with("backend-canary")),
        "{methods:?}"
    );
}

/// Answers every request that comes within 300 ms of the one before (a Rollout's body for
/// its patches, `{}` otherwise); returns their methods and paths.
async fn answer_the_rest(handle: &mut Handle) -> Vec<(Method, String)> {
    let mut seen = vec![];
    while let Ok(Some((request, send))) =
        tokio::time::timeout(std::time::Duration::from_millis(300), handle.next_request()).await
    {
        seen.push((request.method().clone(), request.uri().path().to_string()));
        let body = match request.method() {
            &Method::PATCH if request.uri().path().contains("/rollouts/") => {
                serde_json::to_vec(&rollout(None)).unwrap()
            }
            _ => b"{}".to_vec(),
        };
        send.send_response(Response::builder().status(200).body(Body::from(body)).unwrap());
    }
    seen
}
