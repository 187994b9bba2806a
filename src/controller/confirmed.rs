//! Since when the mesh has confirmed each route's current generation. The route's status
//! says *that* the mesh applied it, not *when*: weir keeps the first time it saw the
//! confirmation (the route watch wakes the Rollout as the status is written), and a
//! drain or a step counts from then. After a restart weir knows only "now", which is
//! later than the truth: a drain is longer, never shorter.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::Timestamp;
use serde_json::Value;
use weir_core::engine::MeshConfirmation;

#[derive(Default)]
pub struct Confirmed(Mutex<HashMap<String, (i64, Timestamp)>>);

/// (kind, namespace, name) as the map's key.
fn key_of(route: &Value) -> Option<(String, i64)> {
    let text = |p: &str| route.pointer(p).and_then(Value::as_str);
    let key = format!(
        "{}/{}/{}",
        text("/kind")?,
        text("/metadata/namespace")?,
        text("/metadata/name")?
    );
    Some((key, route.pointer("/metadata/generation")?.as_i64()?))
}

impl Confirmed {
    /// `seen` with the first time this generation of `route` was seen confirmed.
    pub fn since(&self, route: &Value, seen: MeshConfirmation) -> MeshConfirmation {
        let Some((key, generation)) = key_of(route) else {
            return seen;
        };
        let mut first = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match seen {
            MeshConfirmation::Confirmed { since } => {
                let kept = first.entry(key).or_insert((generation, since));
                if kept.0 != generation {
                    *kept = (generation, since);
                }
                MeshConfirmation::Confirmed { since: kept.1 }
            }
            other => {
                first.remove(&key);
                other
            }
        }
    }

    /// Forgets a deleted route.
    pub fn forget(&self, route: &Value) {
        if let Some((key, _)) = key_of(route) {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(generation: i64) -> Value {
        json!({"kind": "HTTPRoute", "metadata": {"namespace": "shop", "name": "checkout", "generation": generation}})
    }

    #[test]
    fn a_generation_is_confirmed_since_it_was_first_seen_so() {
        let confirmed = Confirmed::default();
        let (t1, t2, t3): (Timestamp, Timestamp, Timestamp) = (
            "2026-12-05T10:00:00Z".parse().unwrap(),
            "2026-12-05T10:00:05Z".parse().unwrap(),
            "2026-12-05T10:00:09Z".parse().unwrap(),
        );
        let at = |since| MeshConfirmation::Confirmed { since };
        assert_eq!(confirmed.since(&route(3), at(t1)), at(t1));
        assert_eq!(confirmed.since(&route(3), at(t2)), at(t1), "the first sighting holds");
        // A new generation (weir's next weight) is confirmed from its own first sighting.
        let pending = MeshConfirmation::Pending("not yet".into());
        assert_eq!(confirmed.since(&route(4), pending.clone()), pending);
        assert_eq!(confirmed.since(&route(4), at(t3)), at(t3));
    }
}
