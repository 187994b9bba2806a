//! weir: a progressive-delivery controller for Kubernetes.
//!
//! The pure core (`plan`, `judge`, `engine`) decides; the edges (`kubernetes`, `istio`,
//! `prometheus`) observe and apply; `controller` ties them together.
pub mod api;
pub mod engine;
pub mod judge;
pub mod plan;
