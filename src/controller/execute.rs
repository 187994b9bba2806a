//! A decision's writes, in their order: status, actions, Events; notifications and
//! telemetry for what was told.

use super::*;

/// Makes the writes of a decision in their order (`Decision::writes`): status, actions,
/// Events. Returns what the API server now holds as status, also when a write failed.
/// A failed action (other than a conflict, retried at once) reaches the status as the
/// condition `Applied=False` and a Warning Event, once per distinct message.
// Long: the writes of a decision and what a failure of each means, in their order, in
// one place: the order is the crash-safety argument (see `Decision::writes`).
pub(super) async fn execute(
    ctx: &Context,
    rollout: &Rollout,
    obs: Option<&Observation>,
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
                    Some(obs) => kubernetes::apply(&ctx.client, &ctx.routers, rollout, &names, obs, action).await,
                    None => Err(Error::Invariant("an action without an observation".into())),
                };
                match result {
                    Ok(applied) => {
                        if let Some(applied) = applied {
                            ctx.copies.record(rollout, &names, &applied);
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

pub(super) async fn report_apply_failure(
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
pub(super) fn notify(ctx: &Context, rollout: &Rollout, e: &engine::Event, status: &RolloutStatus, now: Timestamp) {
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

pub(super) async fn publish(ctx: &Context, rollout: &Rollout, e: &engine::Event) {
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
