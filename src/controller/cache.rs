//! What weir remembers of each Rollout under analysis between two reconciles, keyed by
//! namespace/name: the status it last decided and the one it last wrote (the judge's
//! looks in between are not written, see `RolloutStatus::decisive_part`). The objects a
//! decision reads are the watches' copies (`controller::copies`), shared by every
//! Rollout.
//!
//! Only Rollouts under analysis (or whose last write the watch has not brought back yet)
//! are remembered, so memory grows with the releases in flight, not with the Rollouts.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use kube::ResourceExt;

use crate::api::{Phase, Rollout, RolloutStatus};
use crate::controller::index;

#[derive(Default)]
pub struct Looks(Mutex<Memory>);

#[derive(Default)]
struct Memory {
    /// Boxed: a map keeps the room of the most entries it ever held (a takeover
    /// remembers thousands for a moment).
    looks: HashMap<String, Box<Look>>,
    /// The Rollouts remembered or in a reconcile: only theirs are followed.
    followed: HashMap<String, Followed>,
    /// The Rollouts whose last write met a conflict: their next reconcile reads its
    /// objects from the API server, not from the copies.
    afresh: HashSet<String>,
}

/// What the Rollout watch brought of one Rollout while it is remembered or in a
/// reconcile.
#[derive(Default)]
struct Followed {
    /// The decisive part (hashed) of the status the store holds: what the Rollout watch
    /// delivered last, or the copy the reconcile was given.
    stored: u64,
    reconciling: bool,
}

/// What tells two statuses apart for `Looks::delivered`: their decisive parts.
fn decisive_hash(status: &RolloutStatus) -> u64 {
    index::hash_of(&serde_json::to_vec(&status.decisive_part()).unwrap_or_default())
}

struct Look {
    uid: String,
    decided: RolloutStatus,
    written: RolloutStatus,
}

/// Where a reconcile starts.
pub struct Resumed {
    pub status: RolloutStatus,
    /// What the API server holds, or will once the watch catches up.
    pub written: RolloutStatus,
    /// Its objects are read from the API server: the last write met a conflict.
    pub afresh: bool,
}

impl Memory {
    fn forget_look(&mut self, key: &str) {
        self.looks.remove(key);
        shrink_when_sparse(&mut self.looks);
    }

    fn unfollow(&mut self, key: &str) {
        self.followed.remove(key);
        shrink_when_sparse(&mut self.followed);
    }
}

/// Gives back the room a burst (a takeover, many releases at once) left unused: a map
/// does not shrink by itself.
fn shrink_when_sparse<V>(map: &mut HashMap<String, V>) {
    if map.capacity() > 64 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

fn lock(looks: &Looks) -> std::sync::MutexGuard<'_, Memory> {
    looks.0.lock().unwrap_or_else(|e| e.into_inner())
}

impl Looks {
    /// Where a reconcile starts: the last decided status, when weir has one for this
    /// Rollout, else the stored one (weir restarted, or the Rollout is new to analysis).
    /// weir is the only writer of the status, so a stored status that differs from what
    /// weir last wrote is one the watch has not delivered yet: deciding from it again
    /// would restart the step's clock.
    pub fn resume(&self, key: &str, rollout: &Rollout, stored: &RolloutStatus) -> Resumed {
        let mut memory = lock(self);
        let uid = rollout.uid().unwrap_or_default();
        // Followed from now on, until `remember` (or the echo of the status) ends it. A
        // delivery the Rollout watch brought while it was followed is at least as recent
        // as the copy the reconcile was given.
        let followed = memory.followed.entry(key.to_string()).or_insert_with(|| Followed {
            stored: decisive_hash(stored),
            ..Followed::default()
        });
        followed.reconciling = true;
        let afresh = memory.afresh.remove(key);
        match memory.looks.get(key) {
            Some(look) if look.uid == uid => Resumed {
                status: look.decided.clone(),
                written: look.written.clone(),
                afresh,
            },
            _ => Resumed {
                status: stored.clone(),
                written: stored.clone(),
                afresh,
            },
        }
    }

    /// A write of the Rollout `key` met a conflict: a copy it decided on may be stale.
    pub fn conflicted(&self, key: &str) {
        lock(self).afresh.insert(key.to_string());
    }

    /// The Rollout watch delivered `status` for the Rollout `key` (and the store holds
    /// it). Once that is the status weir last wrote and the Rollout is at rest, nothing
    /// needs remembering: a reconcile starts from the watch's copy again. (Without this,
    /// each Rollout taken over would stay remembered until something woke it: maybe
    /// never, 10,000 of them after a takeover.)
    pub fn delivered(&self, key: &str, status: Option<&RolloutStatus>) {
        let mut memory = lock(self);
        // Most deliveries are of Rollouts not followed (at a takeover, 10,000 of them):
        // those cost one lookup.
        let Some(followed) = memory.followed.get_mut(key) else {
            return;
        };
        followed.stored = decisive_hash(status.unwrap_or(&RolloutStatus::default()));
        let (stored, reconciling) = (followed.stored, followed.reconciling);
        let at_rest = |look: &Look| !under_analysis(&look.decided) && decisive_hash(&look.written) == stored;
        if memory.looks.get(key).is_some_and(|look| at_rest(look)) {
            memory.forget_look(key);
            // A reconcile in flight is still followed.
            if !reconciling {
                memory.unfollow(key);
            }
        }
    }

    /// The Rollouts remembered, as (namespace, name).
    pub fn remembered(&self) -> Vec<(String, String)> {
        let memory = lock(self);
        let keys = memory.looks.keys().filter_map(|k| k.split_once('/'));
        keys.map(|(ns, name)| (ns.to_string(), name.to_string())).collect()
    }

    /// Forgets a Rollout (deleted).
    pub fn forget(&self, key: &str) {
        let mut memory = lock(self);
        memory.forget_look(key);
        memory.unfollow(key);
        memory.afresh.remove(key);
    }

    /// Remembers a decision while the Rollout is under analysis, and after it until the
    /// watch has delivered what weir last wrote: a reconcile that starts from the older
    /// stored status would decide the same transition again (a takeover taken twice).
    pub fn remember(&self, key: &str, uid: &str, decided: &RolloutStatus, written: &RolloutStatus) {
        let mut memory = lock(self);
        let followed = memory.followed.entry(key.to_string()).or_default();
        followed.reconciling = false;
        let in_store = followed.stored == decisive_hash(written);
        if !under_analysis(decided) && in_store {
            // The store has what weir wrote (its echo may come before this call).
            memory.forget_look(key);
            memory.unfollow(key);
            return;
        }
        let look = Look {
            uid: uid.to_string(),
            decided: decided.clone(),
            written: written.clone(),
        };
        memory.looks.insert(key.to_string(), Box::new(look));
    }
}

/// A Rollout whose decisions come again soon: the judge looks, a canary runs or drains,
/// or the Rollout is being deleted.
fn under_analysis(decided: &RolloutStatus) -> bool {
    matches!(
        decided.phase,
        Phase::Progressing | Phase::Paused | Phase::Promoting | Phase::Deleting
    ) || decided.state.canary().is_some()
        || matches!(decided.state, weir_core::state::State::Draining { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Rollout `key` ("namespace/name"), releasing the Deployment of its name.
    fn rollout(key: &str) -> Rollout {
        let (ns, name) = key.split_once('/').expect("namespace/name");
        serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name, "namespace": ns, "uid": "uid"},
            "spec": {"targetRef": {"kind": "Deployment", "name": name},
                     "trafficRouting": {"istio": {"virtualService": {"name": name}}},
                     "steps": [{"weight": 50}], "analysis": {"metrics": []}}
        }))
        .expect("a Rollout")
    }

    /// A reconcile of `key` that was given `stored` and decided and wrote `decided`.
    fn reconcile(looks: &Looks, key: &str, stored: &RolloutStatus, decided: &RolloutStatus) {
        looks.resume(key, &rollout(key), stored);
        looks.remember(key, "uid", decided, decided);
    }

    #[test]
    fn a_rollout_at_rest_is_forgotten_once_the_watch_brings_what_weir_wrote() {
        let looks = Looks::default();
        let stored = RolloutStatus::default();
        let written = RolloutStatus {
            phase: Phase::Healthy,
            message: "stable runs the template".into(),
            ..RolloutStatus::default()
        };
        reconcile(&looks, "apps/web", &stored, &written);
        assert_eq!(looks.remembered(), [("apps".to_string(), "web".to_string())]);
        looks.delivered("apps/web", Some(&stored));
        assert_eq!(
            looks.remembered().len(),
            1,
            "the watch has not brought the takeover yet"
        );
        let echo = RolloutStatus {
            message: "a message is not decisive".into(),
            ..written.clone()
        };
        looks.delivered("apps/web", Some(&echo));
        assert!(looks.remembered().is_empty(), "at rest, and the watch has it");
        assert!(lock(&looks).followed.is_empty(), "nothing followed once forgotten");

        let progressing = RolloutStatus {
            phase: Phase::Progressing,
            ..RolloutStatus::default()
        };
        reconcile(&looks, "apps/api", &stored, &progressing);
        looks.delivered("apps/api", Some(&progressing));
        assert_eq!(looks.remembered().len(), 1, "under analysis: remembered");
    }

    #[test]
    fn an_echo_that_comes_before_the_reconcile_ends_counts() {
        let looks = Looks::default();
        let stored = RolloutStatus::default();
        let rolled_back = RolloutStatus {
            phase: Phase::RolledBack,
            ..RolloutStatus::default()
        };
        looks.resume("apps/db", &rollout("apps/db"), &stored);
        // The reconcile wrote; the watch brings the write before `remember`.
        looks.delivered("apps/db", Some(&rolled_back));
        assert!(lock(&looks).followed.contains_key("apps/db"), "still in a reconcile");
        looks.remember("apps/db", "uid", &rolled_back, &rolled_back);
        assert!(looks.remembered().is_empty(), "the watch had it already");
        assert!(lock(&looks).followed.is_empty());
        looks.delivered("apps/other", Some(&rolled_back));
        assert!(lock(&looks).followed.is_empty(), "a Rollout not followed is not kept");
    }

    #[test]
    fn a_conflict_makes_the_next_reconcile_alone_read_afresh() {
        let looks = Looks::default();
        let stored = RolloutStatus::default();
        looks.conflicted("apps/web");
        assert!(looks.resume("apps/web", &rollout("apps/web"), &stored).afresh);
        assert!(!looks.resume("apps/web", &rollout("apps/web"), &stored).afresh);
    }
}
