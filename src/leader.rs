//! High availability: replicas of weir elect a leader on a `coordination.k8s.io` Lease
//! in weir's own namespace (kube-lease-manager: server-side apply, so two replicas can
//! never both take a free Lease). Only the leader runs the controller, so only it
//! writes; a standby serves `/healthz`, `/readyz` (which says "standby") and `/metrics`
//! and waits. A leader that loses the Lease stops at once — the process exits and is
//! started again as a standby — because it must not write beside the new leader. On
//! SIGTERM the leader releases the Lease, so a rolling update hands over without
//! waiting for it to expire; after a SIGKILL the standby takes over once it expires.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::Error;

/// Where and how the replicas elect their leader.
#[derive(Clone, Debug)]
pub struct Election {
    /// weir's own namespace (the Role for Leases is there only).
    pub namespace: String,
    pub lease: String,
    /// This replica's name: its pod's name, unique among the replicas.
    pub identity: String,
    /// How long a Lease stays the holder's after its last renewal; a standby takes
    /// over at most this long after the leader died.
    pub duration: Duration,
}

/// The leadership of this replica while it lasts: `changed()` when it ends.
pub struct Leadership {
    leading: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<LeaseManager>>,
}

impl Election {
    /// Waits until this replica holds the Lease.
    pub async fn lead(&self, client: Client) -> Result<Leadership, Error> {
        let seconds = self.duration.as_secs().max(3);
        let manager = LeaseManagerBuilder::new(client, &self.lease)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_duration(seconds)
            // Renewed a third of the duration before it expires.
            .with_grace((seconds / 3).max(1))
            .build()
            .await
            .map_err(|e| Error::Lease(e.to_string()))?;
        let (mut leading, task) = manager.watch().await;
        info!(lease = %self.lease, identity = %self.identity, "standby: waiting for the Lease");
        while !*leading.borrow_and_update() {
            leading
                .changed()
                .await
                .map_err(|_| Error::Lease("the Lease manager stopped".into()))?;
        }
        info!(lease = %self.lease, identity = %self.identity, "leading: holds the Lease");
        Ok(Leadership { leading, task })
    }
}

impl Leadership {
    /// Returns when this replica no longer holds the Lease.
    pub async fn lost(&mut self) {
        while *self.leading.borrow_and_update() {
            if self.leading.changed().await.is_err() {
                return;
            }
        }
    }

    /// Gives the Lease up (shutdown), so a standby need not wait for it to expire.
    pub async fn release(self) {
        drop(self.leading);
        let _ = tokio::time::timeout(Duration::from_secs(3), self.task).await;
    }
}
