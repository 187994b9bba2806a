//! weir's decisions, with no kube, no HTTP and no clock: everything here is a pure
//! function of what the edges observed and of `now`, so every behaviour is a scenario on
//! a simulated clock.
//!
//! * `spec` — what a user declares; `status` — what weir writes back.
//! * `plan` — validate and default a spec.
//! * `hooks` — webhook gates: what the engine asks, what it is told.
//! * `judge` — verdicts from metric readings.
//! * `engine` — plan + status + observed world + `now` → actions, new status, Events.

// Nothing a Rollout author writes may panic weir: spec-derived collections are read
// with `get`, never indexed (issue 23's crash loop was `plan.steps[at.step]`).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod engine;
pub mod hooks;
pub mod judge;
pub mod plan;
pub mod spec;
pub mod state;
pub mod status;
pub mod vocabulary;
pub mod windows;
