//! Notifications: the decisions a person acts on (a canary started, rolled back,
//! promoted, held by a release window, analysis failing) sent to Slack, Microsoft Teams
//! or a signed JSON webhook. Receivers are declared by the cluster admin
//! (`weir controller --notifications FILE`, a key of the ConfigMap in `config/`), their
//! URLs read from Secrets in weir's own namespace; a Rollout only names receivers
//! (`spec.notify`).
//!
//! The receivers are the admin's (`admin::receivers`).
//!
//! Sending never delays a rollout: a reconcile only queues (and drops with a warning
//! when a receiver's queue is full); deliveries run on their own tasks, a few at a time
//! per receiver, retried with backoff within a bounded time, so a receiver that is down
//! delays only its own notifications. Each notification follows a transition the
//! engine records in the status before it is told (see `Decision::writes`), so a
//! restart does not repeat it; its `X-Weir-Delivery` id is the same on every retry, for
//! receivers that dedupe.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::{info, warn};

pub use crate::admin::receivers::{Format, Kind, Receiver, Receivers, Url};
use crate::edges::outbound::{self, Failed};
use crate::fair::{FairQueue, FairSlots, Ticket};
use crate::telemetry::{CallLabels, Calls};

/// Deliveries queued for one receiver and not yet ended; more are dropped (with a warning).
const QUEUE: usize = 256;
/// Of those, the deliveries of one namespace's Rollouts (`crate::fair`): a tenant's
/// flood fills its own share, never the other tenants'.
const QUEUE_PER_NAMESPACE: usize = 32;
/// Deliveries in flight at once to one receiver, and of one namespace.
const IN_FLIGHT: usize = 4;
const IN_FLIGHT_PER_NAMESPACE: usize = 2;
/// One attempt: connect, send, answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts after the first: with 5 s per attempt and the backoff (1, 2, 4, 8, 16 s) a
/// delivery ends within about a minute.
const RETRIES: usize = 5;

/// One notification: what happened to which Rollout.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// The same on every attempt: `uid/revision/kind/step`.
    pub id: String,
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub revision: Option<String>,
    pub step: Option<u32>,
    /// The engine's words, with the evidence (metric, value, bound, Λ) on a rollback.
    pub message: String,
    pub at: String,
}

impl Notification {
    /// The body for a receiver's format.
    pub fn body(&self, format: Format) -> Value {
        let title = format!("weir: {}/{} {}", self.namespace, self.name, self.kind.verb());
        match format {
            Format::Slack => json!({"text": format!("*{}*\n{}", slack_text(&title), slack_text(&self.message))}),
            Format::Teams => json!({
                "@type": "MessageCard",
                "@context": "https://schema.org/extensions",
                "summary": title,
                "themeColor": self.kind.colour(),
                "title": teams_text(&title),
                "text": teams_text(&self.message),
            }),
            Format::Webhook => json!(self),
        }
    }
}

/// Text as Slack's mrkdwn shows it and nothing more: `&`, `<` and `>` escaped as Slack
/// asks, so no part of a message (a webhook's answer, a metric's value) can become a
/// mention (`<!channel>`), a link (`<https://…|approve>`) or a user ping.
pub fn slack_text(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Text as Teams' markdown shows it and nothing more: HTML's `&`, `<`, `>` as entities,
/// every markdown mark escaped with a backslash (no link, emphasis, heading or list can
/// be written in through a message).
pub fn teams_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '!' | '|' | '~' | '{' | '}' | '+' | '-' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `key`: the `X-Weir-Signature`
/// header of a webhook. A receiver computes the same over the raw body to verify it.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

struct Job {
    receiver: Receiver,
    notification: Notification,
}

/// The reconciles' side of delivery: queues and returns at once.
#[derive(Clone)]
pub struct Notifier {
    receivers: Arc<Receivers>,
    lanes: Arc<BTreeMap<String, Lane>>,
    sender: Arc<Sender>,
    /// Deliveries by kind and result (delivered, failed, dropped).
    counts: Calls,
}

/// One receiver's share: its deliveries in flight and queued, shared fairly between
/// namespaces.
struct Lane {
    in_flight: Arc<FairSlots>,
    queue: FairQueue,
}

impl Notifier {
    /// Starts the delivery task. `client` reads receivers' Secrets in `secrets_namespace`.
    pub fn start(receivers: Receivers, client: Option<Client>, secrets_namespace: String) -> Notifier {
        let lanes = receivers
            .names()
            .map(|name| {
                let lane = Lane {
                    in_flight: Arc::new(FairSlots::new(IN_FLIGHT, IN_FLIGHT_PER_NAMESPACE)),
                    queue: FairQueue::new(QUEUE, QUEUE_PER_NAMESPACE),
                };
                (name.clone(), lane)
            })
            .collect();
        let sender = Sender {
            http: outbound::client(Some(ATTEMPT_TIMEOUT)),
            client,
            secrets_namespace,
            backoff: ExponentialBuilder::default()
                .with_min_delay(Duration::from_secs(1))
                .with_max_delay(Duration::from_secs(30))
                .with_max_times(RETRIES),
        };
        Notifier {
            receivers: Arc::new(receivers),
            lanes: Arc::new(lanes),
            sender: Arc::new(sender),
            counts: Calls::default(),
        }
    }

    /// Counts deliveries into `counts` (weir's `/metrics`).
    pub fn with_counts(self, counts: Calls) -> Notifier {
        Notifier { counts, ..self }
    }

    fn count(counts: &Calls, kind: Kind, result: &str) {
        let labels = CallLabels {
            kind: format!("{kind:?}"),
            result: result.into(),
        };
        counts.get_or_create(&labels).inc();
    }

    /// Queues `notification` for each of `names` that wants its kind. Never waits.
    pub fn send(&self, names: &[String], notification: &Notification) {
        for name in names {
            let (Some(receiver), Some(lane)) = (self.receivers.get(name), self.lanes.get(name)) else {
                continue;
            };
            // Admission refused a receiver out of scope; checked again here, since the
            // admin's file may have changed under a canary already running.
            if !receiver.on.contains(&notification.kind) || !receiver.namespaces.allows(&notification.namespace) {
                continue;
            }
            let Some(ticket) = lane.queue.enter(&notification.namespace) else {
                warn!(receiver = %name, id = %notification.id, namespace = %notification.namespace,
                    "notification queue full (this namespace's share or the whole): dropped");
                Notifier::count(&self.counts, notification.kind, "dropped");
                continue;
            };
            let job = Job {
                receiver: receiver.clone(),
                notification: notification.clone(),
            };
            tokio::spawn(deliver(
                self.sender.clone(),
                (lane.in_flight.clone(), ticket),
                self.counts.clone(),
                job,
            ));
        }
    }
}

/// One delivery, when its receiver has a slot free.
async fn deliver(sender: Arc<Sender>, (in_flight, _ticket): (Arc<FairSlots>, Ticket), counts: Calls, job: Job) {
    if let Some(_slot) = in_flight.acquire(&job.notification.namespace).await {
        let kind = job.notification.kind;
        match sender.deliver(&job).await {
            Ok(()) => {
                info!(receiver = %job.receiver.name, id = %job.notification.id, "notification delivered");
                Notifier::count(&counts, kind, "delivered");
            }
            Err(e) => {
                warn!(receiver = %job.receiver.name, id = %job.notification.id, %e, "notification not delivered");
                Notifier::count(&counts, kind, "failed");
            }
        }
    }
}

/// What deliveries share: the HTTP client, the Secrets' client and the backoff.
struct Sender {
    http: reqwest::Client,
    client: Option<Client>,
    secrets_namespace: String,
    backoff: ExponentialBuilder,
}

impl Sender {
    async fn deliver(&self, job: &Job) -> Result<(), String> {
        let url = self.url(&job.receiver).await?;
        let key = match &job.receiver.signing_secret {
            Some(secret) => Some(self.secret_key(secret, "key").await?),
            None => None,
        };
        let body = serde_json::to_vec(&job.notification.body(job.receiver.format)).map_err(|e| e.to_string())?;
        let attempt = || self.attempt(&url, &body, key.as_deref(), &job.notification.id);
        attempt.retry(self.backoff).when(|e| e.retry).await.map_err(|e| e.why)
    }

    async fn attempt(&self, url: &str, body: &[u8], key: Option<&[u8]>, id: &str) -> Result<(), Failed> {
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-weir-delivery", id)
            .body(body.to_vec());
        if let Some(key) = key {
            request = request.header("x-weir-signature", signature(key, body));
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failed::retry(outbound::describe(&e, ATTEMPT_TIMEOUT)))?;
        let code = response.status();
        outbound::answered(code, "receiver")?;
        match code.is_success() {
            true => Ok(()),
            false => Err(Failed {
                why: format!("receiver answered {code}"),
                retry: false,
            }),
        }
    }

    async fn url(&self, receiver: &Receiver) -> Result<String, String> {
        match &receiver.url {
            Url::Literal(url) => Ok(url.clone()),
            Url::Secret(name) => {
                let bytes = self.secret_key(name, "url").await?;
                String::from_utf8(bytes).map_err(|_| format!("Secret {name}: key url is not text"))
            }
        }
    }

    async fn secret_key(&self, name: &str, key: &str) -> Result<Vec<u8>, String> {
        let client = self.client.clone().ok_or("no Kubernetes client to read Secrets")?;
        let ns = &self.secrets_namespace;
        let secret = Api::<Secret>::namespaced(client, ns)
            .get_opt(name)
            .await
            .map_err(|e| format!("Secret {ns}/{name}: {e}"))?
            .ok_or_else(|| format!("Secret {ns}/{name} not found"))?;
        secret
            .data
            .and_then(|mut d| d.remove(key))
            .map(|b| b.0)
            .ok_or_else(|| format!("Secret {ns}/{name} has no key {key}"))
    }
}
