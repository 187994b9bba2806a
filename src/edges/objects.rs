//! The objects one Rollout depends on — its Deployments, routing objects, host-mode
//! Services and its provider's credentials — as read from the API server (`fetch`),
//! stripped of what no decision reads (they are kept between reconciles), and updated
//! by weir's own writes (`record`). Which Rollout keeps which objects, and for how long,
//! is the controller's cache (`controller::cache`).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{ApiResource, DynamicObject};
use kube::{Api, Client};
use serde_json::Value;

use super::kubernetes::{Applied, RouterApis, namespace, not_found};
use super::prometheus::Auth;
use crate::Error;
use crate::admin::providers::Provider;
use crate::api::{IstioRouting, Rollout, Router};
use crate::plan::Names;

/// The objects one Rollout depends on, as read from the API server (or kept current by
/// the watches, see `controller::Looks`). `None`: not found.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Objects {
    pub target: Option<Deployment>,
    pub canary: Option<Deployment>,
    /// The object that carries the weights: a VirtualService or an HTTPRoute.
    pub route: Option<Value>,
    pub destination_rule: Option<Value>,
    /// The stable and canary Services (Istio's host mode, Gateway API), by name.
    pub services: Vec<(String, Option<Service>)>,
    pub auth: Result<Auth, String>,
}

/// Reads everything one Rollout depends on: the Deployments, the routing objects its
/// spec names and its provider's credentials. API failures are errors (retried by the
/// controller); a missing object is `None`.
pub async fn fetch(
    client: &Client,
    apis: &RouterApis,
    rollout: &Rollout,
    names: &Names,
    provider: Option<&Provider>,
    secrets_ns: &str,
) -> Result<Objects, Error> {
    let ns = namespace(rollout);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let router = (rollout.spec.traffic_routing.router())
        .ok_or_else(|| Error::Invariant("a Rollout without a router was not planned".into()))?;
    let target = deployments.get_opt(&names.target).await?.map(stripped);
    let canary = deployments.get_opt(&names.canary).await?.map(canary_kept);
    let auth = provider_auth(client, provider, secrets_ns).await?;
    let destination_rule = match router {
        Router::Istio(IstioRouting {
            destination_rule: Some(dr),
            ..
        }) => get_dynamic(client, &ns, &apis.destination_rule, &dr.name).await?,
        _ => None,
    };
    let mut services = Vec::new();
    if let Some((stable, canary)) = router.services() {
        let api: Api<Service> = Api::namespaced(client.clone(), &ns);
        for name in [stable, canary] {
            services.push((name.to_string(), api.get_opt(name).await?));
        }
    }
    let route = get_dynamic(client, &ns, apis.route(router), router.route_name()).await?;
    Ok(Objects {
        target,
        canary,
        route,
        destination_rule,
        services,
        auth,
    })
}

/// Without what no decision reads (managed fields, kubectl's copy of the spec), for the
/// objects weir keeps between reconciles.
pub fn stripped(mut d: Deployment) -> Deployment {
    d.metadata.managed_fields = None;
    if let Some(a) = d.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED_ANNOTATION);
    }
    d
}

/// What weir keeps of a canary Deployment: its metadata, replicas and status. Its pod
/// template is made from the target's at each write and never read back, and a Rollout
/// under analysis keeps its objects in memory (1,000 of them at once).
pub fn canary_kept(d: Deployment) -> Deployment {
    let mut d = stripped(d);
    d.spec.template = Default::default();
    d
}

/// Like `stripped`, for the routing objects.
pub fn stripped_value(mut o: Value) -> Value {
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove(LAST_APPLIED_ANNOTATION);
        }
    }
    o
}

pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

async fn get_dynamic(client: &Client, ns: &str, ar: &ApiResource, name: &str) -> Result<Option<Value>, Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    match api.get(name).await {
        Ok(obj) => Ok(Some(stripped_value(serde_json::to_value(obj)?))),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads a provider's credentials from its Secret, in weir's own namespace only (the
/// admin's, where Rollout authors have no say).
async fn provider_auth(
    client: &Client,
    provider: Option<&Provider>,
    secrets_ns: &str,
) -> Result<Result<Auth, String>, Error> {
    let Some((provider, name)) = provider.and_then(|p| p.secret.as_ref().map(|s| (p, s))) else {
        return Ok(Ok(Auth::None));
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), secrets_ns);
    let Some(secret) = secrets.get_opt(name).await? else {
        return Ok(Err(format!(
            "Secret {secrets_ns}/{name} of metric provider {} not found",
            provider.name
        )));
    };
    let data = secret.data.unwrap_or_default();
    let field = |k: &str| data.get(k).map(|b| String::from_utf8_lossy(&b.0).trim().to_string());
    Ok(match (field("token"), field("username"), field("password")) {
        (Some(token), _, _) => Ok(Auth::Bearer(token)),
        (None, Some(username), Some(password)) => Ok(Auth::Basic { username, password }),
        _ => Err(format!(
            "Secret {secrets_ns}/{name} of metric provider {} needs a token, or a username and a password",
            provider.name
        )),
    })
}

impl Objects {
    /// What weir just wrote, as the API server answered it.
    pub fn record(&mut self, applied: Applied) {
        match applied {
            Applied::Target(d) => self.target = Some(stripped(d)),
            Applied::Canary(d) => self.canary = d.map(canary_kept),
            Applied::Route(o) => self.route = Some(stripped_value(o)),
        }
    }

    /// Like `record`, unless the watch already brought a later version; says whether it
    /// recorded.
    pub fn record_if_later(&mut self, applied: &Applied) -> bool {
        let newer = match applied {
            Applied::Target(d) => deployment_later(Some(d), self.target.as_ref()),
            Applied::Canary(Some(d)) => deployment_later(Some(d), self.canary.as_ref()),
            Applied::Canary(None) => true,
            Applied::Route(o) => later(version_of(o), self.route.as_ref().and_then(version_of)),
        };
        if newer {
            self.record(applied.clone());
        }
        newer
    }
}

pub fn deployment_version(d: &Deployment) -> Option<&str> {
    d.metadata.resource_version.as_deref()
}

pub fn deployment_later(new: Option<&Deployment>, old: Option<&Deployment>) -> bool {
    later(new.and_then(deployment_version), old.and_then(deployment_version))
}

/// Of two versions of one object, the later; `None` when it cannot be told (one side
/// found it, the other did not).
fn later_of<T>(a: Option<T>, b: Option<T>, version: fn(&T) -> Option<&str>) -> Option<Option<T>> {
    match (a, b) {
        (None, None) => Some(None),
        (Some(a), Some(b)) => Some(Some(if later(version(&b), version(&a)) { b } else { a })),
        _ => None,
    }
}

impl Objects {
    /// These objects (read and written by a reconcile) with what the watches brought
    /// meanwhile (`watched`), each the later version; `None` when that cannot be told.
    pub fn merged(self, watched: Objects) -> Option<Objects> {
        let (r, w) = (self, watched);
        Some(Objects {
            target: later_of(r.target, w.target, deployment_version)?,
            canary: later_of(r.canary, w.canary, deployment_version)?,
            route: later_of(r.route, w.route, version_of)?,
            destination_rule: later_of(r.destination_rule, w.destination_rule, version_of)?,
            services: r.services,
            auth: r.auth,
        })
    }
}

pub fn later(new: Option<&str>, old: Option<&str>) -> bool {
    match (new.map(str::parse::<u64>), old.map(str::parse::<u64>)) {
        (Some(Ok(n)), Some(Ok(o))) => n > o,
        _ => new != old,
    }
}

pub fn version_of(o: &Value) -> Option<&str> {
    o.pointer("/metadata/resourceVersion").and_then(Value::as_str)
}
