//! weir: a progressive-delivery controller for Kubernetes.
//!
//! The pure core (crate `weir-core`, re-exported here) decides: `plan` (validate and
//! default a spec), `judge` (verdicts from metric readings), `engine` (actions and new
//! status). This crate holds the rest, in four rooms:
//!
//! * `controller` — the reconcile pipeline, its watches and cache, leader election and
//!   the HTTP endpoints.
//! * `edges` — everything weir reads or writes outside itself: Kubernetes, Istio,
//!   Prometheus, Events, and outbound HTTP (webhooks, notifications).
//! * `admin` — the cluster admin's configuration: metric providers, release windows
//!   (receivers and webhook addresses are read by their edges).
//! * `cli` — what people use: the `weir` command, its dashboard and report.
//!
//! Beside them, what every room uses: `api` (the custom resource), `yaml` (the bounded
//! YAML reader every input goes through), `fair` (per-namespace shares of every shared
//! resource) and `telemetry` (what `/metrics` counts). Arrows point one way: `cli` →
//! `controller` → `edges` → `admin` → the shared modules → `weir-core`
//! (`tests/manifests.rs` checks it).

// Nothing a Rollout author writes may panic weir: collections are read with `get`, never
// indexed (issue 23). Tests may index.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod admin;
pub mod api;
pub mod cli;
pub mod controller;
pub mod edges;
pub mod fair;
pub mod telemetry;
pub mod yaml;

pub use weir_core::{engine, judge, plan, vocabulary};

/// Every error weir's I/O can meet. Problems a user can fix are not errors: they become
/// status conditions and Events, and the controller keeps serving other Rollouts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::InferConfigError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal invariant broken: {0}")]
    Invariant(String),
    #[error("{0}")]
    Usage(String),
    /// Leader election: the Lease could not be read or written, or was lost.
    #[error("leader election: {0}")]
    Lease(String),
    /// Not an error: a deleted Rollout's canary still drains; the finalizer stays and the
    /// cleanup comes back after this long.
    #[error("still handing back traffic and the Deployment; again in {0:?}")]
    NotReleasedYet(std::time::Duration),
    /// The Rollout's finalizers on the server were not the ones weir read: the finalizer
    /// patch's `test` failed, mostly because weir's cache had not yet seen weir's own
    /// finalizer write when the next reconcile began. Decided again once it has.
    #[error("the Rollout's finalizers changed since weir read them")]
    FinalizersChanged,
    /// A reconcile panicked (a bug): caught, told on the Rollout, tried again after `retry`.
    #[error("reconcile panicked: {message}")]
    Panicked {
        message: String,
        retry: std::time::Duration,
    },
}

impl Error {
    /// The object changed between weir's read and its write: the API's 409 Conflict
    /// (reason `Conflict`), or the finalizer patch's failed `test` (`FinalizersChanged`;
    /// the API server answers that 422 `Invalid`, which for any other write is a real
    /// error). Re-observe and decide again.
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::Kube(kube::Error::Api(s)) => s.code == 409 || s.reason == "Conflict",
            Error::FinalizersChanged => true,
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Reads one of the cluster admin's YAML files (`what`: "providers file", ...); a field
/// that does not fit is named by its path.
pub(crate) fn read_admin_file<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    yaml::from_str(text).map_err(|e| Error::Usage(format!("{what}: {e}")))
}
