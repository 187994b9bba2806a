//! Metric providers: the Prometheus endpoints weir may query, declared by the cluster
//! admin in the controller's own configuration (`weir controller --providers FILE`, a
//! ConfigMap in `config/`), never by a Rollout. A Rollout names one
//! (`analysis.provider`) or gets the default; it cannot choose an address or a Secret.
//!
//! ```yaml
//! providers:
//!   - name: prometheus
//!     address: http://prometheus.istio-system:9090
//!     timeout: 5s                        # per query, at most 30s (default 5s)
//!     secretRef: {name: prometheus-auth} # optional, in weir's own namespace
//!     default: true                      # optional when there is only one
//!     namespaces: [team-a, team-a-*]     # optional: who may use it (see `Scope`)
//! templates: []                          # metric templates (see `templates`)
//! tenantQueries: {}                      # PromQL in Rollouts: refused by default
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::scope::Scope;
use super::templates::{Template, Templates, TenantQueries};
use crate::Error;
use crate::fair::FairSlots;
use crate::plan::{self, MetricKind, Plan, Query};
use weir_core::spec::SpecError;

/// The longest one query may take: a reconcile waits for its looks.
pub const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Looks that may wait on one provider at once. The controller runs 64 reconciles at a
/// time; a provider that stops answering may hold this many of them, never all, so
/// Rollouts on other providers keep their pace.
pub const LOOKS_IN_FLIGHT_PER_PROVIDER: usize = 16;
/// Of those, the looks of one namespace's Rollouts (`crate::fair`): a tenant whose
/// queries take the provider's whole timeout holds 4, the other tenants keep 12.
pub const LOOKS_IN_FLIGHT_PER_NAMESPACE: usize = 4;
/// How long a look waits for its turn on a provider before it reads as busy: a healthy
/// provider answers in milliseconds, so the turn comes well within it.
pub const TURN_WAIT: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    providers: Vec<Declared>,
    #[serde(default)]
    templates: Vec<Template>,
    #[serde(default)]
    tenant_queries: TenantQueries,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Declared {
    name: String,
    address: String,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    secret_ref: Option<SecretName>,
    #[serde(default)]
    default: bool,
    #[serde(default)]
    namespaces: Scope,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretName {
    name: String,
}

/// One provider, as the admin declared it.
#[derive(Clone, Debug)]
pub struct Provider {
    pub name: String,
    pub address: String,
    pub timeout: Duration,
    /// Secret in weir's own namespace with `token`, or `username` and `password`.
    pub secret: Option<String>,
    /// Bounds the looks waiting on this provider at once.
    pub in_flight: Arc<FairSlots>,
    /// The namespaces whose Rollouts may read it.
    pub namespaces: Scope,
}

/// Every provider, and which one a Rollout that names none gets.
#[derive(Clone, Debug, Default)]
pub struct Providers {
    by_name: BTreeMap<String, Provider>,
    default: Option<String>,
    templates: Templates,
}

impl Providers {
    /// One provider named `prometheus` at `address`, the default (`--prometheus URL`).
    pub fn single(address: &str) -> Result<Providers, Error> {
        Providers::from_yaml(&format!("providers: [{{name: prometheus, address: {:?}}}]", address))
    }

    /// Reads the admin's file; refuses it whole, naming the entry, when one entry is wrong.
    pub fn from_yaml(text: &str) -> Result<Providers, Error> {
        let file: File = crate::read_admin_file("providers file", text)?;
        let mut providers = Providers::default();
        for (i, d) in file.providers.into_iter().enumerate() {
            let provider = declared(i, d.name.clone(), &d)?;
            if providers.by_name.contains_key(&provider.name) {
                return Err(Error::Usage(format!(
                    "providers[{i}].name: {:?} is declared twice",
                    d.name
                )));
            }
            if d.default {
                if let Some(other) = &providers.default {
                    return Err(Error::Usage(format!(
                        "providers[{i}].default: {other:?} is the default already"
                    )));
                }
                providers.default = Some(d.name.clone());
            }
            providers.by_name.insert(provider.name.clone(), provider);
        }
        if providers.default.is_none() && providers.by_name.len() == 1 {
            providers.default = providers.by_name.keys().next().cloned();
        }
        providers.templates = Templates::new(file.templates, file.tenant_queries)?;
        if let Some((t, p)) = providers
            .templates
            .providers_named()
            .find(|(_, p)| !providers.by_name.contains_key(*p))
        {
            return Err(Error::Usage(format!(
                "providers file: template {t:?} names provider {p:?}, which is not declared"
            )));
        }
        Ok(providers)
    }

    /// Admits each custom metric's query of a plan for a Rollout of `namespace` reading
    /// `provider`: a template rendered, tenant PromQL confined, or every refusal named.
    pub fn resolve_queries(&self, namespace: &str, provider: &str, plan: &mut Plan) -> Result<(), Vec<SpecError>> {
        let mut problems = Vec::new();
        for (i, metric) in plan.metrics.iter_mut().enumerate() {
            let MetricKind::Custom { query, .. } = &mut metric.kind else {
                continue;
            };
            match self.templates.admit(namespace, provider, query) {
                Ok(admitted) => *query = Query::Admitted(admitted),
                Err((field, problem)) => {
                    problems.push(SpecError::new(format!("analysis.metrics[{i}].{field}"), problem))
                }
            }
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(problems),
        }
    }

    /// The provider a Rollout of `namespace` names, or why it cannot have it (for its
    /// status): one the admin declared, for that namespace.
    pub fn resolve(&self, namespace: &str, name: Option<&str>) -> Result<&Provider, SpecError> {
        let known = || {
            let usable: Vec<&str> = self
                .by_name
                .values()
                .filter(|p| p.namespaces.allows(namespace))
                .map(|p| p.name.as_str())
                .collect();
            if usable.is_empty() {
                "none".into()
            } else {
                usable.join(", ")
            }
        };
        let wrong = |problem: String| SpecError::new("analysis.provider", problem);
        match name.or(self.default.as_deref()) {
            Some(name) => match self.by_name.get(name) {
                None => Err(wrong(format!(
                    "{name:?} is not a metric provider the cluster admin declared (for namespace {namespace}: {})",
                    known()
                ))),
                Some(p) if !p.namespaces.allows(namespace) => Err(wrong(format!(
                    "provider {name:?} is not for namespace {namespace} (the cluster admin declared it for {}); name one of: {}",
                    p.namespaces.describe(),
                    known()
                ))),
                Some(p) => Ok(p),
            },
            None if self.by_name.is_empty() => {
                Err(wrong("the cluster admin declared no metric provider to weir".into()))
            }
            None => Err(wrong(format!(
                "the cluster admin declared no default metric provider; name one of: {}",
                known()
            ))),
        }
    }
}

fn declared(i: usize, name: String, d: &Declared) -> Result<Provider, Error> {
    let wrong = |field: &str, what: String| Error::Usage(format!("providers[{i}].{field}: {what}"));
    if !plan::is_object_name(&name) {
        return Err(wrong("name", format!("{name:?} is not a valid name")));
    }
    if !(d.address.starts_with("http://") || d.address.starts_with("https://")) {
        return Err(wrong("address", format!("{:?} is not an http(s) URL", d.address)));
    }
    let timeout = match &d.timeout {
        Some(t) => plan::parse_duration(t).map_err(|e| wrong("timeout", e))?,
        None => Duration::from_secs(5),
    };
    if timeout.is_zero() || timeout > MAX_QUERY_TIMEOUT {
        return Err(wrong(
            "timeout",
            format!("{} is not in (0s, 30s]", humantime::format_duration(timeout)),
        ));
    }
    d.namespaces
        .check(&format!("providers[{i}]"))
        .map_err(|e| Error::Usage(format!("providers file: {e}")))?;
    Ok(Provider {
        namespaces: d.namespaces.clone(),
        name,
        address: d.address.clone(),
        timeout,
        secret: d.secret_ref.as_ref().map(|s| s.name.clone()),
        in_flight: Arc::new(FairSlots::new(
            LOOKS_IN_FLIGHT_PER_PROVIDER,
            LOOKS_IN_FLIGHT_PER_NAMESPACE,
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollout_gets_the_default_or_a_declared_provider_and_nothing_else() {
        let p = Providers::from_yaml(
            "providers:\n- {name: main, address: 'http://prom:9090', default: true}\n- {name: team-b, address: 'https://b:9090', timeout: 2s, secretRef: {name: b-auth}}\n",
        )
        .unwrap();
        assert_eq!(p.resolve("apps", None).unwrap().name, "main");
        let b = p.resolve("apps", Some("team-b")).unwrap();
        assert_eq!(
            (b.timeout, b.secret.as_deref()),
            (Duration::from_secs(2), Some("b-auth"))
        );
        let err = p.resolve("apps", Some("http://evil:9090")).unwrap_err();
        assert!(err.to_string().starts_with("spec.analysis.provider: \"http://evil:9090\" is not a metric provider the cluster admin declared (for namespace apps: main, team-b)"), "{err}");
    }

    #[test]
    fn a_wrong_entry_is_refused_with_its_field() {
        let err = |text: &str| Providers::from_yaml(text).unwrap_err().to_string();
        assert!(err("providers: [{name: a, address: 'ftp://x'}]").contains("providers[0].address"));
        assert!(
            err("providers: [{name: a, address: 'http://x', timeout: 1h}]")
                .contains("providers[0].timeout: 1h is not in (0s, 30s]")
        );
        assert!(
            err("providers: [{name: a, address: 'http://x'}, {name: a, address: 'http://y'}]")
                .contains("providers[1].name")
        );
        assert!(err("providers: [{name: a, address: 'http://x', token: t}]").contains("unknown field `token`"));
        let none = Providers::from_yaml("providers: []").unwrap();
        assert!(
            none.resolve("apps", None)
                .unwrap_err()
                .to_string()
                .contains("declared no metric provider")
        );
        let two = Providers::from_yaml("providers: [{name: a, address: 'http://x'}, {name: b, address: 'http://y'}]")
            .unwrap();
        assert!(
            two.resolve("apps", None)
                .unwrap_err()
                .to_string()
                .contains("no default metric provider; name one of: a, b")
        );
    }

    #[test]
    fn a_provider_scoped_to_a_team_is_refused_to_the_others() {
        let p = Providers::from_yaml(
            "providers:\n- {name: shared, address: 'http://prom:9090', default: true}\n- {name: team-b, address: 'https://b:9090', namespaces: [team-b, team-b-*]}\n",
        )
        .unwrap();
        assert_eq!(p.resolve("team-b-web", Some("team-b")).unwrap().name, "team-b");
        let err = p.resolve("team-a", Some("team-b")).unwrap_err();
        assert_eq!(err.field, "analysis.provider");
        assert!(
            err.problem.contains("not for namespace team-a") && err.problem.contains("name one of: shared"),
            "{err}"
        );
    }
}
