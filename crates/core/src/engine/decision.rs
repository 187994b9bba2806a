//! What one decision produces: actions (targets, harmless to repeat), the new status,
//! Events, when to look again, and webhook calls to make, with the order of their writes.

use std::time::Duration;

use crate::hooks::HookCall;
use crate::status::RolloutStatus;
use crate::vocabulary::Reason;

/// A change to make in the cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Set `spec.paused` of the user's Deployment (paused, its template bumps do not roll out).
    PauseTarget(bool),
    /// Create or update the canary Deployment to run `revision` with `replicas` pods.
    ApplyCanary { revision: String, replicas: i32 },
    /// Write the canary weight (stable gets the rest) into the managed routes.
    SetCanaryWeight(u32),
    /// Let go of the user's Deployment: drop every field weir owns on it (`spec.paused`),
    /// so it is a plain Deployment again.
    ReleaseTarget,
    /// Delete the canary Deployment (deletion of the Rollout, after it drained; garbage
    /// collection would too, in its own time).
    RemoveCanary,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub warning: bool,
    pub reason: Reason,
    pub note: String,
}

/// One write of a decision, in the order it must be made.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Write<'a> {
    Status(&'a RolloutStatus),
    Act(&'a Action),
    Tell(&'a Event),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub status: RolloutStatus,
    pub events: Vec<Event>,
    /// When to look again if nothing watched changes; `None`: nothing is due (a timer
    /// per idle Rollout would be waste: the controller resyncs idle ones by a sweep).
    pub requeue_after: Option<Duration>,
    /// Deletion only: traffic is on stable, the canary drained, the Deployment let go of;
    /// the finalizer may be removed.
    pub released: bool,
    /// Webhook calls this decision waits for; the controller makes each once (by key) in
    /// the background and reports the answer in a later `World::hook_answers`.
    pub asks: Vec<HookCall>,
}

impl Decision {
    /// The writes of this decision, in order. The status comes first when its decisive
    /// part differs from `stored` (what the API server holds): the new state is the
    /// intent of the actions after it, so a crash between them leaves the intent, which
    /// the next controller completes. Events come last: they tell what was done.
    pub fn writes<'a>(&'a self, stored: &RolloutStatus) -> Vec<Write<'a>> {
        let mut writes = Vec::new();
        if self.status.decisive_part() != stored.decisive_part() {
            writes.push(Write::Status(&self.status));
        }
        writes.extend(self.actions.iter().map(Write::Act));
        writes.extend(self.events.iter().map(Write::Tell));
        writes
    }
}

/// What to ask Prometheus for, when a look is due.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnalysisRequest {
    /// Range of the counters: since the step began (sequential) or one interval (threshold).
    pub window: Duration,
    pub interval: Duration,
}
