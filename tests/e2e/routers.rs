//! What holds for both routers: a Service that a VirtualService and an HTTPRoute both
//! route is refused, naming both objects; once one of them goes, the release goes on.
//! (Promotion, rollback, deletion and drift repair on Gateway API are the `_on`
//! variants of the other modules' scenarios, run with `Layout::GatewayApi`.)

use super::*;

/// An HTTPRoute-routed application, then a VirtualService for the same Service
/// mid-canary: the canary is withdrawn with a message naming both; the VirtualService
/// deleted, the next release is promoted.
pub(crate) async fn a_service_routed_twice_is_refused_naming_both(env: &Env, f: &Failures) -> Result<(), String> {
    let s = Scenario::start_on(env, f, "e2e-gw-twice", &env.provider, Layout::GatewayApi).await?;
    let ns = s.ns.as_str();
    s.bump("nginxdemos/hello:2.0").await;
    s.until_weight(10).await?;
    let legacy = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: legacy, namespace: {ns}}}\n\
         spec:\n  hosts: [backend.{ns}.svc.cluster.local]\n  http: [{{route: [{{destination: {{host: backend}}}}]}}]\n"
    );
    devcluster::apply_yaml(&env.client, &legacy)
        .await
        .map_err(|e| format!("{ns}: {e}"))?;
    let status = s.until_phase(&[Phase::InvalidSpec], Duration::from_secs(30)).await?;
    let both = format!("Service {ns}/backend is routed by both HTTPRoute {ns}/backend and VirtualService {ns}/legacy");
    s.expect(status.message.contains(&both), format!("message: {}", status.message));
    let w = s.weights().await;
    s.expect(w.last() == Some(&0), format!("the canary keeps weight: {w:?}"));
    vs_api(&env.client, ns)
        .delete("legacy", &Default::default())
        .await
        .map_err(|e| format!("{ns}: delete legacy: {e}"))?;
    s.bump("nginxdemos/hello:3.0").await;
    s.expect_promoted().await?;
    s.expect_no_request_met_no_pods();
    Ok(())
}
