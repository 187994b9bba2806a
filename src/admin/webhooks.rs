//! Which addresses a Rollout's webhooks may call, and which namespaces may send
//! `metadata`, as the cluster admin said (`--webhooks FILE`, ConfigMap key
//! `webhooks.yaml`).
//!
//! ```yaml
//! ownNamespaceServices: true   # default: http(s)://<svc>.<rollout's namespace>.svc[.cluster.local][:port]/
//! allowedUrls:                 # and these prefixes (scheme, host and port exact, path a prefix)
//!   - http://flagger-loadtester.test.svc:8080/           # for every namespace
//!   - url: http://gateway.shared.svc/tenant-a/
//!     namespaces: [tenant-a]                             # for these only (see `Scope`)
//! metadata: [load-tests, team-b-*]   # namespaces whose webhooks may carry `metadata`
//! ```
//!
//! `metadata` is what a load tester runs (Flagger's runs `metadata.cmd`); weir's body has
//! that shape, so a tenant that may send metadata may run commands on any load tester it
//! may call. By default no namespace may: a Rollout that sets it is refused, naming the
//! field. What the address then reaches is checked again at each call
//! (`edges::webhooks`): an own-namespace Service is looked up, and called by its fully
//! qualified name.

use serde::Deserialize;
use weir_core::hooks::{HookPlan, UrlParts, url_parts};
use weir_core::spec::SpecError;

use super::scope::Scope;
use crate::Error;

/// Which addresses a Rollout's webhooks may call.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookPolicy {
    own_namespace_services: bool,
    allowed: Vec<(UrlParts, Scope)>,
    metadata: Scope,
}

impl Default for WebhookPolicy {
    fn default() -> Self {
        WebhookPolicy {
            own_namespace_services: true,
            allowed: Vec::new(),
            metadata: Scope::nowhere(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyFile {
    #[serde(default = "yes")]
    own_namespace_services: bool,
    #[serde(default)]
    allowed_urls: Vec<AllowedUrl>,
    #[serde(default = "Scope::nowhere")]
    metadata: Scope,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AllowedUrl {
    Everywhere(String),
    Scoped {
        url: String,
        #[serde(default)]
        namespaces: Scope,
    },
}

fn yes() -> bool {
    true
}

/// Where an own-namespace Service address points: `<service>.<namespace>.svc[.cluster.local]`.
pub fn own_service<'a>(host: &'a str, namespace: &str) -> Option<&'a str> {
    let mut labels = host.split('.');
    let service = labels.next().unwrap_or_default();
    let rest: Vec<&str> = labels.collect();
    let own = matches!(rest.as_slice(), [ns, "svc"] | [ns, "svc", "cluster", "local"] if *ns == namespace);
    (own && crate::plan::is_object_name(service)).then_some(service)
}

impl WebhookPolicy {
    pub fn from_yaml(text: &str) -> crate::Result<WebhookPolicy> {
        let file: PolicyFile = crate::read_admin_file("webhooks file", text)?;
        let mut allowed = Vec::new();
        for (i, entry) in file.allowed_urls.into_iter().enumerate() {
            let (url, scope) = match entry {
                AllowedUrl::Everywhere(url) => (url, Scope::everywhere()),
                AllowedUrl::Scoped { url, namespaces } => (url, namespaces),
            };
            let at = format!("webhooks file: allowedUrls[{i}]");
            let parts = url_parts(&url).map_err(|e| Error::Usage(format!("{at}: {e}")))?;
            scope.check(&at)?;
            allowed.push((parts, scope));
        }
        file.metadata.check("webhooks file: metadata")?;
        Ok(WebhookPolicy {
            own_namespace_services: file.own_namespace_services,
            allowed,
            metadata: file.metadata,
        })
    }

    /// Checks every webhook of a Rollout in `namespace`; the error names the field.
    pub fn check(&self, namespace: &str, hooks: &[HookPlan]) -> Result<(), SpecError> {
        for (i, hook) in hooks.iter().enumerate() {
            let field = format!("webhooks[{i}].url");
            let parts = url_parts(&hook.url).map_err(|e| SpecError::new(field.clone(), e))?;
            if !self.allows(namespace, &parts) {
                return Err(SpecError::new(
                    field,
                    format!(
                        "{} is not an address the cluster admin allowed: use a Service of namespace {namespace} (http://<service>.{namespace}.svc[:port]/) or one of the admin's allowedUrls for this namespace",
                        hook.url
                    ),
                ));
            }
            if !hook.metadata.is_empty() && !self.metadata.allows(namespace) {
                return Err(SpecError::new(
                    format!("webhooks[{i}].metadata"),
                    format!(
                        "the cluster admin does not let namespace {namespace} send metadata (a load tester runs it as a command); remove it, or ask for namespace {namespace} in the webhooks file's metadata list"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// One address, as `check` sees it.
    pub fn check_one(&self, namespace: &str, url: &str) -> Result<(), String> {
        let parts = url_parts(url)?;
        match self.allows(namespace, &parts) {
            true => Ok(()),
            false => Err(format!("{url} is not an address the cluster admin allowed")),
        }
    }

    fn allows(&self, namespace: &str, url: &UrlParts) -> bool {
        let own = self.own_namespace_services && own_service(&url.host, namespace).is_some();
        own || self.allowed.iter().any(|(a, scope)| {
            scope.allows(namespace)
                && a.scheme == url.scheme
                && a.host == url.host
                && a.port == url.port
                && url.path.starts_with(&a.path)
        })
    }

    /// Does this address reach the Rollout's own namespace's Service (looked up before
    /// each call), rather than an address the admin listed?
    pub fn is_own_service(&self, namespace: &str, url: &UrlParts) -> bool {
        let listed = self.allowed.iter().any(|(a, scope)| {
            scope.allows(namespace) && a.scheme == url.scheme && a.host == url.host && a.port == url.port
        });
        !listed && own_service(&url.host, namespace).is_some()
    }
}
