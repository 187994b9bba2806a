//! Notifications delivered to real HTTP receivers on loopback: the body each format
//! expects, the webhook's signature (key read from a Secret, answered by kube's
//! tower-test mock), retries on 5xx, no retry on 4xx, and a receiver that never answers
//! delaying neither the caller nor the other receivers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir::vocabulary::Reason;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use weir::edges::notify::{Format, Kind, Notification, Notifier, Receivers, signature};

/// What a receiver got, and how it answers the next requests (200 once the script ends;
/// `None` in the script: never answer).
#[derive(Clone, Default)]
struct Inbox {
    got: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    script: Arc<Mutex<VecDeque<Option<u16>>>>,
}

impl Inbox {
    fn received(&self) -> Vec<(HeaderMap, Value)> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests came (at most 20 s).
    async fn wait_for(&self, n: usize) -> Vec<(HeaderMap, Value)> {
        for _ in 0..400 {
            if self.received().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.received()
    }
}

async fn receive(State(inbox): State<Inbox>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut headers = headers;
    // Kept to check the signature over the exact bytes.
    headers.insert("x-test-raw", axum::http::HeaderValue::from_bytes(&body).unwrap());
    inbox.got.lock().unwrap().push((headers, value));
    let next = inbox.script.lock().unwrap().pop_front();
    match next {
        Some(None) => std::future::pending().await,
        Some(Some(code)) => StatusCode::from_u16(code).unwrap(),
        None => StatusCode::OK,
    }
}

/// A receiver on a loopback port, answering per `script`; stops with the test's runtime.
async fn receiver(script: Vec<Option<u16>>) -> (String, Inbox) {
    let inbox = Inbox::default();
    inbox.script.lock().unwrap().extend(script);
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, inbox)
}

fn rolled_back() -> Notification {
    Notification {
        id: "6f1c-uid/5d8f/RolledBack/2".into(),
        kind: Kind::RolledBack,
        namespace: "apps".into(),
        name: "backend".into(),
        revision: Some("5d8f".into()),
        step: Some(2),
        message: "rolled back revision 5d8f at step 2/4 (25%): request-success-rate 97.1 < 99 (Λ 25.3 ≥ 20)".into(),
        at: "2026-11-28T03:12:00Z".into(),
    }
}

/// A kube client whose API server answers every read of Secret `hook-key` in weir's
/// namespace with an HMAC key.
fn secrets_api() -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            assert_eq!(request.uri().path(), "/api/v1/namespaces/weir-system/secrets/hook-key");
            let secret = json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "hook-key", "namespace": "weir-system"},
                "data": {"key": "czNjcjN0"}}); // "s3cr3t"
            send.send_response(Response::new(Body::from(serde_json::to_vec(&secret).unwrap())));
        }
    });
    Client::new(service, "weir-system")
}

fn receivers(yaml: &str) -> Receivers {
    Receivers::from_yaml(yaml).expect("a valid notifications file")
}

#[tokio::test]
async fn a_webhook_gets_signed_json_retried_after_5xx_with_one_delivery_id() {
    let (url, inbox) = receiver(vec![Some(503), Some(500)]).await;
    let file = format!("receivers:\n- {{name: audit, type: webhook, url: '{url}', signingSecret: hook-key}}\n");
    let notifier = Notifier::start(receivers(&file), Some(secrets_api()), "weir-system".into());
    notifier.send(&["audit".into()], &rolled_back());

    let got = inbox.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        inbox.received().len(),
        3,
        "two failures, then one delivery, nothing after"
    );
    for (headers, body) in &got {
        assert_eq!(headers["x-weir-delivery"], "6f1c-uid/5d8f/RolledBack/2");
        let raw = headers["x-test-raw"].as_bytes();
        assert_eq!(headers["x-weir-signature"], signature(b"s3cr3t", raw).as_str());
        assert_eq!(body["kind"], "RolledBack");
        assert_eq!(body["namespace"], "apps");
        assert_eq!(body["name"], "backend");
        assert_eq!(body["step"], 2);
        assert!(body["message"].as_str().unwrap().contains("Λ 25.3"), "{body}");
    }
}

#[tokio::test]
async fn slack_and_teams_get_their_own_bodies_and_only_the_kinds_they_want() {
    let (slack_url, slack) = receiver(vec![]).await;
    let (teams_url, teams) = receiver(vec![]).await;
    let file = format!(
        "receivers:\n- {{name: slack, type: slack, url: '{slack_url}'}}\n- {{name: teams, type: teams, url: '{teams_url}', on: [Promoted]}}\n"
    );
    let notifier = Notifier::start(receivers(&file), None, "weir-system".into());
    let names = ["slack".to_string(), "teams".to_string()];
    notifier.send(&names, &rolled_back());
    let promoted = Notification {
        kind: Kind::Promoted,
        id: "6f1c-uid/5d8f/Promoted/4".into(),
        message: "promoted revision 5d8f".into(),
        ..rolled_back()
    };
    notifier.send(&names, &promoted);

    let got = slack.wait_for(2).await;
    let texts: Vec<&str> = got.iter().map(|(_, b)| b["text"].as_str().unwrap()).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("*weir: apps/backend rolled back*\n")),
        "{texts:?}"
    );
    assert!(texts.iter().any(|t| t.contains("promoted revision 5d8f")), "{texts:?}");

    let got = teams.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(teams.received().len(), 1, "teams wants promotions only");
    let card = &got[0].1;
    assert_eq!(card["@type"], "MessageCard");
    assert_eq!(card["title"], "weir: apps/backend promoted");
    assert_eq!(card["text"], "promoted revision 5d8f");
}

/// A tenant writes what it can into a message (a webhook's answer, say) to ping and phish
/// the channel: each receiver shows it as text.
#[test]
fn a_message_cannot_mention_link_or_format_in_slack_or_teams() {
    let hostile = Notification {
        message: "confirm-step answered 403: <!channel> <https://evil.example|approve> **[approve](https://evil.example)** & # go".into(),
        ..rolled_back()
    };
    let slack = hostile.body(Format::Slack)["text"].as_str().unwrap().to_string();
    assert!(!slack.contains("<!channel>") && !slack.contains("<https:"), "{slack}");
    assert!(
        slack.contains("&lt;!channel&gt; &lt;https://evil.example|approve&gt;") && slack.contains("&amp;"),
        "{slack}"
    );
    let teams = hostile.body(Format::Teams)["text"].as_str().unwrap().to_string();
    assert!(
        !teams.contains("[approve](") && !teams.contains("**") && !teams.contains("<!"),
        "{teams}"
    );
    assert!(
        teams.contains(r"\*\*\[approve\]\(https://evil.example\)\*\*"),
        "{teams}"
    );
}

#[tokio::test]
async fn a_4xx_is_final_and_not_retried() {
    let (url, inbox) = receiver(vec![Some(404)]).await;
    let file = format!("receivers:\n- {{name: gone, type: slack, url: '{url}'}}\n");
    let notifier = Notifier::start(receivers(&file), None, "weir-system".into());
    notifier.send(&["gone".into()], &rolled_back());
    inbox.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(inbox.received().len(), 1);
}

#[tokio::test]
async fn a_receiver_that_never_answers_delays_neither_the_sender_nor_other_receivers() {
    let (stuck_url, stuck) = receiver(vec![None; 200]).await;
    let (ok_url, ok) = receiver(vec![]).await;
    let file = format!(
        "receivers:\n- {{name: stuck, type: webhook, url: '{stuck_url}'}}\n- {{name: ok, type: webhook, url: '{ok_url}'}}\n"
    );
    let notifier = Notifier::start(receivers(&file), None, "weir-system".into());
    // Many at once, more than the deliveries in flight: sending only queues.
    for i in 0..20 {
        let n = Notification {
            id: format!("id-{i}"),
            ..rolled_back()
        };
        notifier.send(&["stuck".into()], &n);
    }
    notifier.send(&["ok".into()], &rolled_back());
    assert!(!stuck.wait_for(1).await.is_empty());
    let got = ok.wait_for(1).await;
    assert_eq!(
        got.len(),
        1,
        "the healthy receiver got its notification while the other hung"
    );
}

#[test]
fn a_bad_notifications_file_or_name_is_refused_with_its_field() {
    let cases = [
        (
            "receivers: [{name: a, type: slack}]",
            "receivers[0].url: expected exactly one of url and urlSecret",
        ),
        (
            "receivers: [{name: a, type: pager, url: 'http://x'}]",
            "receivers[0].type",
        ),
        (
            "receivers: [{name: a, type: slack, url: 'ftp://x'}]",
            "receivers[0].url: expected an http",
        ),
        (
            "receivers: [{name: a, type: slack, url: 'http://x', signingSecret: k}]",
            "receivers[0].signingSecret: only a webhook",
        ),
        (
            "receivers: [{name: a, type: slack, url: 'http://x', on: [Sometimes]}]",
            "receivers[0].on[0]",
        ),
        (
            "receivers: [{name: a, type: slack, url: 'http://x'}, {name: a, type: teams, url: 'http://y'}]",
            "receivers[1].name: \"a\" is declared twice",
        ),
    ];
    for (file, expected) in cases {
        let err = Receivers::from_yaml(file)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(expected), "{file}: {err:?} should contain {expected:?}");
    }
    let declared = receivers("receivers: [{name: team-slack, type: slack, urlSecret: slack-hook}]");
    assert_eq!(declared.check("apps", &["team-slack".into()]), Ok(()));
    assert_eq!(
        declared
            .check("apps", &["team-slack".into(), "pager".into()])
            .map_err(|e| e.to_string()),
        Err("spec.notify[1]: \"pager\" is not a receiver the cluster admin declared (declared: team-slack)".into())
    );
}

#[test]
fn the_events_a_person_acts_on_make_notifications_and_no_others() {
    let cases = [
        (Reason::CanaryStarted, Some(Kind::Started)),
        (Reason::RolledBack, Some(Kind::RolledBack)),
        (Reason::Promoted, Some(Kind::Promoted)),
        (Reason::WaitingForWindow, Some(Kind::Waiting)),
        (Reason::WaitingForConfirmation, Some(Kind::Waiting)),
        (Reason::DeadlineNear, Some(Kind::Stuck)),
        (Reason::WaitingForPods, Some(Kind::Stuck)),
        (Reason::PromotionStalled, Some(Kind::Stuck)),
        (Reason::AnalysisError, Some(Kind::AnalysisError)),
        (Reason::StepStarted, None),
        (Reason::StepPassed, None),
        (Reason::WebhookHolds, None),
    ];
    for (reason, kind) in cases {
        assert_eq!(Kind::of_event(reason), kind, "{reason}");
    }
}
