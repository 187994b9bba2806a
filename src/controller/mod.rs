//! The controller: `kube::runtime::Controller` over Rollouts, woken by the Deployments
//! they target, the canary Deployments they own and the routes they name.
//!
//! * `reconcile` — one pipeline for a live Rollout and a deleted one: dereference (plan,
//!   the admin's provider, receivers and webhook addresses, resolved once) → observe
//!   (from the watch cache, `cache`) → read metrics (`readings`) → decide (the pure
//!   engine) → execute (`execute`: status, actions, Events, in that order) → remember.
//! * `watches` — which Rollouts a change of a Deployment or route wakes; the resync sweep.
//! * `http` — `/metrics` (what `crate::telemetry` counts), `/healthz`, `/readyz`.
//! * `leader` — leader election on a Lease, fenced; `index` — Rollouts by the objects
//!   they name; the workers are shared between namespaces by `crate::fair`.

pub mod cache;
pub mod confirmed;
pub mod copies;
pub mod credentials;
mod execute;
pub mod hosts;
mod http;
pub mod index;
pub mod leader;
mod readings;
mod reconcile;
mod watches;

pub use http::Health;
use http::{LEADER, STANDBY, serve_http};
pub use reconcile::{error_policy, guarded, reconcile};
use watches::{deployment_triggers, resync, routing_triggers, service_triggers, what_wakes_a_reconcile};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::controller::{Action as Requeue, Config as ControllerConfig, Controller};
use kube::runtime::finalizer::{self, Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, error, info, warn};

use crate::Error;
use crate::admin::Admin;
use crate::api::{ROLLOUT_LABEL, Rollout, RolloutStatus};
use crate::controller::cache::Looks;
use crate::controller::copies::{Afresh, Copies};
use crate::controller::credentials::Credentials;
use crate::controller::leader::Election;
use crate::edges::events::EventPublisher;
use crate::edges::kubernetes::{self, Observation, RouterApis};
use crate::edges::notify::{self, Notification, Notifier};
use crate::edges::objects::{self, LAST_APPLIED_ANNOTATION, Objects};
use crate::edges::prometheus::{Auth, Endpoint, Prometheus, QueryScope};
use crate::edges::webhooks::Webhooks;
use crate::engine::{self, Action, AnalysisRequest, Decision, World, Write};
use crate::fair::FairSlots;
use crate::judge::Reading;
use crate::plan::{self, Names, Plan};
use crate::telemetry::{ResultLabels, Telemetry};
use crate::vocabulary::{ConditionType, Reason};
use index::{Index, Named};

fn look_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// `namespace/name`, how a Rollout is named in weir's log.
fn key_of(rollout: &Rollout) -> String {
    look_key(&rollout.namespace().unwrap_or_default(), &rollout.name_any())
}

pub struct Context {
    pub client: Client,
    pub events: EventPublisher,
    pub routers: RouterApis,
    pub prometheus: Prometheus,
    /// What the cluster admin declared, and what each namespace may reach of it.
    pub admin: Arc<Admin>,
    /// weir's own namespace: the only one providers' Secrets are read from.
    pub secrets_namespace: String,
    /// Queues notifications for the receivers the admin declared.
    pub notifier: Notifier,
    /// Calls the Rollouts' webhooks (to addresses the admin allowed) in the background.
    pub webhooks: Webhooks,
    pub telemetry: Telemetry,
    pub looks: Looks,
    /// The watches' copies of the objects Rollouts name: what decisions read.
    pub copies: Copies,
    /// The metric providers' credentials, read from their Secrets.
    pub credentials: Credentials,
    /// Which Services the VirtualServices and HTTPRoutes route (from their watches).
    pub hosts: hosts::Hosts,
    /// Since when the mesh has confirmed each route's generation (from their status).
    pub confirmed: confirmed::Confirmed,
    pub health: Health,
    /// The controller's reconcile workers, shared between namespaces (`workers`).
    pub workers: FairSlots,
}

/// The controller's reconcile workers as fair slots: one namespace may hold three
/// quarters of them (all, when weir watches one namespace), so the others always find a
/// quarter free however many Rollouts one namespace wakes at once. A reconcile over its
/// namespace's share does not wait for a slot (it would hold a worker while waiting):
/// it is put back for `WORKER_TURN`.
pub fn workers(concurrency: u16, one_namespace: bool) -> FairSlots {
    let total = usize::from(concurrency.max(1));
    let share = match one_namespace {
        true => total,
        false => (total * 3 / 4).max(1),
    };
    FairSlots::new(total, share)
}

/// How soon a reconcile put back for its namespace's share of the workers comes again.
const WORKER_TURN: Duration = Duration::from_millis(250);

pub struct Options {
    pub http_addr: SocketAddr,
    /// Where `/metrics` is served apart from the probes; `None`: on `http_addr`.
    pub metrics_addr: Option<SocketAddr>,
    pub concurrency: u16,
    pub namespace: Option<String>,
    /// Providers, templates, windows, receivers, webhook addresses.
    pub admin: Admin,
    pub secrets_namespace: String,
    /// The cluster's DNS domain: webhooks to Services are called by fully qualified name.
    pub cluster_domain: String,
    /// Replicas elect a leader on a Lease; only the leader runs the controller.
    pub election: Option<Election>,
}

/// Whether the cluster serves Gateway API's HTTPRoute (v1).
async fn gateway_api_installed(client: &Client) -> bool {
    let served = kube::discovery::group(client, crate::edges::gateway::GROUP).await;
    let served = served.is_ok_and(|g| g.versions().any(|v| v == crate::edges::gateway::VERSION));
    info!(served, "Gateway API HTTPRoute");
    served
}

/// Runs the controller until SIGTERM or Ctrl-C.
// Long: builds the context from the options, one field at a time, then runs.
pub async fn run(client: Client, options: Options) -> Result<(), Error> {
    let routers = RouterApis::discover(&client).await;
    info!(version = %routers.virtual_service.version, "using Istio networking API");
    let telemetry = Telemetry::default();
    let (webhooks, answered) = Webhooks::start(options.admin.webhooks.clone());
    let webhooks = webhooks
        .with_counts(telemetry.webhook_calls.clone())
        .with_client(client.clone(), &options.cluster_domain);
    let ctx = Arc::new(Context {
        events: EventPublisher::new(client.clone(), std::env::var("POD_NAME").ok()),
        client: client.clone(),
        routers,
        prometheus: Prometheus::new()?,
        admin: Arc::new(options.admin.clone()),
        secrets_namespace: options.secrets_namespace.clone(),
        notifier: Notifier::start(
            options.admin.receivers.clone(),
            Some(client.clone()),
            options.secrets_namespace.clone(),
        )
        .with_counts(telemetry.notifications.clone()),
        webhooks,
        telemetry,
        looks: Looks::default(),
        copies: Copies::default(),
        credentials: Credentials::default(),
        hosts: Default::default(),
        confirmed: Default::default(),
        health: Health::default(),
        workers: workers(options.concurrency, options.namespace.is_some()),
    });
    let http = tokio::spawn(serve_http(options.http_addr, options.metrics_addr, ctx.clone()));
    let leadership = match &options.election {
        None => None,
        Some(election) => {
            ctx.health.set_role(STANDBY);
            tokio::select! {
                led = election.lead(client.clone()) => Some(led?),
                _ = shutdown_signal() => {
                    http.abort();
                    return Ok(());
                }
            }
        }
    };
    if leadership.is_some() {
        ctx.health.set_role(LEADER);
    }
    ctx.telemetry.leader.set(1);
    let result = match leadership {
        None => {
            control(client, &options, ctx, answered).await;
            Ok(())
        }
        Some(mut leadership) => {
            let since = Timestamp::now();
            let fence = leadership.fence();
            let stop = tokio::select! {
                _ = control(client, &options, ctx, answered) => None,
                _ = leadership.lost() => Some("lost the Lease to another replica: stopping".to_string()),
                quiet = fence.breached(since) => Some(format!(
                    "no renewal of the Lease seen for {}, past the renew deadline: stopping before it can expire",
                    humantime::format_duration(Duration::from_secs(quiet.as_secs()))
                )),
            };
            match stop {
                // Stop at once: the new leader writes now, or may soon.
                Some(why) => Err(Error::Lease(why)),
                None => {
                    leadership.release().await;
                    Ok(())
                }
            }
        }
    };
    http.abort();
    info!("controller stopped");
    result
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The controller itself: the watches, the reconciles, until SIGTERM or Ctrl-C.
// Long: the controller's wiring — each watch, its triggers and the resync — read
// top to bottom as one picture of what wakes a reconcile.
async fn control(
    client: Client,
    options: &Options,
    ctx: Arc<Context>,
    answered: futures::channel::mpsc::UnboundedReceiver<ObjectRef<Rollout>>,
) {
    let (rollouts, deployments, services): (Api<Rollout>, Api<Deployment>, Api<Service>) = match &options.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    // The Rollout cache keeps what reconciles read: no managed fields, no copy of the spec
    // in kubectl's last-applied annotation. Only changes of the spec or the annotations
    // (weir.dev/request, weir.dev/paused), the finalizers and the deletion wake a
    // reconcile: weir's own status writes do not, each decision says when to look again.
    let (reader, writer) = reflector::store();
    let (synced, delivered) = (ctx.clone(), ctx.clone());
    let index = Arc::new(Index::default());
    let (indexed, previous) = (index.clone(), reader.clone());
    let rollout_changes = watcher::watcher(rollouts, watcher::Config::default().any_semantic())
        .default_backoff()
        .inspect(move |event| {
            // The first complete list of Rollouts: from now on decisions see them all.
            if matches!(event, Ok(watcher::Event::InitDone)) && synced.health.mark_synced() {
                info!("Rollout watch synced: ready");
            }
        })
        .modify(|r: &mut Rollout| {
            r.managed_fields_mut().clear();
            r.annotations_mut().remove(LAST_APPLIED_ANNOTATION);
        })
        .inspect(move |event| {
            if let Ok(event) = event {
                let before = match event {
                    watcher::Event::Apply(r) => previous.get(&ObjectRef::from_obj(r)),
                    _ => None,
                };
                indexed.follow(event, before.as_deref());
            }
        })
        .reflect(writer)
        .inspect(move |event| {
            // After the store took it in: a reconcile from now on reads this status.
            if let Ok(watcher::Event::Apply(r) | watcher::Event::InitApply(r)) = event {
                let key = look_key(&r.namespace().unwrap_or_default(), &r.name_any());
                delivered.looks.delivered(&key, r.status.as_ref());
            }
        })
        .touched_objects()
        .predicate_filter(what_wakes_a_reconcile, PredicateConfig::default());
    let (sweep, swept) = futures::channel::mpsc::unbounded();
    let sweeper = tokio::spawn(resync(reader.clone(), sweep));
    let controller = Controller::for_stream(rollout_changes, reader);
    let api = |ar: &ApiResource| -> Api<DynamicObject> {
        match &options.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
            None => Api::all_with(client.clone(), ar),
        }
    };
    let (vs_api, dr_api) = (api(&ctx.routers.virtual_service), api(&ctx.routers.destination_rule));
    // HTTPRoutes are watched where Gateway API is installed; elsewhere a Rollout that
    // names one reads "not found" in its status.
    let route_changes = match gateway_api_installed(&client).await {
        true => routing_triggers(
            api(&ctx.routers.http_route),
            Named::HttpRoute,
            index.clone(),
            ctx.clone(),
        )
        .boxed(),
        false => futures::stream::empty().boxed(),
    };
    let telemetry_ctx = ctx.clone();
    controller
        // Each change of a Deployment, VirtualService or DestinationRule a Rollout names
        // wakes it, unless it is the echo of weir's own write; so a sync that rewrites a
        // weight (or breaks a subset) is answered at once, not at the next look.
        .reconcile_on(deployment_triggers(deployments, index.clone(), ctx.clone()))
        .reconcile_on(routing_triggers(
            vs_api,
            Named::VirtualService,
            index.clone(),
            ctx.clone(),
        ))
        .reconcile_on(routing_triggers(
            dr_api,
            Named::DestinationRule,
            index.clone(),
            ctx.clone(),
        ))
        .reconcile_on(service_triggers(services, index, ctx.clone()))
        .reconcile_on(route_changes)
        // A webhook's answer wakes its Rollout.
        .reconcile_on(answered)
        .reconcile_on(swept)
        .with_config(ControllerConfig::default().concurrency(options.concurrency))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| {
            let result = if res.is_ok() { "ok" } else { "error" };
            telemetry_ctx
                .telemetry
                .reconciles
                .get_or_create(&ResultLabels { result: result.into() })
                .inc();
            if let Err(e) = res {
                tracing::debug!(%e, "reconcile stream");
            }
            futures::future::ready(())
        })
        .await;
    sweeper.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_that_wakes_every_rollout_leaves_a_quarter_of_the_workers_to_the_others() {
        let shared = workers(64, false);
        let busy: Vec<_> = (0..100).filter_map(|_| shared.try_acquire("busy")).collect();
        assert_eq!(busy.len(), 48);
        let others: Vec<_> = (0..100).filter_map(|_| shared.try_acquire("other")).collect();
        assert_eq!(others.len(), 16, "the rest is the other namespaces'");
        drop(busy);
        assert!(shared.try_acquire("busy").is_some());
        // Watching one namespace, it has every worker.
        let alone = workers(64, true);
        let held: Vec<_> = (0..100).filter_map(|_| alone.try_acquire("only")).collect();
        assert_eq!(held.len(), 64);
    }
}
