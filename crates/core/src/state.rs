//! The state machine of one Rollout. Each state holds exactly the data it needs; the
//! CRD status is its projection (`status.state`, plus the flat fields kubectl prints).
//!
//! `crate::engine` moves a rollout from state to state: one module and one `on_<state>`
//! handler per state, every transition a row of `engine::TRANSITIONS` (the README's
//! table is generated from it).
//!
//! Writes and their order (see `engine::Decision::writes`): the new status is written
//! *before* the actions it describes, so a state that takes traffic away from a
//! version (Draining, Scaling after a newer revision) or promotes (Promoting) is an
//! intent on the API server before the write that acts on it. A controller that dies
//! between the two reads the intent back and completes it: it re-derives the same
//! targets from the state, and never the old ones. Raising a weight is the one write a
//! restart does not repeat blindly: it waits for a fresh look of the judge that does not
//! lean against the canary (`RolloutStatus::judged_here`).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use strum::IntoEnumIterator;

/// Version of the serialised state; a status of another version is not trusted.
pub const STATE_VERSION: u32 = 1;

/// The stable revision recorded when weir takes over a Deployment that was paused with a
/// template change not yet rolled out: what its pods run is not that template, so the
/// template is judged as a canary instead of being taken for stable.
pub const PRE_WEIR_REVISION: &str = "before-weir";

/// Where a canary stands.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryAt {
    /// Revision (pod-template hash) the stable track runs.
    pub stable: String,
    /// Revision under test.
    pub canary: String,
    /// 0-based index into `spec.steps`.
    pub step: u32,
    /// Canary weight weir last decided (percent of the stable + canary share).
    pub weight: u32,
    /// Replicas that carry all the traffic, the canary's sizing reference: the stable
    /// Deployment's replicas when the canary started, raised when an HPA adds replicas
    /// to stable for the share it keeps. Never lowered while the canary runs, so an HPA
    /// shrinking stable (its load moved to the canary) does not shrink the canary.
    pub reference_replicas: i32,
}

/// The phase a person reads (`status.phase`): the state, as kubectl prints it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, schemars::JsonSchema)]
pub enum Phase {
    /// Waiting to take over the Deployment (its own rollout is still in progress).
    #[default]
    Initializing,
    /// Stable runs the Deployment's template; nothing to do.
    Healthy,
    /// A canary is going through its steps.
    Progressing,
    /// A canary holds its step because a person asked (`weir pause`).
    Paused,
    /// The last step passed: the stable track is rolling out the new template.
    Promoting,
    /// The last canary was promoted; stable runs it.
    Succeeded,
    /// The last canary was rolled back; stable keeps serving the old template.
    RolledBack,
    /// The Rollout or the objects it names are unusable; see `message`.
    InvalidSpec,
    /// The Rollout is being deleted: traffic goes back to stable, the canary drains,
    /// then weir lets go of the Deployment.
    Deleting,
}

/// How a canary ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Promoted,
    RolledBack,
    /// The template went back to stable, or the Rollout became unusable mid-canary.
    Cancelled,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(tag = "name", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum State {
    /// Waiting to take over the Deployment (its own rollout is still in progress).
    #[default]
    Initializing,
    /// Stable runs `stable` and gets all the traffic; `last` says how the last canary ended.
    Stable {
        stable: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last: Option<Outcome>,
    },
    /// Canary pods for the step are starting; the canary keeps the previous step's weight.
    Scaling {
        at: CanaryAt,
        /// The progress deadline counts from here.
        since: Timestamp,
        /// Pods of an older canary still drain: they change template only after this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        drain_until: Option<Timestamp>,
    },
    /// The step's weight is written; the judge looks at every tick.
    Analysing {
        at: CanaryAt,
        started: Timestamp,
        /// The weight is written, the mesh (which confirms what it applies) has not
        /// confirmed it yet: the step's clock starts when it does.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        awaiting_mesh: bool,
    },
    /// A person holds the canary at its step (`weir pause`); the deadline does not run.
    Paused { at: CanaryAt, analysing: bool },
    /// The last step passed: the Deployment rolls out the canary's template while the
    /// canary keeps its traffic.
    Promoting {
        at: CanaryAt,
        since: Timestamp,
        /// The promotion deadline passed and was reported.
        #[serde(default)]
        stalled: bool,
        /// A newer template appeared during promotion and was stopped (Deployment
        /// paused again) until the template is the canary's or the stable one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interrupted_by: Option<String>,
    },
    /// Traffic is off the canary; its pods keep running until `until` so in-flight
    /// requests finish, then they go and the Rollout is Stable on `stable`.
    Draining {
        stable: String,
        canary: String,
        until: Timestamp,
        outcome: Outcome,
    },
}

/// A state without its data: the rows and columns of the transition table
/// (`crate::engine::TRANSITIONS`), the names in messages, the schema and the README.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::Display, strum::IntoStaticStr, strum::EnumIter)]
pub enum Kind {
    Initializing,
    Stable,
    Scaling,
    Analysing,
    Paused,
    Promoting,
    Draining,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The name in `status.state.name` (serde's camelCase of the variant).
    pub fn serialized(self) -> String {
        let name = self.as_str();
        name.get(..1).unwrap_or_default().to_lowercase() + name.get(1..).unwrap_or_default()
    }

    /// A canary in progress: the states `weir pause`, `promote` and `abort` act on.
    pub fn is_canary(self) -> bool {
        matches!(self, Kind::Scaling | Kind::Analysing | Kind::Paused)
    }
}

/// The OpenAPI schema of `status.state`: an object named by its `name`, whose other
/// fields the API server keeps as they are (weir alone writes them, and checks their
/// version: `status.stateVersion`).
pub fn schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "Where the rollout is: the state machine's state, which the other status fields project.",
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {
            "name": {
                "type": "string",
                "enum": Kind::iter().map(Kind::serialized).collect::<Vec<_>>()
            }
        },
        "required": ["name"]
    })
}

impl State {
    /// The canary in progress, if any (not while draining).
    pub fn canary(&self) -> Option<&CanaryAt> {
        match self {
            State::Scaling { at, .. } | State::Analysing { at, .. } | State::Paused { at, .. } => Some(at),
            State::Promoting { at, .. } => Some(at),
            State::Initializing | State::Stable { .. } | State::Draining { .. } => None,
        }
    }

    /// Revision the stable track runs (or will, once a promotion drains).
    pub fn stable(&self) -> Option<&str> {
        match self {
            State::Initializing => None,
            State::Stable { stable, .. } | State::Draining { stable, .. } => Some(stable),
            _ => self.canary().map(|at| at.stable.as_str()),
        }
    }

    /// The canary weight this state stands for.
    pub fn weight(&self) -> u32 {
        self.canary().map(|at| at.weight).unwrap_or(0)
    }

    /// The phase a person reads.
    pub fn phase(&self) -> Phase {
        match self {
            State::Initializing => Phase::Initializing,
            State::Stable { last, .. } => match last {
                Some(Outcome::Promoted) => Phase::Succeeded,
                Some(Outcome::RolledBack) => Phase::RolledBack,
                Some(Outcome::Cancelled) | None => Phase::Healthy,
            },
            State::Scaling { .. } | State::Analysing { .. } => Phase::Progressing,
            State::Paused { .. } => Phase::Paused,
            State::Promoting { .. } => Phase::Promoting,
            State::Draining { outcome, .. } => match outcome {
                Outcome::Promoted => Phase::Promoting,
                Outcome::RolledBack => Phase::RolledBack,
                Outcome::Cancelled => Phase::Healthy,
            },
        }
    }

    /// Which state this is, without its data.
    /// A step whose weight the mesh has not confirmed yet.
    pub fn awaiting_mesh(&self) -> bool {
        matches!(
            self,
            State::Analysing {
                awaiting_mesh: true,
                ..
            }
        )
    }

    pub fn kind(&self) -> Kind {
        match self {
            State::Initializing => Kind::Initializing,
            State::Stable { .. } => Kind::Stable,
            State::Scaling { .. } => Kind::Scaling,
            State::Analysing { .. } => Kind::Analysing,
            State::Paused { .. } => Kind::Paused,
            State::Promoting { .. } => Kind::Promoting,
            State::Draining { .. } => Kind::Draining,
        }
    }

    /// Name of the state, for messages and the README's table.
    pub fn name(&self) -> &'static str {
        self.kind().as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One value of every state: a new variant fails to compile here until it is named.
    fn one_of_each() -> Vec<State> {
        let at = CanaryAt {
            stable: "a".into(),
            canary: "b".into(),
            step: 1,
            weight: 25,
            reference_replicas: 4,
        };
        let t = Timestamp::UNIX_EPOCH;
        let all = vec![
            State::Initializing,
            State::Stable {
                stable: "a".into(),
                last: Some(Outcome::RolledBack),
            },
            State::Scaling {
                at: at.clone(),
                since: t,
                drain_until: Some(t),
            },
            State::Analysing {
                at: at.clone(),
                started: t,
                awaiting_mesh: true,
            },
            State::Paused {
                at: at.clone(),
                analysing: true,
            },
            State::Promoting {
                at,
                since: t,
                stalled: false,
                interrupted_by: Some("c".into()),
            },
            State::Draining {
                stable: "a".into(),
                canary: "b".into(),
                until: t,
                outcome: Outcome::Promoted,
            },
        ];
        for s in &all {
            match s {
                State::Initializing
                | State::Stable { .. }
                | State::Scaling { .. }
                | State::Analysing { .. }
                | State::Paused { .. }
                | State::Promoting { .. }
                | State::Draining { .. } => {}
            }
        }
        all
    }

    #[test]
    fn kinds_list_every_state() {
        let kinds: Vec<Kind> = one_of_each().iter().map(State::kind).collect();
        assert_eq!(kinds, Kind::iter().collect::<Vec<_>>());
    }

    #[test]
    fn every_state_round_trips_through_its_serialised_form() {
        for state in one_of_each() {
            let json = serde_json::to_value(&state).unwrap();
            assert_eq!(json["name"].as_str(), Some(state.kind().serialized().as_str()));
            let back: State = serde_json::from_value(json).unwrap();
            assert_eq!(back, state);
        }
    }
}
