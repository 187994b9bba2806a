//! Metric readings for a look of the judge, from the Rollout's provider, within the
//! namespace's share of that provider.

use super::*;
use crate::admin::providers::Provider;

/// Reads every metric of a due look, concurrently: one query per metric, on the
/// Rollout's provider. A provider that already has its share of looks waiting on it
/// gets no more: after a second's wait for its turn this look reads as an error (the
/// step holds) instead of holding a reconcile worker from Rollouts on other providers.
pub(super) async fn read_metrics(
    ctx: &Context,
    rollout: &Rollout,
    plan: &Plan,
    provider: &Provider,
    auth: &Result<Auth, String>,
    req: AnalysisRequest,
) -> Vec<(String, Reading)> {
    let namespace = rollout.namespace().unwrap_or_default();
    // Held until the reads are done.
    let permit = provider
        .in_flight
        .acquire_within(&namespace, crate::admin::providers::TURN_WAIT)
        .await;
    let endpoint = match (&permit, auth) {
        (_, Err(e)) => Err(e.clone()),
        (None, _) => Err(format!(
            "metric provider {} is busy: namespace {namespace}'s {} looks, or all {}, are waiting on it already",
            provider.name,
            crate::admin::providers::LOOKS_IN_FLIGHT_PER_NAMESPACE,
            crate::admin::providers::LOOKS_IN_FLIGHT_PER_PROVIDER
        )),
        (Some(_), Ok(auth)) => Ok(Endpoint {
            address: provider.address.clone(),
            auth: auth.clone(),
            timeout: provider.timeout,
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
