//! Notification receivers, declared by the cluster admin (`weir controller
//! --notifications FILE`, a key of the ConfigMap in `config/`); their URLs are read from
//! Secrets in weir's own namespace. A Rollout only names receivers (`spec.notify`), and
//! only those scoped to its namespace: a tenant cannot post to another team's channel.
//!
//! ```yaml
//! receivers:
//!   - name: team-slack
//!     type: slack                      # slack | teams | webhook
//!     urlSecret: slack-hook            # Secret in weir's namespace, key `url`
//!     namespaces: [team-a, team-a-*]   # who may name it (see `Scope`); default: every namespace
//!   - name: audit
//!     type: webhook
//!     url: https://audit.example/weir  # or the URL itself, in the admin's file
//!     signingSecret: audit-hmac        # key `key`: X-Weir-Signature: sha256=<hmac>
//!     on: [RolledBack, Promoted]       # default: every kind
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_core::spec::SpecError;

use super::scope::Scope;
use crate::Error;
use crate::vocabulary::Reason;

/// What a notification tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Started,
    RolledBack,
    Promoted,
    /// Held by a release window, or waiting for a confirmation.
    Waiting,
    /// Half way to its progress deadline without moving on (no verdict, no ready pods,
    /// no yes from a pre-rollout webhook), or a promotion past its deadline.
    Stuck,
    AnalysisError,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Started,
        Kind::RolledBack,
        Kind::Promoted,
        Kind::Waiting,
        Kind::Stuck,
        Kind::AnalysisError,
    ];

    /// The engine's Event that makes a notification, if any.
    pub fn of_event(reason: Reason) -> Option<Kind> {
        match reason {
            Reason::CanaryStarted => Some(Kind::Started),
            Reason::RolledBack => Some(Kind::RolledBack),
            Reason::Promoted => Some(Kind::Promoted),
            Reason::WaitingForWindow | Reason::WaitingForConfirmation => Some(Kind::Waiting),
            Reason::DeadlineNear | Reason::WaitingForPods | Reason::PromotionStalled => Some(Kind::Stuck),
            Reason::AnalysisError => Some(Kind::AnalysisError),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    receivers: Vec<Declared>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Declared {
    name: String,
    #[serde(rename = "type")]
    type_: Format,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_secret: Option<String>,
    #[serde(default)]
    signing_secret: Option<String>,
    #[serde(default)]
    on: Option<Vec<Kind>>,
    #[serde(default)]
    namespaces: Scope,
}

/// The body a receiver expects.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Slack,
    Teams,
    Webhook,
}

/// Where a receiver's URL comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Url {
    Literal(String),
    /// Key `url` of this Secret in weir's namespace.
    Secret(String),
}

/// One receiver, as the admin declared it.
#[derive(Clone, Debug, PartialEq)]
pub struct Receiver {
    pub name: String,
    pub format: Format,
    pub url: Url,
    /// Key `key` of this Secret in weir's namespace signs a webhook's body.
    pub signing_secret: Option<String>,
    pub on: Vec<Kind>,
    /// The namespaces whose Rollouts may name it.
    pub namespaces: Scope,
}

/// Every receiver the admin declared.
#[derive(Clone, Debug, Default)]
pub struct Receivers(BTreeMap<String, Receiver>);

impl Receivers {
    /// Reads the admin's file; refuses it whole, every problem named by its path.
    pub fn from_yaml(text: &str) -> Result<Receivers, Error> {
        let file: File = crate::read_admin_file("notifications file", text)?;
        let mut receivers = BTreeMap::new();
        for (i, d) in file.receivers.into_iter().enumerate() {
            let r = declared(i, d)?;
            if receivers.contains_key(&r.name) {
                return Err(Error::Usage(format!(
                    "notifications file: receivers[{i}].name: {:?} is declared twice",
                    r.name
                )));
            }
            receivers.insert(r.name.clone(), r);
        }
        Ok(Receivers(receivers))
    }

    /// Checks a Rollout's `spec.notify`: every name must be a receiver the admin declared
    /// for the Rollout's namespace.
    pub fn check(&self, namespace: &str, names: &[String]) -> Result<(), SpecError> {
        for (i, name) in names.iter().enumerate() {
            if let Some(r) = self.0.get(name)
                && !r.namespaces.allows(namespace)
            {
                return Err(SpecError::new(
                    format!("notify[{i}]"),
                    format!(
                        "receiver {name:?} is not for namespace {namespace} (the cluster admin declared it for {})",
                        r.namespaces.describe()
                    ),
                ));
            }
            if !self.0.contains_key(name) {
                let known = self.0.keys().cloned().collect::<Vec<_>>().join(", ");
                return Err(SpecError::new(
                    format!("notify[{i}]"),
                    format!(
                        "{name:?} is not a receiver the cluster admin declared (declared: {})",
                        if known.is_empty() { "none" } else { &known }
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    pub fn get(&self, name: &str) -> Option<&Receiver> {
        self.0.get(name)
    }
}

fn declared(i: usize, d: Declared) -> Result<Receiver, Error> {
    let wrong = |field: &str, what: &str| Error::Usage(format!("notifications file: receivers[{i}].{field}: {what}"));
    if !crate::plan::is_object_name(&d.name) {
        return Err(wrong("name", "expected a lowercase name (letters, digits, '-')"));
    }
    let url = match (d.url, d.url_secret) {
        (Some(u), None) if u.starts_with("http://") || u.starts_with("https://") => Url::Literal(u),
        (Some(_), None) => return Err(wrong("url", "expected an http:// or https:// URL")),
        (None, Some(s)) if crate::plan::is_object_name(&s) => Url::Secret(s),
        (None, Some(_)) => return Err(wrong("urlSecret", "expected the name of a Secret")),
        _ => return Err(wrong("url", "expected exactly one of url and urlSecret")),
    };
    if d.signing_secret.is_some() && d.type_ != Format::Webhook {
        return Err(wrong("signingSecret", "only a webhook's body is signed"));
    }
    d.namespaces.check(&format!("notifications file: receivers[{i}]"))?;
    Ok(Receiver {
        namespaces: d.namespaces,
        name: d.name,
        format: d.type_,
        url,
        signing_secret: d.signing_secret,
        on: d.on.unwrap_or_else(|| Kind::ALL.to_vec()),
    })
}

impl Kind {
    pub fn verb(self) -> &'static str {
        match self {
            Kind::Started => "canary started",
            Kind::RolledBack => "rolled back",
            Kind::Promoted => "promoted",
            Kind::Waiting => "waiting (a release window or a confirmation)",
            Kind::Stuck => "stuck",
            Kind::AnalysisError => "cannot read its metrics",
        }
    }

    pub fn colour(self) -> &'static str {
        match self {
            Kind::RolledBack | Kind::AnalysisError | Kind::Stuck => "D93F0B",
            Kind::Promoted => "2EA44F",
            Kind::Started | Kind::Waiting => "0366D6",
        }
    }
}
