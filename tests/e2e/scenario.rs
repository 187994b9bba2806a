//! The scenario language the end-to-end tests are written in. A `Scenario` is the example
//! application in a namespace of its own, taken over by weir, with a recorder of every
//! canary weight its VirtualService shows:
//!
//! ```ignore
//! let s = Scenario::start(env, f, "e2e-healthy", &env.provider).await?;
//! s.bump("nginxdemos/hello:2.0").await;
//! s.until_weight(25).await?;
//! let status = s.expect_promoted().await?;
//! s.expect_weights(&[0, 10, 25, 50, 100, 0]).await;
//! s.expect_no_request_met_no_pods();
//! ```
//!
//! Waits return an error (the scenario stops there); expectations record a failure and
//! go on, so one run reports everything that did not hold.

use weir::api::RolloutStatus;

use super::*;

/// How long a release may take from its bump to its end (steps of a few seconds).
const RELEASE_LIMIT: Duration = Duration::from_secs(120);
/// How long a weight may take to appear.
const WEIGHT_LIMIT: Duration = Duration::from_secs(60);

pub(crate) struct Scenario<'a> {
    pub(crate) env: &'a Env,
    failures: &'a Failures,
    pub(crate) ns: String,
    weights: Arc<Mutex<Vec<u64>>>,
    /// Requests that met no ready pod before weir took over (not weir's business).
    no_ready_before: u64,
}

impl<'a> Scenario<'a> {
    /// Applies the application in `ns`, its metrics read from `provider`, and waits until
    /// weir has taken it over.
    pub(crate) async fn start(env: &'a Env, failures: &'a Failures, ns: &str, provider: &str) -> Result<Self, String> {
        Scenario::start_on(env, failures, ns, provider, Layout::Istio).await
    }

    /// `start`, with the application routed as `layout` says.
    pub(crate) async fn start_on(
        env: &'a Env,
        failures: &'a Failures,
        ns: &str,
        provider: &str,
        layout: Layout,
    ) -> Result<Self, String> {
        let (weights, no_ready_before) = setup_on(env, ns, provider, layout).await?;
        Ok(Scenario {
            env,
            failures,
            ns: ns.to_string(),
            weights,
            no_ready_before,
        })
    }

    /// A new image in the Deployment's template: a release begins.
    pub(crate) async fn bump(&self, image: &str) {
        bump(&self.env.client, &self.ns, image).await;
    }

    /// Waits until the VirtualService shows `weight` for the canary.
    pub(crate) async fn until_weight(&self, weight: u64) -> Result<(), String> {
        let reached = wait_weight(&self.weights, weight, WEIGHT_LIMIT).await;
        reached.map_err(|e| format!("{}: {e}", self.ns))
    }

    /// Waits until the Rollout is in one of `phases`; its status then.
    pub(crate) async fn until_phase(&self, phases: &[Phase], limit: Duration) -> Result<RolloutStatus, String> {
        let r = wait_phase(&self.env.client, &self.ns, phases, limit).await?;
        Ok(r.status.unwrap_or_default())
    }

    /// Waits until the release ends (promoted or rolled back); its status then.
    pub(crate) async fn until_released(&self) -> Result<RolloutStatus, String> {
        self.until_phase(&[Phase::Succeeded, Phase::RolledBack], RELEASE_LIMIT)
            .await
    }

    /// The release ends promoted.
    pub(crate) async fn expect_promoted(&self) -> Result<RolloutStatus, String> {
        let status = self.until_released().await?;
        let promoted = status.phase == Phase::Succeeded;
        self.expect(promoted, format!("not promoted: {}", status.message));
        Ok(status)
    }

    /// The release ends rolled back.
    pub(crate) async fn expect_rolled_back(&self) -> Result<RolloutStatus, String> {
        let status = self.until_released().await?;
        let rolled_back = status.phase == Phase::RolledBack;
        self.expect(rolled_back, format!("not rolled back: {}", status.message));
        Ok(status)
    }

    /// Records a failure, named by the scenario's namespace, unless `ok`.
    pub(crate) fn expect(&self, ok: bool, what: impl std::fmt::Display) {
        check(self.failures, ok, format!("{}: {what}", self.ns));
    }

    /// Every canary weight the VirtualService showed, once the last write settled.
    pub(crate) async fn weights(&self) -> Vec<u64> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.weights.lock().unwrap().clone()
    }

    /// The VirtualService showed exactly these canary weights, in order.
    pub(crate) async fn expect_weights(&self, expected: &[u64]) {
        let w = self.weights().await;
        self.expect(w == expected, format!("weights went {w:?}, expected {expected:?}"));
    }

    /// No request of this namespace met a destination without ready pods since weir
    /// took the application over.
    pub(crate) fn expect_no_request_met_no_pods(&self) {
        check_no_request_met_no_pods(self.env, self.failures, &self.ns, self.no_ready_before);
    }

    /// The canary weights shown so far, without waiting.
    pub(crate) fn weights_now(&self) -> Vec<u64> {
        self.weights.lock().unwrap().clone()
    }

    /// Merges `patch` into the Rollout and waits until weir has observed it.
    pub(crate) async fn patch_spec(&self, patch: serde_json::Value, what: &str) -> Result<(), String> {
        patch_spec(&self.env.client, &self.ns, patch, what).await
    }

    /// A Deployment of the scenario's namespace.
    pub(crate) async fn deployment(&self, name: &str) -> Option<Deployment> {
        deployment(&self.env.client, &self.ns, name).await
    }

    /// Sets (or with `None` removes) an annotation of the Rollout, as `weir pause`,
    /// `weir resume` and Argo CD's actions do.
    pub(crate) async fn annotate(&self, key: &str, value: Option<&str>) {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        let api = Api::<Rollout>::namespaced(self.env.client.clone(), &self.ns);
        let patched = api
            .patch("backend", &PatchParams::default(), &Patch::Merge(patch))
            .await;
        self.expect(patched.is_ok(), format!("annotating {key}: {patched:?}"));
    }

    /// The Rollout as the API server has it now.
    pub(crate) async fn rollout(&self) -> Rollout {
        rollout(&self.env.client, &self.ns).await
    }
}
