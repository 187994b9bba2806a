//! Webhook gates, the controller's side: the calls themselves, each to an address
//! checked again when it is made. The engine lists the calls it waits for
//! (`Decision::asks`); each is made once, in the background, so a slow or silent webhook
//! never delays a reconcile (a bad canary is still rolled back while a gate is asked);
//! its answer is kept in memory and wakes the Rollout's reconcile, which hands it to the
//! engine (`World::hook_answers`). A restart forgets calls in flight; the engine asks
//! again.
//!
//! Which addresses may be called is the admin's (`admin::webhooks`). At each call the
//! address is checked again for what it reaches now: a Service of the Rollout's own
//! namespace is looked up and refused when it is an ExternalName (it may point at any
//! name: another namespace, the API server) or has no selector (its endpoints are
//! whatever the tenant wrote by hand); every `.svc` name is called fully qualified with
//! a trailing dot, so weir's own DNS search list never applies (`x.ns.svc` would first
//! be tried as `x.ns.svc.svc.cluster.local`, a Service of a namespace named `svc`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures::future::{AbortHandle, abortable};
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client};
use serde::Serialize;
use tracing::{info, warn};
use weir_core::hooks::{HookAnswer, HookCall, HookKey, HookPlan, Reply, url_parts};
use weir_core::spec::SpecError;

pub use crate::admin::webhooks::WebhookPolicy;
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
    /// Looks up own-namespace Services before each call; `None` in tests without one.
    client: Option<Client>,
    /// The cluster's DNS domain, for fully qualified Service names.
    cluster_domain: Arc<str>,
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
            client: None,
            cluster_domain: "cluster.local".into(),
        };
        (hooks, woken)
    }

    /// Counts calls into `counts` (weir's `/metrics`).
    pub fn with_counts(self, counts: Calls) -> Webhooks {
        Webhooks { counts, ..self }
    }

    /// Looks up own-namespace Services through `client` before each call.
    pub fn with_client(self, client: Client, cluster_domain: &str) -> Webhooks {
        Webhooks {
            client: Some(client),
            cluster_domain: cluster_domain.into(),
            ..self
        }
    }

    pub fn check(&self, namespace: &str, hooks: &[HookPlan]) -> Result<(), SpecError> {
        self.policy.check(namespace, hooks)
    }

    /// The address to call for `url`, or why it is not called: checked again against
    /// the policy (it may have changed), an own-namespace Service looked up, every
    /// `.svc` name made fully qualified.
    pub async fn destination(&self, namespace: &str, url: &str) -> Result<String, String> {
        let parts = url_parts(url)?;
        if self.policy.check_one(namespace, url).is_err() {
            return Err(format!("{url} is no longer an address the cluster admin allows"));
        }
        if let (Some(client), true) = (&self.client, self.policy.is_own_service(namespace, &parts)) {
            let service = parts.host.split('.').next().unwrap_or_default();
            let found = Api::<Service>::namespaced(client.clone(), namespace)
                .get_opt(service)
                .await
                .map_err(|e| format!("looking up Service {namespace}/{service}: {e}"))?;
            refuse_service(namespace, service, found.as_ref())?;
        }
        let host = fully_qualified(&parts.host, &self.cluster_domain);
        Ok(format!("{}://{host}:{}{}", parts.scheme, parts.port, parts.path))
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
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(8))
            .with_max_times(ask.retries as usize);
        let _slot = self.slots.acquire(&body_namespace(rollout)).await;
        let url = match self.destination(&body_namespace(rollout), &ask.url).await {
            Ok(url) => url,
            Err(why) => {
                warn!(webhook = %ask.key.hook, url = %ask.url, %why, "webhook not called");
                return HookAnswer {
                    key: ask.key.clone(),
                    reply: Reply::NoAnswer,
                    detail: format!("not called: {why}"),
                    attempts: 0,
                };
            }
        };
        let attempt = || async {
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.attempt(&url, ask, &body).await
        };
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
    async fn attempt(&self, url: &str, ask: &HookCall, body: &[u8]) -> Result<(Reply, String), Failed> {
        let response = self
            .http
            .post(url)
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

/// Refuses a Service a webhook must not be sent through: missing, an ExternalName (a DNS
/// alias to anywhere), or without a selector (its endpoints are written by hand, so may
/// name any address).
fn refuse_service(namespace: &str, name: &str, service: Option<&Service>) -> Result<(), String> {
    let Some(spec) = service.and_then(|s| s.spec.as_ref()) else {
        return Err(format!("Service {namespace}/{name} does not exist"));
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Err(format!(
            "Service {namespace}/{name} is an ExternalName (to {:?}); weir calls only Services that select pods of namespace {namespace}",
            spec.external_name.as_deref().unwrap_or_default()
        ));
    }
    if spec.selector.as_ref().is_none_or(|s| s.is_empty()) {
        return Err(format!(
            "Service {namespace}/{name} has no selector (its endpoints are written by hand); weir calls only Services that select pods of namespace {namespace}"
        ));
    }
    Ok(())
}

/// `x.ns.svc` and `x.ns.svc.cluster.local` as `x.ns.svc.<domain>.`: no search list
/// applies to a name with a trailing dot. Other hosts (the admin's addresses outside the
/// cluster, IPs) are left as they are.
pub fn fully_qualified(host: &str, cluster_domain: &str) -> String {
    let suffix = format!(".svc.{cluster_domain}");
    if host.ends_with(".svc") {
        format!("{host}.{cluster_domain}.")
    } else if host.ends_with(&suffix) {
        format!("{host}.")
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_called_fully_qualified() {
        assert_eq!(fully_qualified("x.ns.svc", "cluster.local"), "x.ns.svc.cluster.local.");
        assert_eq!(
            fully_qualified("x.ns.svc.cluster.local", "cluster.local"),
            "x.ns.svc.cluster.local."
        );
        assert_eq!(fully_qualified("127.0.0.1", "cluster.local"), "127.0.0.1");
    }
}
