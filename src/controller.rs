//! The controller: `kube::runtime::Controller` over Rollouts, woken by the Deployments
//! they target and the canary Deployments they own. Each reconcile is a pipeline:
//! plan (pure) → observe (reads) → metrics (Prometheus) → decide (pure) → apply (writes)
//! → Events → status.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::DynamicObject;
use kube::runtime::controller::{Action as Requeue, Config as ControllerConfig, Controller};
use kube::runtime::finalizer::{self, Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, error, info, warn};

use crate::Error;
use crate::api::{ROLLOUT_LABEL, Rollout, RolloutStatus};
use crate::engine::{self, Action, AnalysisRequest, Decision, World, Write};
use crate::events::EventPublisher;
use crate::fair::FairSlots;
use crate::index::{self, Index, Named, Versions};
use crate::judge::Reading;
use crate::kubernetes::{self, IstioApi, LAST_APPLIED_ANNOTATION, Objects, Observation};
use crate::leader::Election;
use crate::looks::{Change, Kept, Looks, Memo, Watched};
use crate::notify::{self, Notification, Notifier, Receivers};
use crate::plan::{self, Names, Plan};
use crate::prometheus::{Auth, Endpoint, Prometheus, QueryScope};
use crate::providers::Providers;
use crate::telemetry::{ResultLabels, Telemetry};
use crate::vocabulary::{ConditionType, Reason};
use crate::webhooks::{WebhookPolicy, Webhooks};
use crate::windows_defaults::WindowDefaults;

fn look_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

pub struct Context {
    pub client: Client,
    pub events: EventPublisher,
    pub istio: IstioApi,
    pub prometheus: Prometheus,
    /// The metric providers the cluster admin declared.
    pub providers: Providers,
    /// weir's own namespace: the only one providers' Secrets are read from.
    pub secrets_namespace: String,
    /// The admin's default release windows, for Rollouts that set none.
    pub windows: WindowDefaults,
    /// Queues notifications for the receivers the admin declared.
    pub notifier: Notifier,
    /// Calls the Rollouts' webhooks (to addresses the admin allowed) in the background.
    pub webhooks: Webhooks,
    pub telemetry: Telemetry,
    pub looks: Looks,
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

/// What `/readyz` and `/healthz` answer.
#[derive(Default)]
pub struct Health {
    /// The Rollout watch has listed every Rollout once: decisions see the whole cluster.
    synced: AtomicBool,
    /// Reconciles started and not yet ended.
    in_flight: AtomicU64,
    /// When a reconcile last ended.
    last_end: Mutex<Option<Instant>>,
    /// With leader election: 1 while a standby, 2 once leading; 0 without.
    role: AtomicU8,
    /// Rollouts whose last reconciles failed (panicked, or a deletion could not read),
    /// and how many times in a row.
    panics: Mutex<HashMap<String, u32>>,
}

/// The first retry after a failure; it doubles with each failure in a row, up to `PANIC_RETRY_MAX`.
const PANIC_RETRY: Duration = Duration::from_secs(1);
const PANIC_RETRY_MAX: Duration = Duration::from_secs(300);

const STANDBY: u8 = 1;
const LEADER: u8 = 2;

/// Longer than any reconcile can take (its looks are bounded by the providers' timeouts):
/// reconciles in flight and none ended for this long means the loop is stuck.
const STUCK_AFTER: Duration = Duration::from_secs(300);

impl Health {
    fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        *self.last_end.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Ready once the watches have synced; a standby is ready as it is (it serves its
    /// probes and waits for the Lease). The answer says which.
    pub fn ready(&self) -> Result<&'static str, String> {
        match (self.role.load(Ordering::Relaxed), self.synced.load(Ordering::Relaxed)) {
            (STANDBY, _) => Ok("standby: another replica holds the Lease"),
            (_, false) => Err("the Rollout watch has not synced yet".into()),
            (LEADER, true) => Ok("leader"),
            (_, true) => Ok("ok"),
        }
    }

    /// Counts a failure of `key`'s reconcile in a row (a panic, a deletion that could not
    /// read); returns when to try it again.
    fn failed(&self, key: &str) -> Duration {
        let mut panics = self.panics.lock().unwrap_or_else(|e| e.into_inner());
        let count = panics.entry(key.to_string()).or_insert(0);
        *count = count.saturating_add(1);
        PANIC_RETRY
            .saturating_mul(1 << (*count - 1).min(16))
            .min(PANIC_RETRY_MAX)
    }

    fn recovered(&self, key: &str) {
        let mut panics = self.panics.lock().unwrap_or_else(|e| e.into_inner());
        if !panics.is_empty() {
            panics.remove(key);
        }
    }

    fn set_role(&self, role: u8) {
        self.role.store(role, Ordering::Relaxed);
    }

    /// Healthy unless reconciles are in flight and none has ended for `STUCK_AFTER`.
    pub fn live(&self) -> Result<(), String> {
        let last = *self.last_end.lock().unwrap_or_else(|e| e.into_inner());
        let busy = self.in_flight.load(Ordering::Relaxed) > 0;
        match last {
            Some(t) if busy && t.elapsed() > STUCK_AFTER => Err(format!(
                "no reconcile has ended for {}s while some are running",
                t.elapsed().as_secs()
            )),
            _ => Ok(()),
        }
    }
}

/// Reads every metric of a due look, concurrently: one query per metric, on the
/// Rollout's provider. A provider that already has its share of looks waiting on it
/// gets no more: after a second's wait for its turn this look reads as an error (the
/// step holds) instead of holding a reconcile worker from Rollouts on other providers.
async fn read_metrics(
    ctx: &Context,
    rollout: &Rollout,
    plan: &Plan,
    auth: &Result<Auth, String>,
    req: AnalysisRequest,
) -> Vec<(String, Reading)> {
    let provider = ctx.providers.resolve(plan.provider.as_deref());
    // Held until the reads are done.
    let namespace = rollout.namespace().unwrap_or_default();
    let permit = match &provider {
        Ok(p) => Some(
            p.in_flight
                .acquire_within(&namespace, crate::providers::TURN_WAIT)
                .await,
        ),
        Err(_) => None,
    };
    let endpoint = match (&provider, &permit, auth) {
        (Err(e), _, _) => Err(e.to_string()),
        (_, _, Err(e)) => Err(e.clone()),
        (Ok(p), Some(None), _) => Err(format!(
            "metric provider {} is busy: namespace {namespace}'s {} looks, or all {}, are waiting on it already",
            p.name,
            crate::providers::LOOKS_IN_FLIGHT_PER_NAMESPACE,
            crate::providers::LOOKS_IN_FLIGHT_PER_PROVIDER
        )),
        (Ok(p), _, Ok(auth)) => Ok(Endpoint {
            address: p.address.clone(),
            auth: auth.clone(),
            timeout: p.timeout,
        }),
    };
    let scope = QueryScope {
        namespace: rollout.namespace().unwrap_or_default(),
        stable: plan.target.clone(),
        canary: plan.canary.clone(),
    };
    let reads = plan.metrics.iter().map(|m| {
        let (scope, endpoint) = (&scope, &endpoint);
        async move {
            let reading = match endpoint {
                Err(e) => Reading::Error(e.clone()),
                Ok(endpoint) => ctx.prometheus.read(endpoint, m, scope, req.window, req.interval).await,
            };
            (m.name.clone(), reading)
        }
    });
    let readings = futures::future::join_all(reads).await;
    for (_, r) in &readings {
        let result = if matches!(r, Reading::Error(_)) { "error" } else { "ok" };
        ctx.telemetry
            .prometheus_queries
            .get_or_create(&ResultLabels { result: result.into() })
            .inc();
    }
    readings
}

/// Held on every Rollout weir has taken over, so that deleting it (or uninstalling weir
/// while it still runs) first hands everything back: see `release_rollout`.
pub const FINALIZER: &str = "weir.dev/cleanup";

pub async fn reconcile(rollout: Arc<Rollout>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let Some(_worker) = ctx.workers.try_acquire(&rollout.namespace().unwrap_or_default()) else {
        debug!(rollout = %key_of(&rollout), "its namespace holds its share of the workers: again shortly");
        return Ok(Requeue::requeue(WORKER_TURN));
    };
    let started = Instant::now();
    ctx.health.started();
    let result = guarded(&ctx, &rollout, decide_and_act(rollout.clone(), &ctx)).await;
    ctx.telemetry.reconcile_seconds.observe(started.elapsed().as_secs_f64());
    ctx.health.ended();
    result
}

/// Defence in depth behind the total engine: a reconcile that panics anyway (a bug) is
/// caught here instead of taking the process down — kube's Controller would re-raise
/// it, and a restarted weir would meet the same Rollout first and die again, leaving
/// every namespace without a judge. The panic is told on that Rollout (its status
/// message and a Warning Event) and retried with a backoff that doubles up to 5
/// minutes; every other Rollout goes on.
pub async fn guarded(
    ctx: &Context,
    rollout: &Rollout,
    work: impl Future<Output = Result<Requeue, Error>>,
) -> Result<Requeue, Error> {
    let key = key_of(rollout);
    match AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => {
            if result.is_ok() {
                ctx.health.recovered(&key);
            }
            result
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into());
            let retry = ctx.health.failed(&key);
            error!(rollout = %key, %message, ?retry, "reconcile panicked; weir goes on with the other Rollouts");
            report_panic(ctx, rollout, &message, retry).await;
            Err(Error::Panicked { message, retry })
        }
    }
}

/// Tells a caught panic on its Rollout: the status message (the rest of the status as
/// stored) and a Warning Event. Best effort: the retry comes whatever these answer.
async fn report_panic(ctx: &Context, rollout: &Rollout, message: &str, retry: Duration) {
    let note = format!(
        "weir failed while deciding this Rollout (a bug in weir, please report it): {message}; retried in {}",
        humantime::format_duration(retry)
    );
    let mut status = rollout.status.clone().unwrap_or_default();
    status.message = note.clone();
    if let Err(err) = kubernetes::write_status(&ctx.client, rollout, &status).await {
        warn!(rollout = %key_of(rollout), %err, "writing the status of a panicked reconcile failed");
    }
    let event = engine::Event {
        warning: true,
        reason: Reason::ReconcilePanicked,
        note,
    };
    publish(ctx, rollout, &event).await;
}

/// The finalizer's two ways: a live Rollout is decided on, a deleted one released.
async fn decide_and_act(rollout: Arc<Rollout>, ctx: &Context) -> Result<Requeue, Error> {
    let api: Api<Rollout> = Api::namespaced(ctx.client.clone(), &rollout.namespace().unwrap_or_default());
    let result = finalizer(&api, FINALIZER, rollout, |event| async {
        match event {
            FinalizerEvent::Apply(rollout) => reconcile_rollout(rollout, ctx).await,
            FinalizerEvent::Cleanup(rollout) => release_rollout(rollout, ctx).await,
        }
    })
    .await;
    result.map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => finalizer_write_failed(e),
        other => Error::Invariant(other.to_string()),
    })
}

/// The finalizer patch tests the finalizers weir read before changing them; a 422 is
/// that test failing (the patch is weir's own, always well-formed).
fn finalizer_write_failed(e: kube::Error) -> Error {
    match e {
        kube::Error::Api(s) if s.code == 422 => Error::FinalizersChanged,
        e => Error::Kube(e),
    }
}

/// Observes what the decision needs: everything, when the spec can be planned; else as
/// much as the names in the spec allow (a canary can still be withdrawn), or nothing.
async fn observe_for(ctx: &Context, rollout: &Rollout, names: &Names, full: bool) -> Option<Observation> {
    match kubernetes::fetch(&ctx.client, &ctx.istio, rollout, names, None, &ctx.secrets_namespace).await {
        Ok(objects) => Some(kubernetes::observation(rollout, names, &objects)),
        Err(e) if !full => {
            warn!(rollout = %key_of(rollout), %e, "cannot observe the objects of an invalid Rollout");
            None
        }
        Err(_) => None,
    }
}

async fn reconcile_rollout(rollout: Arc<Rollout>, ctx: &Context) -> Result<Requeue, Error> {
    let now = Timestamp::now();
    let stored = rollout.status.clone().unwrap_or_default();
    let uid = rollout.uid().unwrap_or_default();
    let key = look_key(&rollout.namespace().unwrap_or_default(), &rollout.name_any());
    let generation = rollout.meta().generation;
    // A provider the admin did not declare makes the Rollout invalid, like any other
    // field that does not fit.
    let spec = ctx
        .windows
        .apply(&rollout.namespace().unwrap_or_default(), &rollout.spec);
    let namespace = rollout.namespace().unwrap_or_default();
    let planned = plan::plan(&spec).and_then(|p| {
        let provider = ctx.providers.resolve(p.provider.as_deref()).map(|_| ());
        let checked = provider
            .and_then(|_| ctx.notifier.check(&spec.notify))
            .and_then(|_| ctx.webhooks.check(&namespace, &p.hooks));
        match checked {
            Ok(()) => Ok(p),
            Err(e) => Err(vec![e]),
        }
    });
    let names = Names::of(&rollout.spec);
    let provider = planned.as_ref().ok().and_then(|p| p.provider.as_deref());
    let watched = Watched::of(&rollout, &names, provider);
    let resumed = ctx.looks.resume(&key, &rollout, &stored, &watched);
    let status = resumed.status;
    let (decision, obs, mut kept) = match &planned {
        Err(errors) => {
            // Reads only when there is a canary to withdraw or drain.
            let state = engine::state_of(&status);
            let busy = state.canary().is_some() || matches!(state, weir_core::state::State::Draining { .. });
            let obs = match busy {
                true => observe_for(ctx, &rollout, &names, false).await,
                false => None,
            };
            let world = obs.as_ref().map(|o| o.world.clone()).unwrap_or_else(World::unobserved);
            (engine::decide(Err(errors), generation, &status, &world, now), obs, None)
        }
        Ok(plan) => {
            // A look of the judge reads no object again: the watches keep them current.
            let kept = match resumed.kept {
                Some(kept) => kept,
                None => Kept {
                    objects: kubernetes::fetch(
                        &ctx.client,
                        &ctx.istio,
                        &rollout,
                        &names,
                        ctx.providers.resolve(plan.provider.as_deref()).ok(),
                        &ctx.secrets_namespace,
                    )
                    .await?,
                    names: watched,
                    read_at: Instant::now(),
                },
            };
            let mut obs = kubernetes::observation(&rollout, &names, &kept.objects);
            obs.world.hook_answers = ctx.webhooks.answers(&key);
            if let Some(req) = engine::analysis_request(plan, &status, now) {
                obs.world.readings = Some(read_metrics(ctx, &rollout, plan, &obs.auth, req).await);
            }
            let decision = engine::decide(Ok(plan), generation, &status, &obs.world, now);
            (decision, Some(obs), Some(kept))
        }
    };
    let objects = kept.as_mut().map(|k| &mut k.objects);
    let written = execute(ctx, &rollout, obs.as_ref(), objects, &decision, &resumed.written, now).await;
    let written = match written {
        Ok(written) => written,
        Err((written, e)) => {
            let memo = Memo {
                kept: None,
                changes: resumed.changes,
            };
            ctx.looks.remember(&key, &uid, &decision.status, &written, memo);
            return Err(e);
        }
    };
    let memo = Memo {
        kept,
        changes: resumed.changes,
    };
    ctx.looks.remember(&key, &uid, &decision.status, &written, memo);
    ctx.webhooks.ask(&rollout, &decision.asks);
    ctx.telemetry.record(&rollout, &status, &decision.status, now);
    Ok(next_reconcile(decision.requeue_after))
}

/// When a Rollout is looked at again. Nothing due: only when something changes, or the
/// resync sweep comes by (`resync`); a timer per idle Rollout would cost ~1.5 KB each
/// in kube's scheduler (15 MB at 10,000) and come back as one wave after a takeover.
fn next_reconcile(requeue_after: Option<Duration>) -> Requeue {
    requeue_after.map_or_else(Requeue::await_change, Requeue::requeue)
}

/// Resync when nothing is due: watches bring every change sooner, so this is a safety
/// net only (Argo Rollouts' default resync is the same). A resync of an idle Rollout
/// reads its objects (four GETs): at 10,000 Rollouts every 5 minutes that was 130
/// GETs/s on the API server beside the releases.
const IDLE_RESYNC: Duration = Duration::from_secs(15 * 60);

/// How often the resync sweep wakes a share of the Rollouts.
const SWEEP_TICK: Duration = Duration::from_secs(10);

/// The resync: every Rollout is woken once per `IDLE_RESYNC`, a share each
/// `SWEEP_TICK` (the Rollouts whose uid falls in that tick's slot), so 10,000 idle
/// Rollouts make ~11 reconciles a second, evenly, and keep no timer each.
async fn resync(store: reflector::Store<Rollout>, wake: futures::channel::mpsc::UnboundedSender<ObjectRef<Rollout>>) {
    let slots = (IDLE_RESYNC.as_secs() / SWEEP_TICK.as_secs()).max(1);
    let mut tick = tokio::time::interval(SWEEP_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for slot in (0..slots).cycle() {
        tick.tick().await;
        for rollout in store.state() {
            let uid = rollout.uid().unwrap_or_default();
            if in_slot(&uid, slot, slots) && wake.unbounded_send(ObjectRef::from_obj(&*rollout)).is_err() {
                return;
            }
        }
    }
}

fn in_slot(uid: &str, slot: u64, slots: u64) -> bool {
    index::hash_of(uid) % slots == slot
}

/// The finalizer's cleanup: all traffic back on stable (written as an intent first),
/// the canary drains, then weir lets go of the Deployment, deletes the canary and the
/// finalizer goes. Until then the
/// cleanup reports `NotReleasedYet`, which keeps the finalizer and comes back in time.
async fn release_rollout(rollout: Arc<Rollout>, ctx: &Context) -> Result<Requeue, Error> {
    let now = Timestamp::now();
    let stored = rollout.status.clone().unwrap_or_default();
    let key = look_key(&rollout.namespace().unwrap_or_default(), &rollout.name_any());
    let names = Names::of(&rollout.spec);
    let resumed = ctx
        .looks
        .resume(&key, &rollout, &stored, &Watched::of(&rollout, &names, None));
    // A fresh read, never the watches' copy: this is the proof that lets the finalizer go.
    let obs = match kubernetes::fetch(&ctx.client, &ctx.istio, &rollout, &names, None, &ctx.secrets_namespace).await {
        Ok(objects) => {
            let mut obs = kubernetes::observation(&rollout, &names, &objects);
            if objects.virtual_service.is_none() {
                // No VirtualService routes anything to the canary.
                obs.world.traffic = Ok(0);
            }
            obs
        }
        Err(e) => return Err(release_unproven(ctx, &rollout, &key, e).await),
    };
    let obs = Some(obs);
    let world = obs.as_ref().map(|o| o.world.clone()).unwrap_or_else(World::unobserved);
    let planned = plan::plan(&rollout.spec).ok();
    let delay = planned
        .as_ref()
        .map_or(plan::DEFAULT_SCALE_DOWN_DELAY, |p| p.scale_down_delay);
    let decision = engine::release(planned.as_ref(), &resumed.status, &world, delay, now);
    let uid = rollout.uid().unwrap_or_default();
    match execute(ctx, &rollout, obs.as_ref(), None, &decision, &resumed.written, now).await {
        Ok(written) => {
            let memo = Memo {
                kept: None,
                changes: resumed.changes,
            };
            ctx.looks.remember(&key, &uid, &decision.status, &written, memo)
        }
        Err((_, e)) => return Err(e),
    }
    if !decision.released {
        // A drain not yet over always says when it ends; should it not, look soon.
        let wait = decision.requeue_after.unwrap_or(Duration::from_secs(1));
        return Err(Error::NotReleasedYet(wait));
    }
    ctx.looks.forget(&key);
    ctx.webhooks.forget(&key);
    ctx.health.recovered(&key);
    ctx.telemetry.forget(&rollout, &decision.status.phase);
    Ok(Requeue::await_change())
}

/// A deletion whose fresh read failed proves nothing: the finalizer stays, the status
/// and a Warning Event say why, and the read is tried again with a doubling backoff.
async fn release_unproven(ctx: &Context, rollout: &Rollout, key: &str, e: Error) -> Error {
    // Capped lower than a panic's: a read comes back with the API server, and the
    // deletion should follow within half a minute.
    let retry = ctx.health.failed(key).min(Duration::from_secs(30));
    let message = format!(
        "Rollout deleted: weir keeps its finalizer until it can read the routing and the Deployments again ({e}); next try in {}",
        humantime::format_duration(retry)
    );
    warn!(rollout = %key, %e, ?retry, "deletion: cannot read the Rollout's objects; the finalizer stays");
    let mut status = rollout.status.clone().unwrap_or_default();
    if status.message != message {
        status.message = message.clone();
        if let Err(err) = kubernetes::write_status(&ctx.client, rollout, &status).await {
            warn!(rollout = %key, %err, "writing the status of a blocked deletion failed");
        }
        let event = engine::Event {
            warning: true,
            reason: Reason::ReleaseWaiting,
            note: message,
        };
        publish(ctx, rollout, &event).await;
    }
    Error::NotReleasedYet(retry)
}

/// Makes the writes of a decision in their order (`Decision::writes`): status, actions,
/// Events. Returns what the API server now holds as status, also when a write failed.
/// A failed action (other than a conflict, retried at once) reaches the status as the
/// condition `Applied=False` and a Warning Event, once per distinct message.
async fn execute(
    ctx: &Context,
    rollout: &Rollout,
    obs: Option<&Observation>,
    mut objects: Option<&mut Objects>,
    decision: &Decision,
    in_api: &RolloutStatus,
    now: Timestamp,
) -> Result<RolloutStatus, (RolloutStatus, Error)> {
    let mut written = in_api.clone();
    let mut applied_any = false;
    for write in decision.writes(in_api) {
        match write {
            Write::Status(status) => {
                kubernetes::write_status(&ctx.client, rollout, status)
                    .await
                    .map_err(|e| (written.clone(), e))?;
                written = status.clone();
            }
            Write::Act(action) => {
                info!(rollout = %key_of(rollout), ?action, "applying");
                let names = Names::of(&rollout.spec);
                let result = match obs {
                    Some(obs) => kubernetes::apply(&ctx.client, &ctx.istio, rollout, &names, obs, action).await,
                    None => Err(Error::Invariant("an action without an observation".into())),
                };
                match result {
                    Ok(applied) => {
                        if let (Some(objects), Some(applied)) = (objects.as_deref_mut(), applied) {
                            ctx.looks.record(&key_of(rollout), &applied);
                            objects.record(applied);
                        }
                    }
                    Err(e) => {
                        let written = report_apply_failure(ctx, rollout, action, &e, written, now).await;
                        return Err((written, e));
                    }
                }
                applied_any = true;
            }
            Write::Tell(event) => {
                publish(ctx, rollout, event).await;
                notify(ctx, rollout, event, &decision.status, now);
            }
        }
    }
    if applied_any
        && written
            .condition(ConditionType::Applied)
            .is_some_and(|c| c.status == "False")
    {
        let mut status = decision.status.clone();
        status.set_condition(
            ConditionType::Applied,
            true,
            Reason::Applied,
            "every change weir decided is in the cluster",
            now,
        );
        if kubernetes::write_status(&ctx.client, rollout, &status).await.is_ok() {
            written = status;
        }
    }
    Ok(written)
}

async fn report_apply_failure(
    ctx: &Context,
    rollout: &Rollout,
    action: &Action,
    error: &Error,
    mut written: RolloutStatus,
    now: Timestamp,
) -> RolloutStatus {
    if error.is_conflict() {
        return written;
    }
    let message = format!("{action:?} failed: {error}");
    if written
        .condition(ConditionType::Applied)
        .is_some_and(|c| c.message == message)
    {
        return written;
    }
    written.set_condition(ConditionType::Applied, false, Reason::ApplyFailed, &message, now);
    let event = engine::Event {
        warning: true,
        reason: Reason::ApplyFailed,
        note: message,
    };
    publish(ctx, rollout, &event).await;
    match kubernetes::write_status(&ctx.client, rollout, &written).await {
        Ok(()) => written,
        Err(e) => {
            warn!(rollout = %key_of(rollout), %e, "recording a failed write in status failed too");
            written
        }
    }
}

/// Queues a notification for an Event a person acts on, to the receivers the Rollout
/// names. `status` is what the decision left (already written: the transition is not
/// decided again after a restart, so neither is its notification).
fn notify(ctx: &Context, rollout: &Rollout, e: &engine::Event, status: &RolloutStatus, now: Timestamp) {
    if rollout.spec.notify.is_empty() {
        return;
    }
    let Some(kind) = notify::Kind::of_event(e.reason) else {
        return;
    };
    let release = status.release.as_ref().or(status.history.first());
    let revision = status
        .canary_revision
        .clone()
        .or_else(|| release.map(|r| r.revision.clone()));
    let step = status.current_step.map(|s| s + 1).or(release.map(|r| r.step));
    let notification = Notification {
        id: format!(
            "{}/{}/{kind:?}/{}",
            rollout.uid().unwrap_or_default(),
            revision.as_deref().unwrap_or("-"),
            step.unwrap_or(0)
        ),
        kind,
        namespace: rollout.namespace().unwrap_or_default(),
        name: rollout.name_any(),
        revision,
        step,
        message: e.note.clone(),
        at: now.to_string(),
    };
    ctx.notifier.send(&rollout.spec.notify, &notification);
}

async fn publish(ctx: &Context, rollout: &Rollout, e: &engine::Event) {
    if e.warning {
        warn!(rollout = %key_of(rollout), reason = %e.reason, "{}", e.note);
    } else {
        info!(rollout = %key_of(rollout), reason = %e.reason, "{}", e.note);
    }
    ctx.telemetry
        .decisions
        .get_or_create(&ResultLabels {
            result: e.reason.to_string(),
        })
        .inc();
    // An Event that cannot be published must not block the rollout itself.
    if let Err(err) = ctx.events.publish(rollout, e).await {
        warn!(rollout = %key_of(rollout), %err, "publishing an Event failed");
    }
}

/// `namespace/name`, how a Rollout is named in weir's log.
fn key_of(rollout: &Rollout) -> String {
    look_key(&rollout.namespace().unwrap_or_default(), &rollout.name_any())
}

pub fn error_policy(rollout: Arc<Rollout>, error: &Error, ctx: Arc<Context>) -> Requeue {
    if let Error::NotReleasedYet(wait) = error {
        return Requeue::requeue(*wait);
    }
    if let Error::Panicked { retry, .. } = error {
        return Requeue::requeue(*retry);
    }
    ctx.telemetry
        .reconciles
        .get_or_create(&ResultLabels { result: "error".into() })
        .inc();
    // A conflict is a race with a change weir has not seen yet, not a failure: it clears
    // as soon as the watch brings the change, so it is retried fast and said quietly.
    if error.is_conflict() {
        debug!(rollout = %key_of(&rollout), %error, "deciding again on a fresh read");
        return Requeue::requeue(Duration::from_millis(200));
    }
    warn!(rollout = %key_of(&rollout), %error, "reconcile failed; retrying");
    // Blips clear fast; a retry within a few seconds keeps steps near their time.
    Requeue::requeue(Duration::from_secs(2))
}

async fn serve_http(addr: SocketAddr, ctx: Arc<Context>) -> Result<(), Error> {
    use axum::routing::get;
    let health = ctx.clone();
    let metrics = move || {
        let ctx = ctx.clone();
        async move {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, &ctx.telemetry.registry) {
                Ok(()) => body,
                Err(_) => String::from("# encoding failed\n"),
            }
        }
    };
    let answer = |state: Result<&str, String>| match state {
        Ok(what) => (axum::http::StatusCode::OK, what.to_string()),
        Err(why) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, why),
    };
    let (live, ready) = (health.clone(), health);
    let app = axum::Router::new()
        .route(
            "/healthz",
            get(move || async move { answer(live.health.live().map(|()| "ok")) }),
        )
        .route("/readyz", get(move || async move { answer(ready.health.ready()) }))
        .route("/metrics", get(metrics));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(%addr, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, app).await?;
    Ok(())
}

pub struct Options {
    pub http_addr: SocketAddr,
    pub concurrency: u16,
    pub namespace: Option<String>,
    pub providers: Providers,
    pub secrets_namespace: String,
    /// The admin's default release windows.
    pub windows: WindowDefaults,
    /// The notification receivers the admin declared.
    pub receivers: Receivers,
    /// The addresses the admin allows Rollouts' webhooks to call.
    pub webhooks: WebhookPolicy,
    /// Replicas elect a leader on a Lease; only the leader runs the controller.
    pub election: Option<Election>,
}

/// A hash of what a reconcile must see: the spec (generation), the annotations (requests
/// from a person), the finalizers and the deletion. Not the status: weir wrote it.
fn what_wakes_a_reconcile(r: &Rollout) -> Option<u64> {
    let deletion = r.meta().deletion_timestamp.as_ref().map(|t| t.0.to_string());
    Some(index::hash_of(&(
        r.meta().generation,
        r.annotations(),
        r.finalizers(),
        deletion,
    )))
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub async fn run(client: Client, options: Options) -> Result<(), Error> {
    let istio = IstioApi::discover(&client).await;
    info!(version = %istio.virtual_service.version, "using Istio networking API");
    let telemetry = Telemetry::default();
    let (webhooks, answered) = Webhooks::start(options.webhooks.clone());
    let webhooks = webhooks.with_counts(telemetry.webhook_calls.clone());
    let ctx = Arc::new(Context {
        events: EventPublisher::new(client.clone(), std::env::var("POD_NAME").ok()),
        client: client.clone(),
        istio,
        prometheus: Prometheus::new()?,
        providers: options.providers.clone(),
        secrets_namespace: options.secrets_namespace.clone(),
        windows: options.windows.clone(),
        notifier: Notifier::start(
            options.receivers.clone(),
            Some(client.clone()),
            options.secrets_namespace.clone(),
        )
        .with_counts(telemetry.notifications.clone()),
        webhooks,
        telemetry,
        looks: Looks::default(),
        health: Health::default(),
        workers: workers(options.concurrency, options.namespace.is_some()),
    });
    let http = tokio::spawn(serve_http(options.http_addr, ctx.clone()));
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
async fn control(
    client: Client,
    options: &Options,
    ctx: Arc<Context>,
    answered: futures::channel::mpsc::UnboundedReceiver<ObjectRef<Rollout>>,
) {
    let (rollouts, deployments): (Api<Rollout>, Api<Deployment>) = match &options.namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
        None => (Api::all(client.clone()), Api::all(client.clone())),
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
            if matches!(event, Ok(watcher::Event::InitDone)) && !synced.health.synced.swap(true, Ordering::Relaxed) {
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
    let (vs_api, dr_api): (Api<DynamicObject>, Api<DynamicObject>) = match &options.namespace {
        Some(ns) => (
            Api::namespaced_with(client.clone(), ns, &ctx.istio.virtual_service),
            Api::namespaced_with(client.clone(), ns, &ctx.istio.destination_rule),
        ),
        None => (
            Api::all_with(client.clone(), &ctx.istio.virtual_service),
            Api::all_with(client.clone(), &ctx.istio.destination_rule),
        ),
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
        .reconcile_on(routing_triggers(dr_api, Named::DestinationRule, index, ctx.clone()))
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

/// The Rollouts a Deployment's change wakes, each told of the change: a canary names its
/// Rollout in a label; a target is found through the index.
fn on_deployment(ctx: &Context, index: &Index, d: &Deployment, deleted: bool) -> Vec<ObjectRef<Rollout>> {
    let ns = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let rollouts = match d.labels().get(ROLLOUT_LABEL) {
        Some(owner) => vec![ObjectRef::<Rollout>::new(owner).within(&ns)],
        None => index.naming(Named::Target, &ns, &name),
    };
    let change = Change::Deployment(&name, (!deleted).then_some(d));
    rollouts
        .into_iter()
        .filter(|r| ctx.looks.seen(&look_key(&ns, &r.name), &change))
        .collect()
}

/// Like `on_deployment`, for a VirtualService or DestinationRule.
fn on_routing(ctx: &Context, index: &Index, named: Named, o: &DynamicObject, deleted: bool) -> Vec<ObjectRef<Rollout>> {
    let ns = o.namespace().unwrap_or_default();
    let name = o.name_any();
    let object = (!deleted).then_some(o);
    let change = match named {
        Named::DestinationRule => Change::DestinationRule(&name, object),
        _ => Change::VirtualService(&name, object),
    };
    index
        .naming(named, &ns, &name)
        .into_iter()
        .filter(|r| ctx.looks.seen(&look_key(&ns, &r.name), &change))
        .collect()
}

/// A watch of one kind of object as the Rollouts its changes wake. A watch that lost its
/// place lists everything again: only what changed meanwhile wakes a Rollout, and
/// objects deleted meanwhile wake the Rollouts that name them and every Rollout weir
/// remembers (they read their objects afresh).
fn triggers<K, F>(
    api: Api<K>,
    named: Named,
    index: Arc<Index>,
    ctx: Arc<Context>,
    wakes: F,
) -> impl futures::Stream<Item = ObjectRef<Rollout>> + Send + 'static
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    F: Fn(&Context, &Index, &K, bool) -> Vec<ObjectRef<Rollout>> + Send + 'static,
{
    let mut versions = Versions::default();
    let object_key = move |o: &K| index::key(named, &o.namespace().unwrap_or_default(), &o.name_any());
    watcher::watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .flat_map(move |event| {
            let woken = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    match versions.saw(object_key(&o), o.resource_version().as_deref()) {
                        true => wakes(&ctx, &index, &o, false),
                        false => Vec::new(),
                    }
                }
                Ok(watcher::Event::Delete(o)) => {
                    versions.deleted(object_key(&o));
                    wakes(&ctx, &index, &o, true)
                }
                Ok(watcher::Event::Init) => {
                    versions.relisting();
                    Vec::new()
                }
                Ok(watcher::Event::InitDone) => vanished(&ctx, &index, versions.vanished()),
                Err(e) => {
                    tracing::debug!(%e, "watch");
                    Vec::new()
                }
            };
            futures::stream::iter(woken)
        })
}

/// The Rollouts woken by objects a relist found deleted meanwhile (`gone`).
fn vanished(ctx: &Context, index: &Index, gone: Vec<u64>) -> Vec<ObjectRef<Rollout>> {
    if gone.is_empty() {
        return Vec::new();
    }
    ctx.looks.forget_objects();
    let remembered = ctx.looks.remembered().into_iter();
    let remembered = remembered.map(|(ns, name)| ObjectRef::new(&name).within(&ns));
    gone.into_iter()
        .flat_map(|k| index.naming_key(k))
        .chain(remembered)
        .collect()
}

fn deployment_triggers(
    api: Api<Deployment>,
    index: Arc<Index>,
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = ObjectRef<Rollout>> + Send + 'static {
    triggers(api, Named::Target, index, ctx, on_deployment)
}

fn routing_triggers(
    api: Api<DynamicObject>,
    named: Named,
    index: Arc<Index>,
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = ObjectRef<Rollout>> + Send + 'static {
    triggers(api, named, index, ctx, move |ctx, index, o, deleted| {
        on_routing(ctx, index, named, o, deleted)
    })
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

    #[test]
    fn idle_rollouts_keep_no_timer_and_the_sweep_wakes_each_once_per_period() {
        let step = Duration::from_secs(5);
        assert_eq!(
            next_reconcile(Some(step)),
            Requeue::requeue(step),
            "a look due keeps its time"
        );
        assert_eq!(next_reconcile(None), Requeue::await_change());
        let slots = IDLE_RESYNC.as_secs() / SWEEP_TICK.as_secs();
        let uids: Vec<String> = (0..9_000).map(|i| format!("uid-{i}")).collect();
        let per_slot: Vec<usize> = (0..slots)
            .map(|slot| uids.iter().filter(|u| in_slot(u, slot, slots)).count())
            .collect();
        assert_eq!(per_slot.iter().sum::<usize>(), uids.len(), "each in exactly one slot");
        let even = uids.len() / slots as usize;
        assert!(
            per_slot.iter().all(|n| *n > even / 2 && *n < even * 2),
            "spread: {per_slot:?}"
        );
    }

    #[test]
    fn ready_once_synced_and_unhealthy_only_when_reconciles_stop_ending() {
        let health = Health::default();
        assert!(health.ready().is_err(), "not ready before the watch synced");
        health.set_role(STANDBY);
        assert_eq!(health.ready(), Ok("standby: another replica holds the Lease"));
        health.set_role(LEADER);
        assert!(health.ready().is_err(), "a new leader is ready once its watch synced");
        health.synced.store(true, Ordering::Relaxed);
        assert_eq!(health.ready(), Ok("leader"));
        assert!(health.live().is_ok(), "idle is healthy");
        health.started();
        health.ended();
        health.started();
        assert!(health.live().is_ok(), "a reconcile in flight, one ended just now");
        let long_ago = Instant::now().checked_sub(STUCK_AFTER + Duration::from_secs(1));
        *health.last_end.lock().unwrap() = long_ago;
        assert!(
            health
                .live()
                .unwrap_err()
                .starts_with("no reconcile has ended for 301s")
        );
        health.ended();
        assert!(health.live().is_ok());
    }
}
