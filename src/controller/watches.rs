//! What wakes a reconcile: which Rollouts a change of a Deployment or a route wakes
//! (through the index), what of a Rollout's own change counts, and the resync sweep.

use super::*;
use crate::controller::copies::Brought;
use k8s_openapi::api::core::v1::Service;

/// A hash of what a reconcile must see: the spec (generation), the annotations (requests
/// from a person), the finalizers and the deletion. Not the status: weir wrote it.
pub(super) fn what_wakes_a_reconcile(r: &Rollout) -> Option<u64> {
    let deletion = r.meta().deletion_timestamp.as_ref().map(|t| t.0.to_string());
    Some(index::hash_of(&(
        r.meta().generation,
        r.annotations(),
        r.finalizers(),
        deletion,
    )))
}

/// Resync when nothing is due: watches bring every change sooner, so this is a safety
/// net only (Argo Rollouts' default resync is the same). A resync of an idle Rollout
/// reads its objects (four GETs): at 10,000 Rollouts every 5 minutes that was 130
/// GETs/s on the API server beside the releases.
const IDLE_RESYNC: Duration = Duration::from_secs(15 * 60);

/// How often the resync sweep wakes a share of the Rollouts.
const SWEEP_TICK: Duration = Duration::from_secs(10);

/// The resync: every Rollout is woken once per `IDLE_RESYNC`, a share each
/// `SWEEP_TICK` (the Rollouts whose uid falls in that tick's slot), so 10,000 idle
/// Rollouts make ~11 reconciles a second, evenly, and keep no timer each.
pub(super) async fn resync(
    store: reflector::Store<Rollout>,
    wake: futures::channel::mpsc::UnboundedSender<ObjectRef<Rollout>>,
) {
    let slots = (IDLE_RESYNC.as_secs() / SWEEP_TICK.as_secs()).max(1);
    let mut tick = tokio::time::interval(SWEEP_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for slot in (0..slots).cycle() {
        tick.tick().await;
        for rollout in store.state() {
            let uid = rollout.uid().unwrap_or_default();
            if in_slot(&uid, slot, slots) && wake.unbounded_send(ObjectRef::from_obj(&*rollout)).is_err() {
                return;
            }
        }
    }
}

fn in_slot(uid: &str, slot: u64, slots: u64) -> bool {
    index::hash_of(uid) % slots == slot
}

/// The Rollouts a Deployment's change wakes: a canary names its Rollout in a label; a
/// target is found through the index.
pub(super) fn on_deployment(_: &Context, index: &Index, d: &Deployment, _deleted: bool) -> Vec<ObjectRef<Rollout>> {
    let ns = d.namespace().unwrap_or_default();
    match d.labels().get(ROLLOUT_LABEL) {
        Some(owner) => vec![ObjectRef::<Rollout>::new(owner).within(&ns)],
        None => index.naming(Named::Target, &ns, &d.name_any()),
    }
}

/// What the copies keep of a Deployment: a canary without its pod template (weir makes
/// it from the target's and never reads it back), a target whole but for what no
/// decision reads; nothing of a Deployment no Rollout names.
fn kept_deployment(index: &Index, d: &Deployment) -> Option<Vec<u8>> {
    match d.labels().contains_key(ROLLOUT_LABEL) {
        true => objects::canary_json(d),
        false if names(index, Named::Target, d) => objects::stripped_json(d),
        false => None,
    }
}

/// Whether a Rollout names the object `o` (as a `named`).
fn names<K: Resource>(index: &Index, named: Named, o: &K) -> bool {
    !index
        .naming(named, &o.namespace().unwrap_or_default(), &o.name_any())
        .is_empty()
}

/// What the copies keep of a routing object or a Service: what a Rollout names.
fn kept_object<K: Resource + serde::Serialize + Clone>(index: &Index, named: Named, o: &K) -> Option<Vec<u8>> {
    names(index, named, o).then(|| objects::stripped_json(o)).flatten()
}

/// Like `on_deployment`, for a VirtualService, DestinationRule or HTTPRoute.
pub(super) fn on_routing(
    ctx: &Context,
    index: &Index,
    named: Named,
    o: &DynamicObject,
    deleted: bool,
) -> Vec<ObjectRef<Rollout>> {
    ctx.hosts.follow(named, o, deleted);
    if deleted && let Ok(route) = serde_json::to_value(o) {
        ctx.confirmed.forget(&route);
    }
    index.naming(named, &o.namespace().unwrap_or_default(), &o.name_any())
}

/// What the copies keep of an object a watch brought (`None`: nothing but its version).
type Keep<K> = fn(&Index, &K) -> Option<Vec<u8>>;

/// A watch of one kind of object, kept in the copies (`Copies`), as the Rollouts its
/// changes wake. The echo of weir's own write (its answer already kept) and a version
/// older than the one kept wake nothing. A watch that lost its place lists everything
/// again: only what changed meanwhile wakes a Rollout, and objects deleted meanwhile wake
/// the Rollouts that name them and every Rollout weir remembers.
fn triggers<K, F>(
    api: Api<K>,
    named: Named,
    index: Arc<Index>,
    ctx: Arc<Context>,
    (keep, wakes): (Keep<K>, F),
) -> impl futures::Stream<Item = ObjectRef<Rollout>> + Send + 'static
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    F: Fn(&Context, &Index, &K, bool) -> Vec<ObjectRef<Rollout>> + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .flat_map(move |event| {
            let woken = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    let (ns, name) = at(&o);
                    let version = o.resource_version();
                    let brought = Brought {
                        named,
                        namespace: &ns,
                        name: &name,
                        version: version.as_deref(),
                        // Serialized and deflated only when the copies want it.
                        kept: (ctx.copies.wants(named, &ns, &name, version.as_deref()))
                            .then(|| keep(&index, &o))
                            .flatten(),
                    };
                    match ctx.copies.saw(brought) {
                        true => wakes(&ctx, &index, &o, false),
                        false => Vec::new(),
                    }
                }
                Ok(watcher::Event::Delete(o)) => {
                    let (ns, name) = at(&o);
                    ctx.copies.deleted(named, &ns, &name, o.resource_version().as_deref());
                    wakes(&ctx, &index, &o, true)
                }
                Ok(watcher::Event::Init) => {
                    ctx.copies.relisting(named);
                    Vec::new()
                }
                Ok(watcher::Event::InitDone) => vanished(&ctx, &index, ctx.copies.listed(named)),
                Err(e) => {
                    tracing::debug!(%e, "watch");
                    Vec::new()
                }
            };
            futures::stream::iter(woken)
        })
}

/// An object's namespace and name.
fn at<K: Resource>(o: &K) -> (String, String) {
    (o.namespace().unwrap_or_default(), o.name_any())
}

/// The Rollouts woken by objects a relist found deleted meanwhile (`gone`).
fn vanished(ctx: &Context, index: &Index, gone: Vec<u64>) -> Vec<ObjectRef<Rollout>> {
    if gone.is_empty() {
        return Vec::new();
    }
    ctx.hosts.forget(&gone);
    let remembered = ctx.looks.remembered().into_iter();
    let remembered = remembered.map(|(ns, name)| ObjectRef::new(&name).within(&ns));
    gone.into_iter()
        .flat_map(|k| index.naming_key(k))
        .chain(remembered)
        .collect()
}

pub(super) fn deployment_triggers(
    api: Api<Deployment>,
    index: Arc<Index>,
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = ObjectRef<Rollout>> + Send + 'static {
    triggers(api, Named::Target, index, ctx, (kept_deployment, on_deployment))
}

pub(super) fn routing_triggers(
    api: Api<DynamicObject>,
    named: Named,
    index: Arc<Index>,
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = ObjectRef<Rollout>> + Send + 'static {
    let keep = match named {
        Named::VirtualService => |index: &Index, o: &DynamicObject| kept_object(index, Named::VirtualService, o),
        Named::DestinationRule => |index: &Index, o: &DynamicObject| kept_object(index, Named::DestinationRule, o),
        _ => |index: &Index, o: &DynamicObject| kept_object(index, Named::HttpRoute, o),
    };
    triggers(
        api,
        named,
        index,
        ctx,
        (keep, move |ctx: &Context, index: &Index, o: &DynamicObject, deleted| {
            on_routing(ctx, index, named, o, deleted)
        }),
    )
}

/// The stable and canary Services of host mode and Gateway API: a change of a selector
/// wakes the Rollouts that name them.
pub(super) fn service_triggers(
    api: Api<Service>,
    index: Arc<Index>,
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = ObjectRef<Rollout>> + Send + 'static {
    let keep = |index: &Index, s: &Service| kept_object(index, Named::Service, s);
    let wakes = |_: &Context, index: &Index, s: &Service, _| {
        index.naming(Named::Service, &s.namespace().unwrap_or_default(), &s.name_any())
    };
    triggers(api, Named::Service, index, ctx, (keep, wakes))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::controller::reconcile::next_reconcile;

    #[test]
    fn idle_rollouts_keep_no_timer_and_the_sweep_wakes_each_once_per_period() {
        let step = Duration::from_secs(5);
        assert_eq!(
            next_reconcile(Some(step)),
            Requeue::requeue(step),
            "a look due keeps its time"
        );
        assert_eq!(next_reconcile(None), Requeue::await_change());
        let slots = IDLE_RESYNC.as_secs() / SWEEP_TICK.as_secs();
        let uids: Vec<String> = (0..9_000).map(|i| format!("uid-{i}")).collect();
        let per_slot: Vec<usize> = (0..slots)
            .map(|slot| uids.iter().filter(|u| in_slot(u, slot, slots)).count())
            .collect();
        assert_eq!(per_slot.iter().sum::<usize>(), uids.len(), "each in exactly one slot");
        let even = uids.len() / slots as usize;
        assert!(
            per_slot.iter().all(|n| *n > even / 2 && *n < even * 2),
            "spread: {per_slot:?}"
        );
    }
}
