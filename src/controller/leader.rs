//! High availability: replicas of weir elect a leader on a `coordination.k8s.io` Lease
//! in weir's own namespace (kube-lease-manager: server-side apply, so two replicas can
//! never both take a free Lease). Only the leader runs the controller, so only it
//! writes; a standby serves `/healthz`, `/readyz` (which says "standby") and `/metrics`
//! and waits. A leader that loses the Lease stops at once — the process exits and is
//! started again as a standby — because it must not write beside the new leader. On
//! SIGTERM the leader releases the Lease, so a rolling update hands over without
//! waiting for it to expire; after a SIGKILL the standby takes over once it expires.
//!
//! A leader that cannot renew fences itself. The Lease manager retries failed renewals
//! (up to 30 s apart) without saying so, while the standby takes the Lease once it
//! expired: two writers. So the leader reads its Lease back (a GET every quarter of the
//! renew deadline, on the Lease's own resourceName) and stops — the process exits and
//! comes back as a standby — once it has not seen its own renewal for the renew deadline,
//! two thirds of the Lease's duration, before a standby can take over (as client-go's
//! `renewDeadline`). A read that fails confirms nothing, so a leader cut off from the API
//! server fences itself too.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
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
    fence: Fence,
}

/// What the leader checks its renewals against.
#[derive(Clone)]
pub struct Fence {
    pub leases: Api<Lease>,
    pub lease: String,
    pub identity: String,
    /// Shorter than the Lease's duration: how long the leader writes without a renewal seen.
    pub renew_deadline: Duration,
}

impl Fence {
    /// Returns once the leader has not seen its own renewal for the renew deadline.
    /// Counted from `since` (when the Lease was taken) until the first renewal is seen.
    pub async fn breached(&self, since: Timestamp) -> Duration {
        let mut confirmed = since;
        let every = self.renew_deadline / 4;
        loop {
            if let Some(renewed) = self.renewal().await {
                confirmed = confirmed.max(renewed);
            }
            let quiet = Timestamp::now().duration_since(confirmed).unsigned_abs();
            if quiet >= self.renew_deadline {
                return quiet;
            }
            tokio::time::sleep(every.min(self.renew_deadline - quiet)).await;
        }
    }

    /// The Lease's last renewal, if this replica holds it.
    async fn renewal(&self) -> Option<Timestamp> {
        let lease = self.leases.get(&self.lease).await.ok()?;
        let spec = lease.spec?;
        match spec.holder_identity.as_deref() == Some(self.identity.as_str()) {
            true => spec.renew_time.map(|t| t.0),
            false => None,
        }
    }
}

impl Election {
    /// Waits until this replica holds the Lease.
    pub async fn lead(&self, client: Client) -> Result<Leadership, Error> {
        let seconds = self.duration.as_secs().max(3);
        let fence = Fence {
            leases: Api::namespaced(client.clone(), &self.namespace),
            lease: self.lease.clone(),
            identity: self.identity.clone(),
            renew_deadline: Duration::from_secs(seconds) * 2 / 3,
        };
        let manager = LeaseManagerBuilder::new(client, &self.lease)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_duration(seconds)
            // Renewed two thirds of the duration before it expires: a renewal a third
            // into the Lease, and a second try before the renew deadline.
            .with_grace((seconds * 2 / 3).max(1))
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
        Ok(Leadership { leading, task, fence })
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

    /// What tells the leader it must stop writing (see `Fence::breached`).
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Gives the Lease up (shutdown), so a standby need not wait for it to expire.
    pub async fn release(self) {
        drop(self.leading);
        let _ = tokio::time::timeout(Duration::from_secs(3), self.task).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;

    /// An API server whose Lease GETs answer `answer(now)`: (status code, body).
    fn fence_against(answer: impl Fn() -> (u16, serde_json::Value) + Send + 'static) -> Fence {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(async move {
            while let Some((_, send)) = handle.next_request().await {
                let (code, body) = answer();
                let body = Body::from(serde_json::to_vec(&body).unwrap_or_default());
                send.send_response(Response::builder().status(code).body(body).unwrap());
            }
        });
        Fence {
            leases: Api::namespaced(Client::new(service, "weir-system"), "weir-system"),
            lease: "weir-leader".into(),
            identity: "weir-0".into(),
            renew_deadline: Duration::from_millis(400),
        }
    }

    fn lease(holder: &str, renewed: Timestamp) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "weir-leader", "namespace": "weir-system"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed.to_string()}
        })
    }

    #[tokio::test]
    async fn a_leader_that_sees_its_renewals_keeps_writing() {
        let fence = fence_against(|| (200, lease("weir-0", Timestamp::now())));
        let breached = tokio::time::timeout(Duration::from_millis(1500), fence.breached(Timestamp::now())).await;
        assert!(breached.is_err(), "fenced although renewed: {breached:?}");
    }

    #[tokio::test]
    async fn a_leader_whose_renewals_fail_or_stop_fences_itself_within_the_renew_deadline() {
        let failing = fence_against(|| {
            (
                403,
                serde_json::json!({"kind": "Status", "code": 403, "reason": "Forbidden"}),
            )
        });
        let stale = {
            let taken = Timestamp::now();
            fence_against(move || (200, lease("weir-0", taken)))
        };
        let taken_over = fence_against(|| (200, lease("weir-1", Timestamp::now())));
        for fence in [failing, stale, taken_over] {
            let started = std::time::Instant::now();
            let quiet = tokio::time::timeout(Duration::from_secs(3), fence.breached(Timestamp::now()))
                .await
                .expect("fenced");
            assert!(quiet >= fence.renew_deadline);
            // Well before a Lease of 1.5 x the deadline could expire.
            assert!(
                started.elapsed() < fence.renew_deadline * 3 / 2,
                "{:?}",
                started.elapsed()
            );
        }
    }
}
