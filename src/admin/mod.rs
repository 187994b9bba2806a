//! The cluster admin's configuration, read at start, and what a Rollout may reach of it:
//! the metric providers and query templates (`providers`), the default release windows
//! (`windows`), the notification receivers (`receivers`), the webhook addresses
//! (`webhooks`), each scoped to namespaces (`scope`). `Admin::admit` is the one check a
//! Rollout passes before weir acts on it, in the controller and in `weir validate`.

pub mod providers;
pub mod receivers;
pub mod scope;
pub mod templates;
pub mod webhooks;
pub mod windows;

use weir_core::plan::{self, Plan};
use weir_core::spec::{RolloutSpec, SpecError};

use providers::{Provider, Providers};
use receivers::Receivers;
use webhooks::WebhookPolicy;
use windows::WindowDefaults;

/// Everything the admin declared.
#[derive(Clone, Debug, Default)]
pub struct Admin {
    pub providers: Providers,
    pub windows: WindowDefaults,
    pub receivers: Receivers,
    pub webhooks: WebhookPolicy,
}

/// A Rollout weir may act on: its plan (the admin's windows applied, its metrics'
/// queries resolved) and the provider it reads.
pub struct Admitted<'a> {
    pub plan: Plan,
    pub provider: &'a Provider,
}

impl Admin {
    /// Plans a Rollout of `namespace` and checks that everything it names is the admin's
    /// and scoped to it. Every problem names its field.
    pub fn admit(&self, namespace: &str, spec: &RolloutSpec) -> Result<Admitted<'_>, Vec<SpecError>> {
        let spec = self.windows.apply(namespace, spec);
        let mut plan = plan::plan(&spec)?;
        let provider = self
            .providers
            .resolve(namespace, plan.provider.as_deref())
            .map_err(|e| vec![e])?;
        let mut problems = Vec::new();
        if let Err(e) = self.providers.resolve_queries(namespace, &provider.name, &mut plan) {
            problems.extend(e);
        }
        if let Err(e) = self.receivers.check(namespace, &spec.notify) {
            problems.push(e);
        }
        if let Err(e) = self.webhooks.check(namespace, &plan.hooks) {
            problems.push(e);
        }
        match problems.is_empty() {
            true => Ok(Admitted { plan, provider }),
            false => Err(problems),
        }
    }
}
