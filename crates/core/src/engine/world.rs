//! What the edges observed for one Rollout: the engine's only input besides the plan,
//! the stored status and `now`.

use jiff::Timestamp;

use crate::hooks::HookAnswer;
use crate::judge::Reading;

/// What the Deployment controller reports about a Deployment's pods.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Pods {
    /// `spec.replicas` (for the target: the HPA's choice when there is one).
    pub desired: i32,
    pub generation: i64,
    pub observed_generation: i64,
    /// `status.replicas`, `status.updatedReplicas`, `status.availableReplicas`.
    pub total: i32,
    pub updated: i32,
    pub available: i32,
}

impl Pods {
    /// At least `needed` pods run the current template and are available, and no pod of
    /// an older template is left.
    pub fn updated_and_available(&self, needed: i32) -> bool {
        self.observed_generation >= self.generation
            && self.updated >= needed
            && self.available >= needed
            && self.total == self.updated
    }
}

/// The user's Deployment as weir sees it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TargetState {
    /// Hash of `spec.template`.
    pub revision: String,
    /// The template's images, comma-separated (for the release history).
    pub image: Option<String>,
    pub paused: bool,
    pub pods: Pods,
}

impl TargetState {
    /// The Deployment runs its current template on every replica, all available.
    pub fn rolled_out(&self) -> bool {
        self.pods.updated == self.pods.desired && self.pods.updated_and_available(self.pods.desired)
    }
}

/// The canary Deployment weir owns (`<target>-canary`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct CanaryState {
    /// The `weir.dev/revision` annotation: which template it runs.
    pub revision: Option<String>,
    pub pods: Pods,
}

impl CanaryState {
    /// At least `needed` pods of `revision` are available and no pod of another revision is left.
    pub fn ready_for(&self, revision: &str, needed: i32) -> bool {
        self.revision.as_deref() == Some(revision) && self.pods.updated_and_available(needed)
    }
}

/// Whether the mesh has applied the route as weir sees it, from the status the mesh
/// writes on it: an HTTPRoute's `status.parents[].conditions` (Accepted, at the route's
/// generation), a VirtualService's `Reconciled` condition and `observedGeneration`
/// (istiod's config distribution status).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum MeshConfirmation {
    /// The mesh writes no status on the route: the drain delay stands in for it.
    #[default]
    NotWritten,
    /// The route's current generation is not confirmed yet: why, in a person's words.
    Pending(String),
    /// Confirmed, first seen so at `since` (requests go by it from then on).
    Confirmed { since: Timestamp },
}

/// Everything weir observed for one Rollout, gathered by the I/O edges.
#[derive(Clone, Debug, PartialEq)]
pub struct World {
    /// `None`: the Deployment does not exist.
    pub target: Option<TargetState>,
    pub canary: Option<CanaryState>,
    /// The canary weight now in the VirtualService (the highest over the managed routes),
    /// or why the routing does not fit.
    pub traffic: Result<u32, String>,
    /// The managed routes carry different canary weights: one needs rewriting.
    pub routes_disagree: bool,
    /// Why the route cannot be trusted although it fits, seen beyond this Rollout's
    /// objects (another router's object routes the same Service): the canary is
    /// withdrawn, since the mesh may apply the other object instead.
    pub routing_conflict: Option<String>,
    /// Whether the mesh confirmed the route's current generation.
    pub mesh: MeshConfirmation,
    /// The `weir.dev/request` annotation.
    pub request: Option<String>,
    /// The `weir.dev/paused` annotation is "true".
    pub pause_requested: bool,
    /// Metric readings, present when `analysis_request` said a look was due.
    pub readings: Option<Vec<(String, Reading)>>,
    /// Answers of webhook calls the controller made for earlier decisions' `asks`.
    pub hook_answers: Vec<HookAnswer>,
}

impl World {
    /// Nothing observed yet: what the engine gets for a spec too broken to observe by.
    pub fn unobserved() -> World {
        World {
            target: None,
            canary: None,
            traffic: Err("not observed".into()),
            routes_disagree: false,
            routing_conflict: None,
            mesh: MeshConfirmation::NotWritten,
            request: None,
            pause_requested: false,
            readings: None,
            hook_answers: Vec::new(),
        }
    }
}
