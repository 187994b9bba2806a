//! The Kubernetes edge: observe the objects a Rollout names and turn them into the
//! engine's `World`; apply the engine's actions; write status; publish Events.
//!
//! Writes are as narrow as they can be, for GitOps tools sharing these objects:
//! `spec.paused` of the user's Deployment by server-side apply (field manager `weir`),
//! the canary Deployment (weir's own) by server-side apply, the VirtualService weights
//! by a JSON Patch of exactly those fields, the status by server-side apply.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use super::objects::Objects;
use crate::Error;
use crate::api::Router;
use crate::api::{Labels, PAUSED_ANNOTATION, REQUEST_ANNOTATION, REVISION_ANNOTATION, ROLLOUT_LABEL, Rollout};
use crate::edges::gateway;
use crate::edges::istio::{self, DestinationMatch};
use crate::edges::prometheus::Auth;
use crate::edges::routes::{self, ManagedRoute};
use crate::engine::{Action, CanaryState, Pods, TargetState, World};
use crate::plan::Names;

pub const FIELD_MANAGER: &str = "weir";
const ISTIO_GROUP: &str = "networking.istio.io";

/// The routers' APIs: which served version of Istio's networking API to use (v1, or
/// v1beta1 on older meshes), and Gateway API's HTTPRoute (v1).
#[derive(Clone, Debug)]
pub struct RouterApis {
    pub virtual_service: ApiResource,
    pub destination_rule: ApiResource,
    pub http_route: ApiResource,
}

impl RouterApis {
    pub fn version(version: &str) -> RouterApis {
        let gvk = |kind: &str| ApiResource::from_gvk(&GroupVersionKind::gvk(ISTIO_GROUP, version, kind));
        RouterApis {
            virtual_service: gvk("VirtualService"),
            destination_rule: gvk("DestinationRule"),
            http_route: ApiResource::from_gvk(&GroupVersionKind::gvk(gateway::GROUP, gateway::VERSION, "HTTPRoute")),
        }
    }

    /// The API of the object that carries a router's weights.
    pub fn route(&self, router: Router) -> &ApiResource {
        match router {
            Router::Istio(_) => &self.virtual_service,
            Router::GatewayApi(_) => &self.http_route,
        }
    }

    /// Prefers `v1`, accepts `v1beta1`; `v1` when discovery cannot tell (the missing CRD
    /// then shows up as a precise "not found" in each Rollout's status).
    pub async fn discover(client: &Client) -> RouterApis {
        match kube::discovery::group(client, ISTIO_GROUP).await {
            Ok(group) => {
                let versions = group.versions().collect::<Vec<_>>();
                let v = if versions.contains(&"v1") || versions.is_empty() {
                    "v1"
                } else {
                    "v1beta1"
                };
                RouterApis::version(v)
            }
            Err(_) => RouterApis::version("v1"),
        }
    }
}

/// FNV-1a over the template's JSON: a short, stable revision name. (Hand-written: eight
/// lines do not earn a dependency, and the value must never change between releases.)
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:010x}", h & 0xff_ffff_ffff)
}

/// Pod labels of the canary: the user's, with the track label set to `canary`.
pub fn canary_labels(template_labels: &Labels, track_label: &str) -> Labels {
    let mut labels = template_labels.clone();
    labels.insert(track_label.to_string(), "canary".to_string());
    labels
}

/// What `observe` found, beyond the engine's `World`: what `apply` needs to write.
pub struct Observation {
    pub world: World,
    pub target: Option<Deployment>,
    pub route: Option<Value>,
    pub routes: Vec<ManagedRoute>,
    pub auth: Result<Auth, String>,
}

pub(crate) fn namespace(rollout: &Rollout) -> String {
    rollout.namespace().unwrap_or_else(|| "default".into())
}

fn pods(d: &Deployment) -> Pods {
    let st = d.status.clone().unwrap_or_default();
    Pods {
        desired: d.spec.replicas.unwrap_or(1),
        generation: d.metadata.generation.unwrap_or(0),
        observed_generation: st.observed_generation.unwrap_or(0),
        total: st.replicas.unwrap_or(0),
        updated: st.updated_replicas.unwrap_or(0),
        available: st.available_replicas.unwrap_or(0),
    }
}

fn target_state(d: &Deployment) -> TargetState {
    let images: Vec<String> = d
        .spec
        .template
        .spec
        .as_ref()
        .map(|p| p.containers.iter().filter_map(|c| c.image.clone()).collect())
        .unwrap_or_default();
    TargetState {
        revision: template_hash(&d.spec.template),
        image: (!images.is_empty()).then(|| images.join(",")),
        paused: d.spec.paused.unwrap_or(false),
        pods: pods(d),
    }
}

fn canary_state(d: &Deployment) -> CanaryState {
    CanaryState {
        revision: d.annotations().get(REVISION_ANNOTATION).cloned(),
        pods: pods(d),
    }
}

pub(crate) fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// The `weir.dev/request` annotation (promote, abort, retry), if any.
pub fn request(rollout: &Rollout) -> Option<String> {
    rollout.annotations().get(REQUEST_ANNOTATION).cloned()
}

/// The `weir.dev/paused` annotation says "true".
pub fn pause_requested(rollout: &Rollout) -> bool {
    rollout
        .annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// The engine's `World` (and what `apply` needs) from a Rollout's objects. Problems the
/// user must fix land in `world.traffic` as a precise message.
pub fn observation(rollout: &Rollout, names: &Names, objects: &Objects) -> Observation {
    let ns = namespace(rollout);
    let mut obs = Observation {
        world: World {
            target: objects.target.as_ref().map(target_state),
            canary: objects.canary.as_ref().map(canary_state),
            traffic: Ok(0),
            routes_disagree: false,
            routing_conflict: None,
            mesh: Default::default(),
            request: request(rollout),
            pause_requested: pause_requested(rollout),
            readings: None,
            hook_answers: Vec::new(),
        },
        target: objects.target.clone(),
        route: None,
        routes: Vec::new(),
        auth: objects.auth.clone(),
    };
    if let Some(c) = &objects.canary
        && c.labels().get(ROLLOUT_LABEL) != Some(&rollout.name_any())
    {
        obs.world.traffic = Err(format!(
            "Deployment {ns}/{} exists and is not the canary of Rollout {}; rename it or the target",
            names.canary,
            rollout.name_any()
        ));
        return obs;
    }
    let Some(target) = &objects.target else { return obs };
    let stable_pods: Labels = target
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let canary_pods = canary_labels(&stable_pods, &names.track_label);
    obs.world.traffic = observe_routing(rollout, &ns, (&stable_pods, &canary_pods), objects, &mut obs);
    obs
}

fn observe_routing(
    rollout: &Rollout,
    ns: &str,
    pods: (&Labels, &Labels),
    objects: &Objects,
    obs: &mut Observation,
) -> Result<u32, String> {
    let router =
        (rollout.spec.traffic_routing.router()).ok_or("spec.trafficRouting: set exactly one of istio or gatewayAPI")?;
    if router.services().is_some() {
        check_track_services(ns, objects, pods)?;
    }
    let routes = match router {
        Router::Istio(istio) => istio_routes(istio, ns, pods, objects)?,
        Router::GatewayApi(g) => {
            let Some(route) = &objects.route else {
                return Err(format!("HTTPRoute {ns}/{} not found", g.http_route.name));
            };
            gateway::managed_rules(route, &g.http_route.rules, &g.stable_service, &g.canary_service)?
        }
    };
    let percent = routes::observed_canary_percent(&routes);
    obs.world.routes_disagree = routes::routes_disagree(&routes);
    if let (Some(route), Some(first)) = (&objects.route, routes.first()) {
        obs.world.mesh = routes::mesh_confirmation(first.shape, route, jiff::Timestamp::now());
    }
    obs.routes = routes;
    obs.route = objects.route.clone();
    Ok(percent)
}

/// The stable and canary Services (Istio's host mode, Gateway API) exist and select
/// their own track's pods only.
fn check_track_services(
    ns: &str,
    objects: &Objects,
    (stable_pods, canary_pods): (&Labels, &Labels),
) -> Result<(), String> {
    let mut selectors = Vec::new();
    for (name, svc) in &objects.services {
        let Some(svc) = svc else {
            return Err(format!("Service {ns}/{name} not found"));
        };
        let selector = svc.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
        selectors.push((name.as_str(), selector));
    }
    if let [(stable, s), (canary, c)] = &selectors[..] {
        istio::check_services((stable, s), (canary, c), stable_pods, canary_pods)?;
    }
    Ok(())
}

/// The routes of an Istio VirtualService weir manages, after its DestinationRule's
/// subsets are checked (subset mode).
fn istio_routes(
    routing: &crate::api::IstioRouting,
    ns: &str,
    (stable_pods, canary_pods): (&Labels, &Labels),
    objects: &Objects,
) -> Result<Vec<ManagedRoute>, String> {
    let mut dr_host = None;
    if let Some(dr_ref) = &routing.destination_rule {
        let Some(dr) = &objects.destination_rule else {
            return Err(format!("DestinationRule {ns}/{} not found", dr_ref.name));
        };
        istio::check_destination_rule(
            dr,
            &dr_ref.stable_subset,
            &dr_ref.canary_subset,
            stable_pods,
            canary_pods,
        )?;
        dr_host = istio::destination_rule_host(dr).map(str::to_string);
        if dr_host.is_none() {
            return Err(format!("DestinationRule {ns}/{} has no spec.host", dr_ref.name));
        }
    }
    let Some(vs) = &objects.route else {
        return Err(format!(
            "VirtualService {ns}/{} not found",
            routing.virtual_service.name
        ));
    };
    let Some(matcher) = DestinationMatch::new(routing, dr_host.as_deref()) else {
        return Err("spec.trafficRouting.istio needs destinationRule or hosts".into());
    };
    istio::managed_routes(vs, &routing.virtual_service.routes, &matcher)
}

/// The canary Deployment for a revision: the target's spec with the track label set to
/// `canary` in the selector and the pod labels, owned by the Rollout.
pub fn canary_deployment(
    rollout: &Rollout,
    names: &Names,
    target: &Deployment,
    revision: &str,
    replicas: i32,
) -> Deployment {
    let spec = &target.spec;
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    meta.labels = Some(canary_labels(
        &meta.labels.clone().unwrap_or_default(),
        &names.track_label,
    ));
    let mut match_labels = spec.selector.match_labels.clone().unwrap_or_default();
    match_labels.insert(names.track_label.clone(), "canary".into());
    Deployment {
        metadata: ObjectMeta {
            name: Some(names.canary.clone()),
            namespace: rollout.namespace(),
            labels: Some(BTreeMap::from([
                (ROLLOUT_LABEL.to_string(), rollout.name_any()),
                ("app.kubernetes.io/managed-by".to_string(), "weir".to_string()),
            ])),
            annotations: Some(BTreeMap::from([(
                REVISION_ANNOTATION.to_string(),
                revision.to_string(),
            )])),
            owner_references: rollout.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(match_labels),
                match_expressions: spec.selector.match_expressions.clone(),
            },
            template,
            strategy: spec.strategy.clone(),
            min_ready_seconds: spec.min_ready_seconds,
            revision_history_limit: Some(2),
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// An object as the API server answered weir's write of it.
#[derive(Clone)]
pub enum Applied {
    Target(Deployment),
    /// `None`: deleted.
    Canary(Option<Deployment>),
    /// The routing object whose weights weir set: a VirtualService or an HTTPRoute.
    Route(Value),
}

/// Applies one action; returns the object written, as the API server answered (`None`:
/// nothing to write). A conflict (someone edited the VirtualService between our read and
/// our write) comes back as an error: the controller re-observes and decides again.
// Long: one arm per `engine::Action`, each the write that makes it true.
pub async fn apply(
    client: &Client,
    apis: &RouterApis,
    rollout: &Rollout,
    names: &Names,
    obs: &Observation,
    action: &Action,
) -> Result<Option<Applied>, Error> {
    let ns = namespace(rollout);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let applied = match action {
        Action::PauseTarget(paused) => {
            let body = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": names.target}, "spec": {"paused": paused}});
            let d = deployments
                .patch(&names.target, &apply_params(), &Patch::Apply(body))
                .await?;
            Applied::Target(d)
        }
        // An apply that names no field drops every field weir owned on the Deployment
        // (`spec.paused`): it falls back to its default, unpaused, and nothing of weir's
        // is left on it.
        Action::ReleaseTarget if obs.world.target.is_some() => {
            let body = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": names.target}});
            let d = deployments
                .patch(&names.target, &apply_params(), &Patch::Apply(body))
                .await?;
            Applied::Target(d)
        }
        Action::RemoveCanary if obs.world.canary.is_some() => {
            match deployments.delete(&names.canary, &Default::default()).await {
                // Still there while its finalizers run.
                Ok(either) => Applied::Canary(either.left()),
                Err(e) if not_found(&e) => Applied::Canary(None),
                Err(e) => return Err(e.into()),
            }
        }
        Action::ApplyCanary { replicas: 0, .. } if obs.world.canary.is_some() => {
            let body = json!({"spec": {"replicas": 0}});
            let d = deployments
                .patch(&names.canary, &PatchParams::default(), &Patch::Merge(body))
                .await?;
            Applied::Canary(Some(d))
        }
        Action::ReleaseTarget | Action::RemoveCanary | Action::ApplyCanary { replicas: 0, .. } => return Ok(None),
        Action::ApplyCanary { revision, replicas } => {
            let target = obs
                .target
                .as_ref()
                .ok_or_else(|| Error::Invariant("canary applied without a target".into()))?;
            if obs.world.target.as_ref().map(|t| t.revision.as_str()) != Some(revision.as_str()) {
                return Err(Error::Invariant(format!(
                    "canary revision {revision} is not the target's template"
                )));
            }
            let canary = canary_deployment(rollout, names, target, revision, *replicas);
            let d = deployments
                .patch(&names.canary, &apply_params(), &Patch::Apply(canary))
                .await?;
            Applied::Canary(Some(d))
        }
        Action::SetCanaryWeight(percent) => {
            let route = (obs.route.as_ref()).ok_or_else(|| Error::Invariant("weights set without a route".into()))?;
            let router = (rollout.spec.traffic_routing.router())
                .ok_or_else(|| Error::Invariant("weights set without a router".into()))?;
            let patch: json_patch::Patch = serde_json::from_value(routes::weight_patch(route, &obs.routes, *percent))?;
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, apis.route(router));
            let o = (api.patch(router.route_name(), &PatchParams::default(), &Patch::Json::<()>(patch))).await?;
            Applied::Route(serde_json::to_value(o)?)
        }
    };
    Ok(Some(applied))
}

/// Writes the whole status by server-side apply on the status subresource.
pub async fn write_status(client: &Client, rollout: &Rollout, status: &crate::api::RolloutStatus) -> Result<(), Error> {
    let api: Api<Rollout> = Api::namespaced(client.clone(), &namespace(rollout));
    let body = json!({"apiVersion": Rollout::api_version(&()), "kind": Rollout::kind(&()), "status": status});
    api.patch_status(&rollout.name_any(), &apply_params(), &Patch::Apply(body))
        .await?;
    Ok(())
}
