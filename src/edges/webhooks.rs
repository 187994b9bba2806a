//! Webhook gates, the controller's side: the addresses a Rollout may call (the cluster
//! admin's allow list) and the calls themselves. The engine lists the calls it waits for
//! (`Decision::asks`); each is made once, in the background, so a slow or silent webhook
//! never delays a reconcile (a bad canary is still rolled back while a gate is asked);
//! its answer is kept in memory and wakes the Rollout's reconcile, which hands it to the
//! engine (`World::hook_answers`). A restart forgets calls in flight; the engine asks
//! again.
//!
//! The admin's file (`--webhooks`, ConfigMap key `webhooks.yaml`):
//! ```yaml
//! ownNamespaceServices: true      # default: http(s)://<svc>.<rollout's namespace>.svc[.cluster.local][:port]/
//! allowedUrls:                    # and these prefixes (scheme, host and port exact, path a prefix)
//!   - http://flagger-loadtester.test.svc:8080/
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures::future::{AbortHandle, abortable};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use weir_core::hooks::{HookAnswer, HookCall, HookKey, HookPlan, Reply, UrlParts, url_parts};
use weir_core::spec::SpecError;

use crate::api::Rollout;
use crate::edges::outbound::{self, Failed};
use crate::fair::FairSlots;
use crate::telemetry::{CallLabels, Calls};

/// Calls in flight at once over all Rollouts; more wait for a slot (each is bounded in
/// time, so the wait is too).
const IN_FLIGHT: usize = 32;
/// Calls in flight at once for the Rollouts of one namespace (`crate::fair`): a tenant
/// whose hooks never answer holds these, never the other tenants' 24.
const IN_FLIGHT_PER_NAMESPACE: usize = 8;
/// The part of an answer's body kept as its detail.
const DETAIL_BYTES: usize = 256;

/// Which addresses a Rollout's webhooks may call.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookPolicy {
    own_namespace_services: bool,
    allowed: Vec<UrlParts>,
}

impl Default for WebhookPolicy {
    fn default() -> Self {
        WebhookPolicy {
            own_namespace_services: true,
            allowed: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyFile {
    #[serde(default = "yes")]
    own_namespace_services: bool,
    #[serde(default)]
    allowed_urls: Vec<String>,
}

fn yes() -> bool {
    true
}

impl WebhookPolicy {
    pub fn from_yaml(text: &str) -> crate::Result<WebhookPolicy> {
        let file: PolicyFile = crate::read_admin_file("webhooks file", text)?;
        let allowed = file
            .allowed_urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                url_parts(url).map_err(|e| crate::Error::Usage(format!("webhooks file: allowedUrls[{i}]: {e}")))
            })
            .collect::<crate::Result<_>>()?;
        Ok(WebhookPolicy {
            own_namespace_services: file.own_namespace_services,
            allowed,
        })
    }

    /// Checks every webhook address of a Rollout in `namespace`; the error names the field.
    pub fn check(&self, namespace: &str, hooks: &[HookPlan]) -> Result<(), SpecError> {
        for (i, hook) in hooks.iter().enumerate() {
            let field = format!("webhooks[{i}].url");
            let parts = url_parts(&hook.url).map_err(|e| SpecError::new(field.clone(), e))?;
            if !self.allows(namespace, &parts) {
                return Err(SpecError::new(
                    field,
                    format!(
                        "{} is not an address the cluster admin allowed: use a Service of namespace {namespace} (http://<service>.{namespace}.svc[:port]/) or one of the admin's allowedUrls",
                        hook.url
                    ),
                ));
            }
        }
        Ok(())
    }

    fn allows(&self, namespace: &str, url: &UrlParts) -> bool {
        let own = self.own_namespace_services && {
            let mut labels = url.host.split('.');
            let service = labels.next().unwrap_or_default();
            let rest: Vec<&str> = labels.collect();
            crate::plan::is_object_name(service)
                && matches!(rest.as_slice(), [ns, "svc"] | [ns, "svc", "cluster", "local"] if *ns == namespace)
        };
        own || self.allowed.iter().any(|a| {
            a.scheme == url.scheme && a.host == url.host && a.port == url.port && url.path.starts_with(&a.path)
        })
    }
}

/// A webhook's latest call for one Rollout: in flight (and how to cancel it once a newer
/// call supersedes it), or answered.
enum Call {
    InFlight(HookKey, AbortHandle),
    Answered(HookAnswer),
}

impl Call {
    fn key(&self) -> &HookKey {
        match self {
            Call::InFlight(key, _) => key,
            Call::Answered(answer) => &answer.key,
        }
    }

    /// A call still in flight is cancelled: its slot and its body are freed at once.
    fn cancel(&self) {
        if let Call::InFlight(_, abort) = self {
            abort.abort();
        }
    }
}

/// namespace/name of a Rollout → webhook name → its latest call. Keyed by Rollout first:
/// every reconcile reads its own answers, which must not cost a scan of all Rollouts'.
type LatestCalls = HashMap<String, HashMap<String, Call>>;

/// Is the latest call of `hook` for `rollout` the question `key`?
fn is_latest(calls: &LatestCalls, rollout: &str, hook: &str, key: &HookKey) -> bool {
    calls
        .get(rollout)
        .and_then(|hooks| hooks.get(hook))
        .is_some_and(|c| c.key() == key)
}

/// Makes the calls and keeps their answers; clones share them.
#[derive(Clone)]
pub struct Webhooks {
    policy: Arc<WebhookPolicy>,
    calls: Arc<Mutex<LatestCalls>>,
    http: reqwest::Client,
    slots: Arc<FairSlots>,
    wake: UnboundedSender<ObjectRef<Rollout>>,
    /// Calls by type and answer.
    counts: Calls,
}

fn body_namespace(rollout: &ObjectRef<Rollout>) -> String {
    rollout.namespace.clone().unwrap_or_default()
}

/// The body weir POSTs.
#[derive(Serialize)]
struct Body<'a> {
    name: String,
    namespace: String,
    webhook: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    revision: &'a str,
    step: u32,
    round: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'a str>,
    metadata: &'a std::collections::BTreeMap<String, String>,
}

impl Webhooks {
    /// The caller, and the stream of Rollouts an answer should wake (the controller's
    /// `reconcile_on`).
    pub fn start(policy: WebhookPolicy) -> (Webhooks, UnboundedReceiver<ObjectRef<Rollout>>) {
        let (wake, woken) = unbounded();
        let hooks = Webhooks {
            policy: Arc::new(policy),
            calls: Arc::default(),
            http: outbound::client(None),
            slots: Arc::new(FairSlots::new(IN_FLIGHT, IN_FLIGHT_PER_NAMESPACE)),
            wake,
            counts: Calls::default(),
        };
        (hooks, woken)
    }

    /// Counts calls into `counts` (weir's `/metrics`).
    pub fn with_counts(self, counts: Calls) -> Webhooks {
        Webhooks { counts, ..self }
    }

    pub fn check(&self, namespace: &str, hooks: &[HookPlan]) -> Result<(), SpecError> {
        self.policy.check(namespace, hooks)
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, LatestCalls> {
        self.calls.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The answers that came for a Rollout (`namespace/name`).
    pub fn answers(&self, rollout: &str) -> Vec<HookAnswer> {
        let calls = self.calls();
        let Some(hooks) = calls.get(rollout) else {
            return Vec::new();
        };
        hooks
            .values()
            .filter_map(|call| match call {
                Call::Answered(answer) => Some(answer.clone()),
                Call::InFlight(..) => None,
            })
            .collect()
    }

    /// Makes each call not made yet (by key); a webhook's older call is forgotten, and
    /// cancelled if still in flight (a rollback hook is asked anew every interval: the
    /// calls a silent one leaves behind must not pile up).
    pub fn ask(&self, rollout: &Rollout, asks: &[HookCall]) {
        let key = format!("{}/{}", rollout.namespace().unwrap_or_default(), rollout.name_any());
        for ask in asks {
            let (call, abort) = abortable(self.clone().call_and_keep(rollout, ask, &key));
            {
                let mut calls = self.calls();
                if is_latest(&calls, &key, &ask.key.hook, &ask.key) {
                    continue;
                }
                let hooks = calls.entry(key.clone()).or_default();
                let before = hooks.insert(ask.key.hook.clone(), Call::InFlight(ask.key.clone(), abort));
                if let Some(superseded) = before {
                    superseded.cancel();
                }
            }
            tokio::spawn(call);
        }
    }

    /// One call, and its answer kept if it is still the one wanted.
    fn call_and_keep(self, rollout: &Rollout, ask: &HookCall, key: &str) -> impl Future<Output = ()> + use<> {
        let hooks = self;
        let (rollout_ref, ask, key) = (ObjectRef::from_obj(rollout), ask.clone(), key.to_string());
        async move {
            let answer = hooks.call(&rollout_ref, &ask).await;
            info!(rollout = %key, webhook = %ask.key.hook, reply = answer.reply.as_str(), detail = %answer.detail, "webhook answered");
            let labels = CallLabels {
                kind: ask.kind.as_str().into(),
                result: answer.reply.as_str().into(),
            };
            hooks.counts.get_or_create(&labels).inc();
            let mut calls = hooks.calls();
            // Kept only if still the call wanted (not forgotten, not replaced).
            if is_latest(&calls, &key, &ask.key.hook, &ask.key) {
                let latest = calls.entry(key).or_default();
                latest.insert(ask.key.hook.clone(), Call::Answered(answer));
                drop(calls);
                let _ = hooks.wake.unbounded_send(rollout_ref);
            }
        }
    }

    /// Drops what is kept for a Rollout (deleted, or released); its calls in flight are
    /// cancelled.
    pub fn forget(&self, rollout: &str) {
        if let Some(hooks) = self.calls().remove(rollout) {
            hooks.values().for_each(Call::cancel);
        }
    }

    /// Calls in flight for the Rollouts of `namespace` (tests).
    pub fn in_flight(&self, namespace: &str) -> usize {
        self.slots.held_by(namespace)
    }

    /// One call with its retries: at most `(retries + 1) × timeout` plus the backoff.
    async fn call(&self, rollout: &ObjectRef<Rollout>, ask: &HookCall) -> HookAnswer {
        let body = Body {
            name: rollout.name.clone(),
            namespace: rollout.namespace.clone().unwrap_or_default(),
            webhook: &ask.key.hook,
            kind: ask.kind.as_str(),
            revision: &ask.key.revision,
            step: ask.key.step,
            round: ask.key.round,
            outcome: ask.outcome.as_deref(),
            metadata: &ask.metadata,
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let attempt = || async {
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.attempt(ask, &body).await
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(8))
            .with_max_times(ask.retries as usize);
        let _slot = self.slots.acquire(&body_namespace(rollout)).await;
        let (reply, detail) = match attempt.retry(backoff).when(|e| e.retry).await {
            Ok(answer) => answer,
            Err(failed) => {
                warn!(webhook = %ask.key.hook, url = %ask.url, why = %failed.why, "webhook did not answer");
                (Reply::NoAnswer, failed.why)
            }
        };
        HookAnswer {
            key: ask.key.clone(),
            reply,
            detail,
            attempts: attempts.into_inner(),
        }
    }

    /// One attempt: a 2xx is yes, another final answer is no, the rest is retried.
    async fn attempt(&self, ask: &HookCall, body: &[u8]) -> Result<(Reply, String), Failed> {
        let response = self
            .http
            .post(&ask.url)
            .timeout(ask.timeout)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| Failed::retry(outbound::describe(&e, ask.timeout)))?;
        let code = response.status();
        outbound::answered(code, "webhook")?;
        let text = outbound::body_start(response, DETAIL_BYTES).await;
        let detail = match text.is_empty() {
            true => format!("answered {code}"),
            false => format!("answered {code}: {text}"),
        };
        match code.is_success() {
            true => Ok((Reply::Yes, detail)),
            false => Ok((Reply::No, detail)),
        }
    }
}
