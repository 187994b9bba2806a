//! What weir remembers of each Rollout under analysis between two reconciles, keyed by
//! namespace/name: the status it last decided, the one it last wrote (the judge's looks
//! in between are not written, see `RolloutStatus::decisive_part`), and the objects its
//! observation is built from — read once, then kept current by the watches and by the
//! answers to weir's own writes, so that a look of the judge reads no object again.
//!
//! Only Rollouts under analysis (or whose last write the watch has not brought back yet)
//! are remembered: an idle Rollout is read afresh on the rare change that wakes it, so
//! memory grows with the releases in flight, not with the Rollouts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::DynamicObject;
use serde_json::Value;

use crate::api::{Phase, Rollout, RolloutStatus};
use crate::controller::index::{self, Named};
use crate::edges::kubernetes::Applied;
use crate::edges::objects::{self, Objects, deployment_later, later, version_of};
use crate::plan::Names;

/// The watches keep the objects current (and a watch that lost its place makes every
/// Rollout read afresh); they are still read afresh at least this often, for what no
/// watch brings (a provider's Secret, host mode's Services).
pub const OBJECTS_MAX_AGE: Duration = Duration::from_secs(120);

#[derive(Default)]
pub struct Looks(Mutex<Memory>);

#[derive(Default)]
struct Memory {
    /// Boxed: a `Look` is ~7 KB inline, and a map keeps the room of the most entries it
    /// ever held (a takeover remembers thousands for a moment).
    looks: HashMap<String, Box<Look>>,
    /// The Rollouts remembered or in a reconcile: only theirs are followed.
    followed: HashMap<String, Followed>,
}

/// What the watches brought of one Rollout while it is remembered or in a reconcile.
#[derive(Default)]
struct Followed {
    /// How many changes of its objects: a reconcile that read its objects while one
    /// arrived must not keep what it read (the change may be missing).
    changes: u64,
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
    objects: Option<Packed>,
}

/// Kept objects as JSON while no reconcile works on them: parsed, a Rollout's two
/// Deployments, VirtualService and DestinationRule take ~20 KB, as JSON ~5 KB, and 1,000
/// Rollouts under analysis keep theirs. Unpacked for each look (~50 µs).
struct Packed {
    objects: Box<[u8]>,
    names: Watched,
    read_at: Instant,
}

impl Packed {
    /// `None` when the objects cannot be written as JSON: then nothing is kept, and the
    /// next reconcile reads them again.
    fn of(kept: Kept) -> Option<Packed> {
        let objects = serde_json::to_vec(&kept.objects).ok()?.into_boxed_slice();
        Some(Packed {
            objects,
            names: kept.names,
            read_at: kept.read_at,
        })
    }

    fn kept(&self) -> Option<Kept> {
        Some(Kept {
            objects: serde_json::from_slice(&self.objects).ok()?,
            names: self.names.clone(),
            read_at: self.read_at,
        })
    }
}

/// Changes the kept objects of `look` with `change`; its answer, or `None` when nothing
/// is kept (or what was kept could not be read back, and is dropped). Packed again only
/// when `changed` says the answer changed them: most watched changes are echoes.
fn change_kept<R>(look: &mut Look, change: impl FnOnce(&mut Kept) -> R, changed: impl FnOnce(&R) -> bool) -> Option<R> {
    let Some(mut kept) = look.objects.as_ref()?.kept() else {
        look.objects = None;
        return None;
    };
    let answer = change(&mut kept);
    if changed(&answer) {
        look.objects = Packed::of(kept);
    }
    Some(answer)
}

/// What a watched change was to a Rollout's kept objects.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Taken {
    /// A newer version of a kept object, now kept.
    In,
    /// The version kept or an older one: an echo of weir's own write, no news.
    Echo,
    /// Not one of the kept objects.
    Other,
}

/// A Rollout's objects and what they were read for.
#[derive(Clone)]
pub struct Kept {
    pub objects: Objects,
    pub names: Watched,
    pub read_at: Instant,
}

/// The names of the objects an observation reads, and the provider whose credentials it
/// holds: a spec that names others needs a fresh read.
#[derive(Clone, Debug, PartialEq)]
pub struct Watched {
    target: String,
    canary: String,
    /// The routing object: its kind (VirtualService or HTTPRoute) and name.
    route: (Named, String),
    destination_rule: Option<String>,
    services: Vec<String>,
    provider: Option<String>,
}

impl Watched {
    pub fn of(rollout: &Rollout, names: &Names, provider: Option<&str>) -> Watched {
        let router = rollout.spec.traffic_routing.router();
        let istio = rollout.spec.traffic_routing.istio.as_ref();
        Watched {
            target: names.target.clone(),
            canary: names.canary.clone(),
            route: router.map_or((Named::VirtualService, String::new()), |r| {
                (index::route_kind(r), r.route_name().to_string())
            }),
            destination_rule: istio.and_then(|i| i.destination_rule.as_ref()).map(|d| d.name.clone()),
            services: (router.and_then(|r| r.services()).into_iter())
                .flat_map(|(s, c)| [s.to_string(), c.to_string()])
                .collect(),
            provider: provider.map(str::to_string),
        }
    }
}

/// Where a reconcile starts.
pub struct Resumed {
    pub status: RolloutStatus,
    /// What the API server holds, or will once the watch catches up.
    pub written: RolloutStatus,
    /// The Rollout's objects as last known, when still fresh.
    pub kept: Option<Kept>,
    /// `Followed::changes` when the reconcile began.
    pub changes: u64,
}

/// An object one of the watches delivered; `None`: deleted.
pub enum Change<'a> {
    Deployment(&'a str, Option<&'a Deployment>),
    /// A VirtualService or an HTTPRoute (`Named` says which).
    Route(Named, &'a str, Option<&'a DynamicObject>),
    DestinationRule(&'a str, Option<&'a DynamicObject>),
}

/// Whether `new` is a later version than `old`. Resource versions are etcd revisions on
/// every API server weir knows; an opaque one counts as later unless equal.
fn routing_value(o: &DynamicObject) -> Option<Value> {
    serde_json::to_value(o).ok().map(objects::stripped_value)
}

impl Kept {
    /// Takes a watched change in, when it is one of these objects and newer than the one
    /// kept, and says which it was: an echo of weir's own write (the version its answer
    /// already brought) or an older version is no news.
    fn take(&mut self, change: &Change) -> Taken {
        let objects = &mut self.objects;
        match *change {
            Change::Deployment(name, d) => {
                let (slot, keep): (_, fn(Deployment) -> Deployment) = match name {
                    n if n == self.names.target => (&mut objects.target, objects::stripped),
                    n if n == self.names.canary => (&mut objects.canary, objects::canary_kept),
                    _ => return Taken::Other,
                };
                match d {
                    None => *slot = None,
                    Some(d) if deployment_later(Some(d), slot.as_ref()) => *slot = Some(keep(d.clone())),
                    Some(_) => return Taken::Echo,
                }
            }
            Change::Route(_, name, o) | Change::DestinationRule(name, o) => {
                let slot = match change {
                    Change::Route(kind, ..) if (*kind, name) == (self.names.route.0, self.names.route.1.as_str()) => {
                        &mut objects.route
                    }
                    Change::DestinationRule(..) if Some(name) == self.names.destination_rule.as_deref() => {
                        &mut objects.destination_rule
                    }
                    _ => return Taken::Other,
                };
                match o {
                    None => *slot = None,
                    Some(o) if later(o.resource_version().as_deref(), slot.as_ref().and_then(version_of)) => {
                        *slot = routing_value(o)
                    }
                    Some(_) => return Taken::Echo,
                }
            }
        }
        Taken::In
    }
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
    pub fn resume(&self, key: &str, rollout: &Rollout, stored: &RolloutStatus, names: &Watched) -> Resumed {
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
        let changes = followed.changes;
        match memory.looks.get(key) {
            Some(look) if look.uid == uid => Resumed {
                status: look.decided.clone(),
                written: look.written.clone(),
                kept: look
                    .objects
                    .as_ref()
                    .filter(|k| k.names == *names && k.read_at.elapsed() < OBJECTS_MAX_AGE)
                    .and_then(Packed::kept),
                changes,
            },
            _ => Resumed {
                status: stored.clone(),
                written: stored.clone(),
                kept: None,
                changes,
            },
        }
    }

    /// A watched object of the Rollout `key` changed. Says whether that wakes the
    /// Rollout: not for an echo of weir's own write.
    pub fn seen(&self, key: &str, change: &Change) -> bool {
        let mut memory = lock(self);
        let news = memory
            .looks
            .get_mut(key)
            .and_then(|look| change_kept(look, |kept| kept.take(change), |t| *t == Taken::In))
            .is_none_or(|t| t != Taken::Echo);
        // Counted only for a Rollout followed: counting every Rollout a change wakes
        // would keep an entry for each of 10,000 idle ones.
        if let Some(followed) = memory.followed.get_mut(key).filter(|_| news) {
            followed.changes += 1;
        }
        news
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
            // A reconcile in flight still needs its count of changes.
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

    /// A watch found objects deleted while it was away (it lost its place and listed
    /// everything again), and cannot say which Rollouts kept them: every Rollout reads
    /// its objects afresh.
    pub fn forget_objects(&self) {
        let mut memory = lock(self);
        for look in memory.looks.values_mut() {
            look.objects = None;
        }
        // Reconciles in flight read before the list: what they read is not kept.
        for followed in memory.followed.values_mut() {
            followed.changes += 1;
        }
    }

    /// Forgets a Rollout (deleted).
    pub fn forget(&self, key: &str) {
        let mut memory = lock(self);
        memory.forget_look(key);
        memory.unfollow(key);
    }

    /// Remembers a decision while the Rollout is under analysis, and after it until the
    /// watch has delivered what weir last wrote: a reconcile that starts from the older
    /// stored status would decide the same transition again (a takeover taken twice).
    pub fn remember(&self, key: &str, uid: &str, decided: &RolloutStatus, written: &RolloutStatus, memo: Memo) {
        let mut memory = lock(self);
        let followed = memory.followed.entry(key.to_string()).or_default();
        followed.reconciling = false;
        let changed_meanwhile = followed.changes != memo.changes;
        let in_store = followed.stored == decisive_hash(written);
        let under_analysis = under_analysis(decided);
        if !under_analysis && in_store {
            // The store has what weir wrote (its echo may come before this call), and
            // nothing is kept, so nothing a change could make stale.
            memory.forget_look(key);
            memory.unfollow(key);
            return;
        }
        let fresh = || {
            Box::new(Look {
                uid: uid.to_string(),
                decided: RolloutStatus::default(),
                written: RolloutStatus::default(),
                objects: None,
            })
        };
        let look = memory.looks.entry(key.to_string()).or_insert_with(fresh);
        if look.uid != uid {
            *look = fresh();
        }
        look.decided = decided.clone();
        look.written = written.clone();
        // Objects are kept for a Rollout under analysis only: one at rest waits here just
        // until the watch brings its status back, and may never reconcile again.
        let kept = match (memo.kept.filter(|_| under_analysis), look.objects.take()) {
            (Some(read), _) if !changed_meanwhile => Some(read),
            // The watches brought changes while the reconcile read and wrote: the later
            // version of each object wins, when both sides hold one.
            (Some(read), Some(watched)) => watched.kept().and_then(|watched| read.merged(watched)),
            _ => None,
        };
        look.objects = kept.and_then(Packed::of);
    }

    /// What weir just wrote, as the API server answered, at once: its echo from the
    /// watch is then no news (it wakes nothing).
    pub fn record(&self, key: &str, applied: &Applied) {
        if let Some(look) = lock(self).looks.get_mut(key) {
            change_kept(look, |kept| kept.objects.record_if_later(applied), |newer| *newer);
        }
    }
}

/// A Rollout whose decisions read its objects again soon: the judge looks, a canary
/// runs or drains, or the Rollout is being deleted.
fn under_analysis(decided: &RolloutStatus) -> bool {
    matches!(
        decided.phase,
        Phase::Progressing | Phase::Paused | Phase::Promoting | Phase::Deleting
    ) || decided.state.canary().is_some()
        || matches!(decided.state, weir_core::state::State::Draining { .. })
}

/// What a reconcile read, for `Looks::remember`.
pub struct Memo {
    /// The objects as they are after the reconcile's writes; `None` when unknown (a
    /// write failed).
    pub kept: Option<Kept>,
    /// `Resumed::changes`: when the watches brought a change since, `kept` may miss it
    /// and is not kept.
    pub changes: u64,
}

impl Kept {
    /// These objects (read and written by a reconcile) with what the watches brought
    /// meanwhile (`watched`), each the later version; `None` when that cannot be told.
    fn merged(self, watched: Kept) -> Option<Kept> {
        let objects = self.objects.merged(watched.objects)?;
        Some(Kept { objects, ..self })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::objects::deployment_version;

    #[test]
    fn versions_compare_as_numbers_and_an_echo_is_not_new() {
        assert!(later(Some("10"), Some("9")));
        assert!(!later(Some("9"), Some("10")), "a watch that lags does not undo a write");
        assert!(!later(Some("10"), Some("10")), "the echo of weir's own write");
        assert!(later(Some("10"), None));
        assert!(later(Some("b"), Some("a")), "opaque: newer unless equal");
        assert!(!later(Some("a"), Some("a")));
    }

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

    /// The names a reconcile of the Rollout `key` reads.
    fn watched(key: &str) -> Watched {
        let rollout = rollout(key);
        Watched::of(&rollout, &Names::of(&rollout.spec), None)
    }

    /// The start of a reconcile of the Rollout `key`, given `stored`.
    fn resume(looks: &Looks, key: &str, stored: &RolloutStatus) -> Resumed {
        looks.resume(key, &rollout(key), stored, &watched(key))
    }

    /// A reconcile of `key` that was given `stored`, kept no objects and decided and
    /// wrote `decided`.
    fn reconcile(looks: &Looks, key: &str, stored: &RolloutStatus, decided: &RolloutStatus) {
        let resumed = resume(looks, key, stored);
        let memo = Memo {
            kept: None,
            changes: resumed.changes,
        };
        looks.remember(key, "uid", decided, decided, memo);
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
        let resumed = resume(&looks, "apps/db", &stored);
        // The reconcile wrote; the watch brings the write before `remember`.
        looks.delivered("apps/db", Some(&rolled_back));
        assert!(lock(&looks).followed.contains_key("apps/db"), "still in a reconcile");
        let memo = Memo {
            kept: None,
            changes: resumed.changes,
        };
        looks.remember("apps/db", "uid", &rolled_back, &rolled_back, memo);
        assert!(looks.remembered().is_empty(), "the watch had it already");
        assert!(lock(&looks).followed.is_empty());
        looks.delivered("apps/other", Some(&rolled_back));
        assert!(lock(&looks).followed.is_empty(), "a Rollout not followed is not kept");
    }

    #[test]
    fn kept_objects_follow_the_watch_by_version_and_come_back_whole() {
        let looks = Looks::default();
        let stored = RolloutStatus::default();
        let analysing = RolloutStatus {
            phase: Phase::Progressing,
            ..RolloutStatus::default()
        };
        let deployment = |name: &str, version: &str, image: &str| -> Deployment {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "apps", "resourceVersion": version},
                "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "app", "image": image}]}}}
            }))
            .expect("a Deployment")
        };
        let resumed = resume(&looks, "apps/web", &stored);
        let kept = Kept {
            objects: Objects {
                target: Some(deployment("web", "10", "hello:2")),
                canary: Some(deployment("web-canary", "11", "hello:2")),
                route: Some(serde_json::json!({"metadata": {"resourceVersion": "12"}, "spec": {}})),
                destination_rule: None,
                services: Vec::new(),
                auth: Ok(crate::edges::prometheus::Auth::Bearer("token".into())),
            },
            names: watched("apps/web"),
            read_at: Instant::now(),
        };
        let memo = Memo {
            kept: Some(kept),
            changes: resumed.changes,
        };
        looks.remember("apps/web", "uid", &analysing, &analysing, memo);

        let echo = deployment("web", "10", "hello:2");
        assert!(
            !looks.seen("apps/web", &Change::Deployment("web", Some(&echo))),
            "an echo is no news"
        );
        let later = deployment("web", "13", "hello:3");
        assert!(looks.seen("apps/web", &Change::Deployment("web", Some(&later))));
        let canary_later = deployment("web-canary", "14", "hello:3");
        assert!(looks.seen("apps/web", &Change::Deployment("web-canary", Some(&canary_later))));

        let kept = resume(&looks, "apps/web", &stored).kept.expect("kept");
        let objects = kept.objects;
        assert_eq!(deployment_version(objects.target.as_ref().expect("target")), Some("13"));
        let image = objects
            .target
            .as_ref()
            .and_then(|d| d.spec.template.spec.as_ref())
            .map(|s| s.containers[0].image.clone());
        assert_eq!(image, Some(Some("hello:3".to_string())), "the target whole");
        let canary = objects.canary.expect("canary");
        assert_eq!(deployment_version(&canary), Some("14"));
        assert!(
            canary.spec.template.spec.is_none(),
            "a canary is kept without its template"
        );
        assert_eq!(objects.route.as_ref().and_then(version_of), Some("12"));
        assert_eq!(objects.auth, Ok(crate::edges::prometheus::Auth::Bearer("token".into())));
    }
}
