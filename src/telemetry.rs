//! weir's own metrics, served on `/metrics` (prefix `weir_`): per Rollout its weight and
//! phase (removed when the Rollout is deleted), and, with labels of bounded cardinality,
//! what operators of the anchors read: releases by outcome and their length, time spent
//! per step, verdicts by metric, notification and webhook outcomes, reconciles,
//! Prometheus queries, leadership and the version.

use jiff::Timestamp;
use kube::ResourceExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use weir_core::state::State;

use crate::api::{Phase, Rollout, RolloutStatus};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub namespace: String,
    pub name: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// A verdict of one metric: built-in metrics by name, a Rollout's own as `custom` (their
/// names are the users', and unbounded).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub metric: String,
    pub verdict: String,
}

/// What a notification or webhook call came to, by its kind or type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub kind: String,
    pub result: String,
}

/// Families the notifier and the webhook caller count into from their own tasks.
pub type Calls = Family<CallLabels, Counter>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    version: String,
}

pub struct Telemetry {
    pub registry: Registry,
    pub canary_weight: Family<RolloutLabels, Gauge>,
    pub phase: Family<PhaseLabels, Gauge>,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_seconds: Histogram,
    pub decisions: Family<ResultLabels, Counter>,
    pub prometheus_queries: Family<ResultLabels, Counter>,
    /// 1 while this replica runs the controller (the leader, or the only one).
    pub leader: Gauge,
    pub releases: Family<OutcomeLabels, Histogram>,
    pub step_seconds: Histogram,
    pub verdicts: Family<VerdictLabels, Counter>,
    pub notifications: Calls,
    pub webhook_calls: Calls,
}

const MINUTE: f64 = 60.0;

fn release_histogram() -> Histogram {
    Histogram::new([0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 360.0, 720.0, 1440.0].map(|m| m * MINUTE))
}

impl Default for Telemetry {
    // Long: the list of every metric weir exports, registered in one place.
    fn default() -> Self {
        let mut r = Registry::with_prefix("weir");
        let t = Telemetry {
            canary_weight: Family::default(),
            phase: Family::default(),
            reconciles: Family::default(),
            reconcile_seconds: Histogram::new([0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            decisions: Family::default(),
            prometheus_queries: Family::default(),
            leader: Gauge::default(),
            releases: Family::new_with_constructor(release_histogram),
            step_seconds: Histogram::new([5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0]),
            verdicts: Family::default(),
            notifications: Family::default(),
            webhook_calls: Family::default(),
            registry: Registry::default(),
        };
        r.register(
            "rollout_canary_weight",
            "Canary weight weir last wrote, percent",
            t.canary_weight.clone(),
        );
        r.register("rollout_phase", "1 for the phase each Rollout is in", t.phase.clone());
        r.register("reconciles", "Reconciles by result", t.reconciles.clone());
        r.register(
            "reconcile_duration_seconds",
            "Time of one reconcile",
            t.reconcile_seconds.clone(),
        );
        r.register("decisions", "Events weir emitted, by reason", t.decisions.clone());
        r.register(
            "prometheus_queries",
            "Metric queries by outcome",
            t.prometheus_queries.clone(),
        );
        r.register(
            "leader",
            "1 while this replica runs the controller (holds the Lease, or elects none)",
            t.leader.clone(),
        );
        r.register(
            "release_duration_seconds",
            "Length of ended releases, from the canary's start, by outcome",
            t.releases.clone(),
        );
        r.register(
            "step_duration_seconds",
            "Time a canary spent analysed at one step",
            t.step_seconds.clone(),
        );
        r.register(
            "analysis_verdicts",
            "Verdicts of the judge's looks, by metric",
            t.verdicts.clone(),
        );
        r.register(
            "notifications",
            "Notification deliveries by kind and result",
            t.notifications.clone(),
        );
        r.register(
            "webhook_calls",
            "Webhook calls by type and answer",
            t.webhook_calls.clone(),
        );
        let info = Family::<InfoLabels, Gauge>::default();
        info.get_or_create(&InfoLabels {
            version: env!("CARGO_PKG_VERSION").into(),
        })
        .set(1);
        r.register("build_info", "1, labelled with weir's version", info);
        Telemetry { registry: r, ..t }
    }
}

fn rollout_labels(rollout: &Rollout) -> RolloutLabels {
    RolloutLabels {
        namespace: rollout.namespace().unwrap_or_default(),
        name: rollout.name_any(),
    }
}

fn phase_labels(labels: &RolloutLabels, p: &Phase) -> PhaseLabels {
    PhaseLabels {
        namespace: labels.namespace.clone(),
        name: labels.name.clone(),
        phase: format!("{p:?}"),
    }
}

fn seconds_between(from: &str, to: &str) -> Option<f64> {
    let (from, to): (Timestamp, Timestamp) = (from.parse().ok()?, to.parse().ok()?);
    Some(to.duration_since(from).as_secs_f64())
}

impl Telemetry {
    /// Records what a decision changed: `before` is the status it decided from.
    pub fn record(&self, rollout: &Rollout, before: &RolloutStatus, after: &RolloutStatus, now: Timestamp) {
        let labels = rollout_labels(rollout);
        self.canary_weight
            .get_or_create(&labels)
            .set(i64::from(after.canary_weight));
        // One series per Rollout, for the phase it is in: with thousands of idle
        // Rollouts, a zero for every other phase would be most of the controller's memory.
        if before.phase != after.phase {
            self.phase.remove(&phase_labels(&labels, &before.phase));
        }
        self.phase.get_or_create(&phase_labels(&labels, &after.phase)).set(1);
        self.record_release(before, after);
        self.record_step(before, after, now);
        self.record_verdicts(after, now);
    }

    /// A release that ended in this decision: its length, by outcome.
    fn record_release(&self, before: &RolloutStatus, after: &RolloutStatus) {
        let Some(ended) = after.history.first() else { return };
        if before.history.first() == Some(ended) {
            return;
        }
        let length = ended.ended.as_deref().and_then(|e| seconds_between(&ended.started, e));
        if let (Some(length), Some(outcome)) = (length, &ended.outcome) {
            let labels = OutcomeLabels {
                outcome: outcome.clone(),
            };
            self.releases.get_or_create(&labels).observe(length);
        }
    }

    /// A step analysed since `started` that this decision left (passed, rolled back).
    fn record_step(&self, before: &RolloutStatus, after: &RolloutStatus, now: Timestamp) {
        let State::Analysing { at, started, .. } = &before.state else {
            return;
        };
        let same_step =
            matches!(&after.state, State::Analysing { at: a, .. } if a.step == at.step && a.canary == at.canary);
        if !same_step {
            self.step_seconds.observe(now.duration_since(*started).as_secs_f64());
        }
    }

    /// The verdicts of a look made in this decision.
    fn record_verdicts(&self, after: &RolloutStatus, now: Timestamp) {
        let Some(analysis) = &after.analysis else { return };
        if analysis.last_checked_at.as_deref() != Some(now.to_string().as_str()) {
            return;
        }
        for m in &analysis.metrics {
            let builtin = [weir_core::plan::SUCCESS_RATE, weir_core::plan::REQUEST_DURATION];
            let metric = match builtin.contains(&m.name.as_str()) {
                true => m.name.clone(),
                false => "custom".into(),
            };
            let labels = VerdictLabels {
                metric,
                verdict: m.verdict.clone(),
            };
            self.verdicts.get_or_create(&labels).inc();
        }
    }

    /// A deleted Rollout's series go.
    pub fn forget(&self, rollout: &Rollout, phase: &Phase) {
        let labels = rollout_labels(rollout);
        self.canary_weight.remove(&labels);
        self.phase.remove(&phase_labels(&labels, phase));
    }
}

#[cfg(test)]
mod tests {
    use weir_core::state::CanaryAt;
    use weir_core::status::{AnalysisStatus, MetricStatus, ReleaseRecord};

    use super::*;

    fn text(t: &Telemetry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &t.registry).unwrap();
        out
    }

    fn analysing(step: u32, started: &str) -> RolloutStatus {
        let at = CanaryAt {
            stable: "a".into(),
            canary: "b".into(),
            step,
            weight: 10,
            reference_replicas: 4,
        };
        RolloutStatus {
            phase: Phase::Progressing,
            state: State::Analysing {
                at,
                started: started.parse().unwrap(),
                awaiting_mesh: false,
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_decision_is_counted_by_what_it_changed_and_a_deleted_rollout_leaves_no_series() {
        let t = Telemetry::default();
        let rollout: Rollout = serde_saphyr::from_str(include_str!("../examples/dev/40-rollout.yaml")).unwrap();
        let now: Timestamp = "2026-11-29T02:01:00Z".parse().unwrap();
        // A look at step 1 with two metrics, one of them the user's own.
        let mut looked = analysing(0, "2026-11-29T02:00:00Z");
        looked.analysis = Some(AnalysisStatus {
            last_checked_at: Some(now.to_string()),
            metrics: ["request-success-rate", "queue-errors"]
                .map(|name| MetricStatus {
                    name: name.into(),
                    verdict: "Pass".into(),
                    ..Default::default()
                })
                .to_vec(),
            ..Default::default()
        });
        t.record(&rollout, &analysing(0, "2026-11-29T02:00:00Z"), &looked, now);
        // Step 1 left for step 2 after 60 s; then the release ends, promoted, after 10 min.
        t.record(&rollout, &looked, &analysing(1, "2026-11-29T02:01:00Z"), now);
        let mut ended = RolloutStatus {
            phase: Phase::Succeeded,
            ..Default::default()
        };
        ended.history.push(ReleaseRecord {
            revision: "b".into(),
            started: "2026-11-29T02:00:00Z".into(),
            ended: Some("2026-11-29T02:10:00Z".into()),
            outcome: Some("Promoted".into()),
            ..Default::default()
        });
        t.record(&rollout, &analysing(1, "2026-11-29T02:01:00Z"), &ended, now);
        let out = text(&t);
        for line in [
            "weir_analysis_verdicts_total{metric=\"request-success-rate\",verdict=\"Pass\"} 1",
            "weir_analysis_verdicts_total{metric=\"custom\",verdict=\"Pass\"} 1",
            "weir_step_duration_seconds_sum 60.0",
            "weir_step_duration_seconds_count 2",
            "weir_release_duration_seconds_sum{outcome=\"Promoted\"} 600.0",
            "weir_rollout_phase{namespace=\"dev\",name=\"backend\",phase=\"Succeeded\"} 1",
            "weir_build_info{version=\"",
        ] {
            assert!(out.contains(line), "{line} not in:\n{out}");
        }
        t.forget(&rollout, &Phase::Succeeded);
        let out = text(&t);
        assert!(
            !out.contains("name=\"backend\""),
            "series of a deleted Rollout remain:\n{out}"
        );
    }
}
