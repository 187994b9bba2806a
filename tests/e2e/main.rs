//! End to end, against a real Kubernetes control plane (built from Go modules, kwok for
//! nodes), a real Prometheus scraping the mesh simulator, and the `weir` binary as the
//! controller. Every scenario runs in its own namespace, all at once against one
//! controller, with steps of a few seconds.
//!
//! Scenarios are written in a small language (`scenario`): start the application in a
//! namespace, bump it, wait for weights and phases, expect what must hold. They are
//! grouped by capability, one module each.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::json;
use weir::api::{Phase, Rollout};
use weir_testkit::devcluster::{self, LocalCluster, LocalPrometheus, Process};
use weir_testkit::meshsim::{self, MeshConfig};

mod bed;
mod dashboard;
mod gates;
mod gitops;
mod helm;
mod kit;
mod leaders;
mod releases;
mod resilience;
mod routers;
mod scenario;
mod tenants;

use bed::*;
use kit::*;
use scenario::*;

/// The scenarios of every capability at once, each in its namespace, on one bed and one
/// controller.
#[test]
fn end_to_end() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Children are started from this thread, which lives for the whole test.
    runtime().block_on(async {
        let bed = Bed::start(7).await;
        let (blind, blip) = (&bed.blind, &bed.blip);
        let env = bed.env();
        let controller = bed.controller.clone();
        let failures: Failures = Arc::default();
        let (captured, capturing) = gitops::capture_phases(env.client.clone());
        let started = Instant::now();
        let results = tokio::join!(
            releases::healthy_canary_is_promoted(&env, &failures),
            releases::bad_canary_is_rolled_back(&env, &failures, "bad", "request-success-rate"),
            releases::bad_canary_is_rolled_back(&env, &failures, "slow", "request-duration"),
            resilience::controller_killed_mid_rollout_resumes(&env, &failures, &controller, &bed.gates),
            resilience::prometheus_outage_never_promotes_blind(&env, &failures, blind),
            resilience::prometheus_back_in_time_resumes_the_rollout(&env, &failures, blip),
            releases::second_bump_restarts_for_the_newest(&env, &failures),
            releases::invalid_rollouts_are_refused_or_reported(&env, &failures),
            releases::the_example_application_is_taken_over(&env, &failures),
            resilience::rollout_deleted_mid_canary_leaves_a_plain_setup(&env, &failures),
            resilience::a_synced_weight_is_repaired_at_once(&env, &failures),
            gates::webhook_gates_hold_and_roll_back(&env, &failures, &bed.gates),
            gates::a_night_with_a_window_a_report_and_conditions(&env, &failures, &bed.gates),
            gitops::a_paused_canary_is_suspended_then_goes_on(&env, &failures),
            releases::healthy_canary_is_promoted_on(&env, &failures, Layout::GatewayApi),
            releases::bad_canary_is_rolled_back_on(&env, &failures, "bad", "request-success-rate", Layout::GatewayApi),
            resilience::rollout_deleted_mid_canary_leaves_a_plain_setup_on(&env, &failures, Layout::GatewayApi),
            resilience::a_synced_weight_is_repaired_at_once_on(&env, &failures, Layout::GatewayApi),
            routers::a_service_routed_twice_is_refused_naming_both(&env, &failures),
        );
        capturing.abort();
        gitops::check_captured(&failures, &captured).await;
        let mut errors: Vec<String> = [
            results.0, results.1, results.2, results.3, results.4, results.5, results.6, results.7, results.8,
            results.9, results.10, results.11, results.12, results.13, results.14, results.15, results.16, results.17,
            results.18,
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect();
        errors.extend(failures.lock().unwrap().iter().cloned());
        eprintln!("end-to-end scenarios took {:?}", started.elapsed());
        let namespaces: Vec<String> = [
            "e2e-healthy",
            "e2e-bad",
            "e2e-slow",
            "e2e-sigkill",
            "e2e-blind",
            "e2e-blip",
            "e2e-rebump",
            "e2e-invalid",
            "e2e-delete",
            "e2e-drift",
            "e2e-gates",
            "e2e-night",
            "e2e-gitops",
            "e2e-gw-healthy",
            "e2e-gw-bad",
            "e2e-gw-delete",
            "e2e-gw-drift",
            "e2e-gw-twice",
        ]
        .map(String::from)
        .to_vec();
        bed.report(errors, &namespaces).await;
    });
}
