//! What weir's tests, benches and demo run against, and never part of the shipped
//! `weir` binary: a local control plane built from Go modules with kwok for pods
//! (`devcluster`), a real Prometheus on loopback, and a mesh simulator standing in for
//! the Envoy sidecars (`meshsim`).

pub mod devcluster;
pub mod gitops;
pub mod meshsim;
pub mod rollouts;

/// What can go wrong while setting up or driving the local test environment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("YAML: {0}")]
    Saphyr(#[from] serde_saphyr::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// A process, port or object of the test environment is not as expected.
    #[error("{0}")]
    Setup(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
