//! Webhook gates, the controller's side, against a real HTTP service on loopback that
//! answers yes, no, slowly, not at all, first with a 503, or with a huge body: the
//! answer each becomes, the body weir sends, one call per question, the Rollout woken
//! when an answer comes, and the admin's allow list of addresses.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use futures::StreamExt;
use serde_json::Value;
use weir::api::Rollout;
use weir::edges::webhooks::{WebhookPolicy, Webhooks};
use weir::telemetry::{CallLabels, Calls};
use weir_core::hooks::{HookAnswer, HookCall, HookKey, HookPlan, Reply};
use weir_core::spec::{FailurePolicy, WebhookKind};

/// What the service got: (path, body), and how many times each path was called.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, Value)>>>);

impl Seen {
    fn calls(&self, path: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|(p, _)| p == path).count()
    }
}

async fn gate(State(seen): State<Seen>, Path(path): Path<String>, body: Bytes) -> (StatusCode, String) {
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let before = seen.calls(&path);
    seen.0.lock().unwrap().push((path.clone(), value));
    match path.as_str() {
        "yes" => (StatusCode::OK, "go ahead".into()),
        "no" => (StatusCode::FORBIDDEN, "smoke test failed: 3 of 10 checks".into()),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            (StatusCode::OK, "took a while".into())
        }
        "never" => std::future::pending().await,
        "flaky" if before == 0 => (StatusCode::SERVICE_UNAVAILABLE, "warming up".into()),
        "flaky" => (StatusCode::OK, String::new()),
        "huge" => (StatusCode::OK, "x".repeat(2 << 20)),
        _ => (StatusCode::NOT_FOUND, String::new()),
    }
}

async fn service() -> (String, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/{path}", axum::routing::post(gate))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

fn rollout() -> Rollout {
    let spec = serde_saphyr::from_str(
        "{targetRef: {kind: Deployment, name: backend}, trafficRouting: {istio: {virtualService: {name: backend}, hosts: {stableService: a, canaryService: b}}}, steps: [{weight: 10}], analysis: {metrics: [{name: request-success-rate, min: 99}]}}",
    )
    .unwrap();
    let mut r = Rollout::new("backend", spec);
    r.metadata.namespace = Some("apps".into());
    r
}

fn call(url: &str, hook: &str, timeout: Duration, retries: u32) -> HookCall {
    HookCall {
        key: HookKey {
            hook: hook.into(),
            revision: "5d8f".into(),
            step: 1,
            round: 0,
        },
        kind: WebhookKind::PreRollout,
        url: url.into(),
        timeout,
        retries,
        metadata: BTreeMap::from([("cmd".to_string(), "hey -z 10s http://backend-canary/".to_string())]),
        outcome: None,
    }
}

/// Asks `calls` and waits (at most 30 s) for all of their answers.
async fn answers(hooks: &Webhooks, calls: &[HookCall]) -> Vec<HookAnswer> {
    hooks.ask(&rollout(), calls);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = hooks.answers("apps/backend");
        if got.len() == calls.len() || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn of<'a>(answers: &'a [HookAnswer], hook: &str) -> &'a HookAnswer {
    answers.iter().find(|a| a.key.hook == hook).unwrap()
}

#[tokio::test]
async fn yes_no_slow_silent_and_flaky_webhooks_each_get_their_answer() {
    let (base, seen) = service().await;
    let (hooks, _woken) = Webhooks::start(allowing(&base));
    let counts = Calls::default();
    let hooks = hooks.with_counts(counts.clone());
    let second = Duration::from_secs(1);
    let calls = [
        call(&format!("{base}/yes"), "yes", 5 * second, 0),
        call(&format!("{base}/no"), "no", 5 * second, 2),
        call(&format!("{base}/slow"), "slow", 5 * second, 0),
        call(&format!("{base}/never"), "never", second, 1),
        call(&format!("{base}/flaky"), "flaky", 5 * second, 2),
        call(&format!("{base}/huge"), "huge", 5 * second, 0),
    ];
    let started = Instant::now();
    let got = answers(&hooks, &calls).await;
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(of(&got, "yes").reply, Reply::Yes);
    assert_eq!(of(&got, "yes").detail, "answered 200 OK: go ahead");
    let no = of(&got, "no");
    assert_eq!((no.reply, no.attempts), (Reply::No, 1), "a no is final: not retried");
    assert!(no.detail.contains("403 Forbidden: smoke test failed"), "{}", no.detail);
    assert_eq!(of(&got, "slow").reply, Reply::Yes, "slow but within its timeout");
    let never = of(&got, "never");
    assert_eq!((never.reply, never.attempts), (Reply::NoAnswer, 2));
    assert!(never.detail.contains("no answer within 1s"), "{}", never.detail);
    let flaky = of(&got, "flaky");
    assert_eq!((flaky.reply, flaky.attempts), (Reply::Yes, 2), "a 503 is retried");
    assert!(of(&got, "huge").detail.len() < 300, "the body is cut short");
    let counted = |result: &str| {
        let labels = CallLabels {
            kind: "pre-rollout".into(),
            result: result.into(),
        };
        counts.get_or_create(&labels).get()
    };
    assert_eq!(
        (counted("Yes"), counted("No"), counted("NoAnswer")),
        (4, 1, 1),
        "weir_webhook_calls_total"
    );
    // Two attempts of 1 s and one backoff of about 1 s: bounded, whatever the service does.
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let bodies = seen.0.lock().unwrap().clone();
    let (_, body) = bodies.iter().find(|(p, _)| p == "yes").unwrap();
    assert_eq!(body["name"], "backend");
    assert_eq!(body["namespace"], "apps");
    assert_eq!(body["webhook"], "yes");
    assert_eq!(body["type"], "pre-rollout");
    assert_eq!(body["revision"], "5d8f");
    assert_eq!(body["step"], 1);
    assert_eq!(body["metadata"]["cmd"], "hey -z 10s http://backend-canary/");
}

#[tokio::test]
async fn a_question_is_asked_once_and_its_answer_wakes_the_rollout() {
    let (base, seen) = service().await;
    let (hooks, mut woken) = Webhooks::start(allowing(&base));
    let ask = call(&format!("{base}/slow"), "slow", Duration::from_secs(5), 0);
    hooks.ask(&rollout(), std::slice::from_ref(&ask));
    hooks.ask(&rollout(), std::slice::from_ref(&ask));
    assert!(
        hooks.answers("apps/backend").is_empty(),
        "the ask never waits for the call"
    );
    let woke = tokio::time::timeout(Duration::from_secs(10), woken.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (woke.name.as_str(), woke.namespace.as_deref()),
        ("backend", Some("apps"))
    );
    hooks.ask(&rollout(), std::slice::from_ref(&ask));
    assert_eq!(seen.calls("slow"), 1, "the same question is asked once");
    assert_eq!(hooks.answers("apps/backend").len(), 1);
    // A new round is a new question; the older answer is forgotten.
    let again = HookCall {
        key: HookKey {
            round: 1,
            ..ask.key.clone()
        },
        ..ask
    };
    hooks.ask(&rollout(), &[again]);
    assert!(hooks.answers("apps/backend").is_empty());
    hooks.forget("apps/backend");
}

fn hook(url: &str) -> HookPlan {
    HookPlan {
        name: "smoke".into(),
        kind: WebhookKind::PreRollout,
        url: url.into(),
        timeout: Duration::from_secs(5),
        retries: 0,
        on_failure: FailurePolicy::Rollback,
        metadata: BTreeMap::new(),
    }
}

#[test]
fn a_rollout_calls_only_what_the_admin_allowed() {
    let default = WebhookPolicy::default();
    for ok in [
        "http://smoke.apps.svc:8080/run",
        "https://smoke.apps.svc.cluster.local/",
        "http://SMOKE.apps.svc/",
    ] {
        assert_eq!(default.check("apps", &[hook(ok)]), Ok(()), "{ok}");
    }
    for refused in [
        "http://smoke.other.svc/",
        "http://smoke/",
        "http://smoke.apps/",
        "http://169.254.169.254/latest/meta-data",
        "http://smoke.apps.svc.evil.example/",
    ] {
        let e = default.check("apps", &[hook(refused)]).unwrap_err();
        assert!(
            e.field == "webhooks[0].url" && e.problem.contains("not an address the cluster admin allowed"),
            "{refused}: {e}"
        );
    }
    let admin = WebhookPolicy::from_yaml(
        "ownNamespaceServices: false\nallowedUrls: [\"http://loadtester.tools.svc:8080/gate/\"]",
    )
    .unwrap();
    assert_eq!(
        admin.check("apps", &[hook("http://loadtester.tools.svc:8080/gate/smoke")]),
        Ok(())
    );
    for refused in [
        "http://loadtester.tools.svc:8080/other",
        "http://loadtester.tools.svc:9090/gate/",
        "https://loadtester.tools.svc:8080/gate/",
        "http://smoke.apps.svc/",
    ] {
        assert!(admin.check("apps", &[hook(refused)]).is_err(), "{refused}");
    }
    let e = WebhookPolicy::from_yaml("allowedUrls: [\"ftp://x/\"]")
        .unwrap_err()
        .to_string();
    assert!(e.contains("webhooks file: allowedUrls[0]"), "{e}");
    let e = WebhookPolicy::from_yaml("allowed: []").unwrap_err().to_string();
    assert!(e.contains("unknown field `allowed`"), "{e}");
}

fn rollout_in(namespace: &str, name: &str) -> Rollout {
    let mut r = rollout();
    r.metadata.namespace = Some(namespace.into());
    r.metadata.name = Some(name.into());
    r
}

/// One hostile namespace: 8 Rollouts with 4 rollback hooks each that accept and never
/// answer, asked anew every round (as at the shortest interval). Superseded calls are
/// cancelled (the namespace never holds more than its 8 slots, its tasks do not pile
/// up), and another namespace's gate is answered at once beside them.
#[tokio::test]
async fn a_namespace_of_silent_hooks_holds_its_share_only_and_others_are_answered_at_once() {
    let (base, seen) = service().await;
    let (hooks, _woken) = Webhooks::start(allowing(&base));
    let never = |hook: &str, round: u32| {
        let mut c = call(&format!("{base}/never"), hook, Duration::from_secs(60), 5);
        c.kind = WebhookKind::Rollback;
        c.key.round = round;
        c
    };
    let hostile: Vec<Rollout> = (0..8).map(|i| rollout_in("hostile", &format!("r{i}"))).collect();
    for round in 0..20 {
        for r in &hostile {
            let asks: Vec<HookCall> = (0..4).map(|h| never(&format!("kill-{h}"), round)).collect();
            hooks.ask(r, &asks);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hooks.in_flight("hostile"), 8, "the namespace holds its share, no more");
    // 32 hooks asked 20 times: at most 8 calls reached the service at once per round,
    // and the superseded ones were cancelled instead of waiting for a slot.
    assert!(seen.calls("never") <= 8 * 20, "{} calls", seen.calls("never"));
    let started = Instant::now();
    let friendly = rollout_in("friendly", "backend");
    hooks.ask(
        &friendly,
        &[call(&format!("{base}/yes"), "smoke", Duration::from_secs(5), 0)],
    );
    let answered = loop {
        if let Some(a) = hooks.answers("friendly/backend").first().cloned() {
            break a;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "another namespace waited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(answered.reply, Reply::Yes);
    eprintln!(
        "fairness: another namespace's gate answered in {:?} beside 32 silent rollback hooks",
        started.elapsed()
    );
    for r in &hostile {
        hooks.forget(&format!("hostile/{}", r.metadata.name.as_deref().unwrap_or_default()));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(hooks.in_flight("hostile"), 0, "forgetting cancels the calls in flight");
}

/// The admin's policy allowing the local test service (every call is checked against
/// the policy again when it is made).
fn allowing(base: &str) -> WebhookPolicy {
    WebhookPolicy::from_yaml(&format!("allowedUrls: [\"{base}/\"]")).expect("a valid webhooks file")
}
