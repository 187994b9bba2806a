//! The Events `kubectl describe rollout` shows: one new Event per decision.
//!
//! Not kube's `Recorder`, for three reasons the scale bench showed: it keeps every Event
//! it sent for six minutes (11,000 `Initialized` Events after taking over 11,000
//! Rollouts, ~1.5 KiB each), scans that whole cache under one lock on every publish, and
//! folds Events of one reason on one object into a series that keeps the first note —
//! the notes of a release's later steps (`StepAdvanced` to 25 %, to 50 %) were lost.
//! weir decides an Event once per decision, so there is nothing to aggregate: this keeps
//! nothing and writes one `create` per Event.

use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};

use crate::api::Rollout;
use crate::engine;

/// Kubernetes caps an Event's note at 1 KiB: bytes, not characters (a metric name or a
/// webhook's answer in another script takes 2-4 bytes a character).
const NOTE_BYTES: usize = 1024;
/// An object name (DNS subdomain) has at most 253 characters.
const NAME_CHARS: usize = 253;

/// `note` cut to `NOTE_BYTES` at a character boundary, marked with '…' when cut.
fn fit_note(note: &str) -> String {
    if note.len() <= NOTE_BYTES {
        return note.to_string();
    }
    let mark = '…';
    let mut end = NOTE_BYTES - mark.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{mark}", note.get(..end).unwrap_or_default())
}

/// A unique Event name after its Rollout's: `<rollout>.<nanoseconds><sequence>` in hex,
/// the Rollout's part shortened so the whole stays a valid name of 253 characters.
fn event_name(rollout: &str, now: Timestamp, sequence: u64) -> String {
    let suffix = format!(".{:x}{sequence:x}", now.as_nanosecond());
    let keep = NAME_CHARS.saturating_sub(suffix.len());
    // Rollout names are lowercase ASCII; a part cut short must not end in '.' or '-'.
    let head: String = rollout.chars().take(keep).collect();
    format!("{}{suffix}", head.trim_end_matches(['.', '-']))
}

pub struct EventPublisher {
    client: Client,
    /// This replica (the Pod's name), for `reportingInstance`.
    instance: String,
    /// Makes names unique when two Events of one Rollout share a nanosecond.
    sequence: AtomicU64,
}

impl EventPublisher {
    pub fn new(client: Client, instance: Option<String>) -> EventPublisher {
        EventPublisher {
            client,
            instance: instance.unwrap_or_else(|| "weir".into()),
            sequence: AtomicU64::new(0),
        }
    }

    pub async fn publish(&self, rollout: &Rollout, e: &engine::Event) -> Result<(), kube::Error> {
        let namespace = rollout.namespace().unwrap_or_else(|| "default".into());
        let event = self.event(rollout, e, &namespace, Timestamp::now());
        Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await?;
        Ok(())
    }

    fn event(&self, rollout: &Rollout, e: &engine::Event, namespace: &str, now: Timestamp) -> K8sEvent {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(event_name(&rollout.name_any(), now, sequence)),
                namespace: Some(namespace.to_string()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(if e.warning { "Warning" } else { "Normal" }.into()),
            reason: Some(e.reason.to_string()),
            action: Some(e.reason.to_string()),
            note: Some(fit_note(&e.note)),
            regarding: Some(rollout.object_ref(&())),
            reporting_controller: Some("weir".into()),
            reporting_instance: Some(self.instance.clone()),
            ..K8sEvent::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_event_is_new_and_names_its_rollout() {
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("uri"));
        let client = Client::try_from(config).expect("client");
        let publisher = EventPublisher::new(client, Some("weir-0".into()));
        let rollout: Rollout = serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "app", "namespace": "apps"},
            "spec": {"targetRef": {"kind": "Deployment", "name": "app"},
                     "trafficRouting": {"istio": {"virtualService": {"name": "app"}}},
                     "steps": [{"weight": 50}], "analysis": {"metrics": []}}
        }))
        .expect("a Rollout");
        let e = engine::Event {
            warning: true,
            reason: weir_core::vocabulary::Reason::RolledBack,
            note: "x".repeat(3000),
        };
        let now = Timestamp::now();
        let (a, b) = (
            publisher.event(&rollout, &e, "apps", now),
            publisher.event(&rollout, &e, "apps", now),
        );
        assert_ne!(a.metadata.name, b.metadata.name, "two Events never share a name");
        assert!(a.metadata.name.as_deref().is_some_and(|n| n.starts_with("app.")));
        assert_eq!(a.type_.as_deref(), Some("Warning"));
        assert_eq!(a.note.as_ref().map(|n| n.len()), Some(NOTE_BYTES));
        assert_eq!(a.series, None, "never a series: each decision keeps its own note");
        let regarding = a.regarding.as_ref().expect("regarding");
        assert_eq!(
            (regarding.kind.as_deref(), regarding.name.as_deref()),
            (Some("Rollout"), Some("app"))
        );
        assert_eq!(a.reporting_instance.as_deref(), Some("weir-0"));
    }

    #[test]
    fn notes_fit_in_1024_bytes_and_names_in_253_characters_whatever_the_text() {
        // A metric name in another script: 3 bytes a character, cut on a boundary.
        let note = fit_note(&"指標".repeat(600));
        assert!(note.len() <= NOTE_BYTES, "{} bytes", note.len());
        assert!(note.ends_with('…'));
        assert_eq!(fit_note("short"), "short");
        let long = format!("{}-x", "a".repeat(251));
        let name = event_name(&long, Timestamp::now(), u64::MAX);
        assert!(name.len() <= NAME_CHARS, "{} characters", name.len());
        assert!(kube_name_ok(&name), "{name}");
        let dashed = format!("{}-{}", "a".repeat(220), "b".repeat(32));
        assert!(kube_name_ok(&event_name(&dashed, Timestamp::now(), 7)));
    }

    fn kube_name_ok(name: &str) -> bool {
        weir_core::plan::is_object_name(name)
    }
}
