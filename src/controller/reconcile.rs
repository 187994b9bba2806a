//! The reconcile pipeline, shared by a live Rollout and a deleted one (the finalizer's
//! cleanup): dereference → observe → decide → execute → remember.

use super::execute::{execute, publish};
use super::readings::read_metrics;
use super::*;
use crate::admin::Admitted;
use crate::edges::kubernetes::Observation;
use weir_core::spec::SpecError;

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

/// `kubernetes::observation`, and what the objects alone cannot tell: a route whose
/// Service another router's object also routes is unusable (`hosts`); since when the
/// mesh has confirmed the route (`confirmed`).
fn observe(ctx: &Context, rollout: &Rollout, names: &Names, objects: &Objects) -> Observation {
    let mut obs = kubernetes::observation(rollout, names, objects);
    if let (Some(router), Some(route)) = (rollout.spec.traffic_routing.router(), &objects.route) {
        obs.world.routing_conflict = ctx.hosts.conflict(index::route_kind(router), route);
        obs.world.mesh = ctx.confirmed.since(route, obs.world.mesh);
    }
    obs
}

/// Observes what the decision needs: everything, when the spec can be planned; else as
/// much as the names in the spec allow (a canary can still be withdrawn), or nothing.
async fn observe_for(ctx: &Context, rollout: &Rollout, names: &Names, full: bool) -> Option<Observation> {
    match objects::fetch(&ctx.client, &ctx.copies, &ctx.routers, rollout, names, Ok(Auth::None)).await {
        Ok(objects) => Some(observe(ctx, rollout, names, &objects)),
        Err(e) if !full => {
            warn!(rollout = %key_of(rollout), %e, "cannot observe the objects of an invalid Rollout");
            None
        }
        Err(_) => None,
    }
}

/// What a reconcile reads of the admin's configuration, once (`Admin::admit`): the plan
/// of the spec (the admin's default windows applied, its metrics' queries admitted) and
/// the metric provider it may use; its receivers and webhook addresses checked. A
/// provider, template, receiver or address the admin did not allow for its namespace
/// makes the Rollout invalid, like any other field that does not fit.
fn dereference<'a>(ctx: &'a Context, rollout: &Rollout) -> Result<Admitted<'a>, Vec<SpecError>> {
    ctx.admin.admit(&rollout.namespace().unwrap_or_default(), &rollout.spec)
}

/// One pass of the pipeline over a Rollout, for a live one and a deleted one alike:
/// begun where weir left it (`Looks::resume`), ended by executing a decision and
/// remembering what was decided and what the API server now holds.
struct Pass<'a> {
    ctx: &'a Context,
    rollout: &'a Rollout,
    key: String,
    now: Timestamp,
    /// What the API server holds (or will once the watch catches up).
    written: RolloutStatus,
}

impl<'a> Pass<'a> {
    /// Begins a pass: the status to decide from, and whether to read the objects afresh
    /// (`Resumed::afresh`).
    fn begin(ctx: &'a Context, rollout: &'a Rollout) -> (Pass<'a>, RolloutStatus, bool) {
        let stored = rollout.status.clone().unwrap_or_default();
        let key = look_key(&rollout.namespace().unwrap_or_default(), &rollout.name_any());
        let resumed = ctx.looks.resume(&key, rollout, &stored);
        let pass = Pass {
            ctx,
            rollout,
            key,
            now: Timestamp::now(),
            written: resumed.written,
        };
        (pass, resumed.status, resumed.afresh)
    }

    /// Makes the decision's writes (`execute`) and remembers the pass.
    async fn end(self, decision: &Decision, obs: Option<&Observation>) -> Result<RolloutStatus, Error> {
        let (ctx, rollout) = (self.ctx, self.rollout);
        let executed = execute(ctx, rollout, obs, decision, &self.written, self.now).await;
        let (written, result) = match executed {
            Ok(written) => (written.clone(), Ok(written)),
            Err((written, e)) => (written, Err(e)),
        };
        let uid = rollout.uid().unwrap_or_default();
        ctx.looks.remember(&self.key, &uid, &decision.status, &written);
        result
    }
}

/// A live Rollout: dereference → observe → read metrics → decide → execute.
async fn reconcile_rollout(rollout: Arc<Rollout>, ctx: &Context) -> Result<Requeue, Error> {
    let generation = rollout.meta().generation;
    let dereferenced = dereference(ctx, &rollout);
    let names = Names::of(&rollout.spec);
    let (pass, status, afresh) = Pass::begin(ctx, &rollout);
    let now = pass.now;
    let (decision, obs) = match &dereferenced {
        Err(errors) => {
            // Reads only when there is a canary to withdraw or drain.
            let state = engine::state_of(&status);
            let busy = state.canary().is_some() || matches!(state, weir_core::state::State::Draining { .. });
            let obs = match busy {
                true => observe_for(ctx, &rollout, &names, false).await,
                false => None,
            };
            let world = obs.as_ref().map(|o| o.world.clone()).unwrap_or_else(World::unobserved);
            (engine::decide(Err(errors), generation, &status, &world, now), obs)
        }
        Ok(Admitted { plan, provider }) => {
            // Read from the watches' copies; from the API server after a conflict.
            let auth = (ctx.credentials)
                .of(&ctx.client, Some(provider), &ctx.secrets_namespace)
                .await?;
            let afresh_copies = Afresh(&ctx.copies);
            let copies: &dyn objects::Copies = if afresh { &afresh_copies } else { &ctx.copies };
            let objects = objects::fetch(&ctx.client, copies, &ctx.routers, &rollout, &names, auth).await?;
            let mut obs = observe(ctx, &rollout, &names, &objects);
            obs.world.hook_answers = ctx.webhooks.answers(&pass.key);
            if let Some(req) = engine::analysis_request(plan, &status, now) {
                obs.world.readings = Some(read_metrics(ctx, &rollout, plan, provider, &obs.auth, req).await);
            }
            let decision = engine::decide(Ok(plan), generation, &status, &obs.world, now);
            (decision, Some(obs))
        }
    };
    pass.end(&decision, obs.as_ref()).await?;
    ctx.webhooks.ask(&rollout, &decision.asks);
    ctx.telemetry.record(&rollout, &status, &decision.status, now);
    Ok(next_reconcile(decision.requeue_after))
}

/// When a Rollout is looked at again. Nothing due: only when something changes, or the
/// resync sweep comes by (`resync`); a timer per idle Rollout would cost ~1.5 KB each
/// in kube's scheduler (15 MB at 10,000) and come back as one wave after a takeover.
pub(super) fn next_reconcile(requeue_after: Option<Duration>) -> Requeue {
    requeue_after.map_or_else(Requeue::await_change, Requeue::requeue)
}

/// The finalizer's cleanup: all traffic back on stable (written as an intent first),
/// the canary drains, then weir lets go of the Deployment, deletes the canary and the
/// finalizer goes. Until then the
/// cleanup reports `NotReleasedYet`, which keeps the finalizer and comes back in time.
async fn release_rollout(rollout: Arc<Rollout>, ctx: &Context) -> Result<Requeue, Error> {
    let names = Names::of(&rollout.spec);
    let (pass, status, _) = Pass::begin(ctx, &rollout);
    let (now, key) = (pass.now, pass.key.clone());
    // A fresh read, never the watches' copies: this is the proof that lets the
    // finalizer go.
    let fresh = Afresh(&ctx.copies);
    let obs = match objects::fetch(&ctx.client, &fresh, &ctx.routers, &rollout, &names, Ok(Auth::None)).await {
        Ok(objects) => {
            let mut obs = observe(ctx, &rollout, &names, &objects);
            if objects.route.is_none() {
                // No VirtualService routes anything to the canary.
                obs.world.traffic = Ok(0);
            }
            obs
        }
        Err(e) => return Err(release_unproven(ctx, &rollout, &key, e).await),
    };
    let planned = plan::plan(&rollout.spec).ok();
    let delay = planned
        .as_ref()
        .map_or(plan::DEFAULT_SCALE_DOWN_DELAY, |p| p.scale_down_delay);
    let decision = engine::release(
        planned.as_ref(),
        rollout.meta().generation,
        &status,
        &obs.world,
        delay,
        now,
    );
    pass.end(&decision, Some(&obs)).await?;
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
        // The copy the decision read may be stale (its watch lags): read the objects.
        ctx.looks.conflicted(&key_of(&rollout));
        return Requeue::requeue(Duration::from_millis(200));
    }
    warn!(rollout = %key_of(&rollout), %error, "reconcile failed; retrying");
    // Blips clear fast; a retry within a few seconds keeps steps near their time.
    Requeue::requeue(Duration::from_secs(2))
}
