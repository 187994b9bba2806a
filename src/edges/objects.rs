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

use super::kubernetes::{RouterApis, namespace, not_found};
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

/// One of the objects a Rollout depends on, by name.
#[derive(Clone, Copy, Debug)]
pub enum Object<'a> {
    Deployment(&'a str),
    VirtualService(&'a str),
    DestinationRule(&'a str),
    HttpRoute(&'a str),
    Service(&'a str),
}

/// Where `fetch` looks before it reads from the API server: the watches' copies
/// (`controller::copies`), which keep what a read finds.
pub trait Copies: Sync {
    /// The copy of `object` as JSON: `Some(None)` when it does not exist, `None` when the
    /// copies cannot tell.
    fn copy(&self, object: Object<'_>, namespace: &str) -> Option<Option<Vec<u8>>>;
    /// What a read found (stripped), to keep.
    fn read(&self, object: Object<'_>, namespace: &str, found: Option<&Value>);
}

/// Where `fetch` reads one Rollout's objects: the copies first, the API server for what
/// they cannot tell.
struct Reader<'a> {
    client: &'a Client,
    copies: &'a dyn Copies,
    namespace: String,
}

impl Reader<'_> {
    /// `object` from the copies, or else read (GET) and given to the copies.
    async fn get<T>(&self, object: Object<'_>, ar: &ApiResource, keep: fn(Value) -> Value) -> Result<Option<T>, Error>
    where
        T: serde::de::DeserializeOwned,
    {
        if let Some(copy) = self.copies.copy(object, &self.namespace) {
            return Ok(match copy {
                Some(json) => Some(serde_json::from_slice(&json)?),
                None => None,
            });
        }
        let name = object.name();
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &self.namespace, ar);
        let found = match api.get(name).await {
            Ok(obj) => Some(keep(serde_json::to_value(obj)?)),
            Err(e) if not_found(&e) => None,
            Err(e) => return Err(e.into()),
        };
        self.copies.read(object, &self.namespace, found.as_ref());
        Ok(found.map(serde_json::from_value).transpose()?)
    }
}

impl Object<'_> {
    fn name(&self) -> &str {
        match *self {
            Object::Deployment(n)
            | Object::VirtualService(n)
            | Object::DestinationRule(n)
            | Object::HttpRoute(n)
            | Object::Service(n) => n,
        }
    }
}

/// The API resources of Deployments and Services, for `Reader::get`.
fn core_resource<K: kube::Resource<DynamicType = ()>>() -> ApiResource {
    ApiResource::erase::<K>(&())
}

/// Everything one Rollout depends on: the Deployments, the routing objects its spec
/// names (from `copies`, or read where they cannot tell) and its provider's
/// credentials (`auth`). API failures are errors (retried by the controller); a
/// missing object is `None`.
pub async fn fetch(
    client: &Client,
    copies: &dyn Copies,
    apis: &RouterApis,
    rollout: &Rollout,
    names: &Names,
    auth: Result<Auth, String>,
) -> Result<Objects, Error> {
    let reader = Reader {
        client,
        copies,
        namespace: namespace(rollout),
    };
    let router = (rollout.spec.traffic_routing.router())
        .ok_or_else(|| Error::Invariant("a Rollout without a router was not planned".into()))?;
    let deployments = core_resource::<Deployment>();
    let target = reader
        .get(Object::Deployment(&names.target), &deployments, stripped_value)
        .await?;
    let canary: Option<Deployment> =
        (reader.get(Object::Deployment(&names.canary), &deployments, canary_value)).await?;
    let destination_rule = match router {
        Router::Istio(IstioRouting {
            destination_rule: Some(dr),
            ..
        }) => {
            (reader.get(
                Object::DestinationRule(&dr.name),
                &apis.destination_rule,
                stripped_value,
            ))
            .await?
        }
        _ => None,
    };
    let mut services = Vec::new();
    if let Some((stable, canary)) = router.services() {
        let api = core_resource::<Service>();
        for name in [stable, canary] {
            services.push((
                name.to_string(),
                reader.get(Object::Service(name), &api, stripped_value).await?,
            ));
        }
    }
    let route = reader
        .get(route_object(router), apis.route(router), stripped_value)
        .await?;
    Ok(Objects {
        target,
        canary,
        route,
        destination_rule,
        services,
        auth,
    })
}

/// An object as the copies keep it, as JSON: without what no decision reads (managed
/// fields, kubectl's copy of the spec). Serialized from the object itself, not through a
/// `Value`: the watches bring every change of every object a Rollout names.
pub fn stripped_json<K: kube::Resource + serde::Serialize + Clone>(o: &K) -> Option<Vec<u8>> {
    let mut o = o.clone();
    let meta = o.meta_mut();
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED_ANNOTATION);
    }
    serde_json::to_vec(&o).ok()
}

/// A canary Deployment as the copies keep it (`canary_value`), as JSON.
pub fn canary_json(d: &Deployment) -> Option<Vec<u8>> {
    let mut d = d.clone();
    d.spec.template = Default::default();
    stripped_json(&d)
}

/// The object that carries a router's weights.
pub fn route_object(router: Router<'_>) -> Object<'_> {
    match router {
        Router::Istio(_) => Object::VirtualService(router.route_name()),
        Router::GatewayApi(_) => Object::HttpRoute(router.route_name()),
    }
}

/// What weir keeps of a canary Deployment: its metadata, replicas and status. Its pod
/// template is made from the target's at each write and never read back.
pub fn canary_value(mut o: Value) -> Value {
    if let Some(spec) = o.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("template".into(), serde_json::json!({}));
    }
    stripped_value(o)
}

/// Without what no decision reads (managed fields, kubectl's copy of the spec), for the
/// copies weir keeps of the objects Rollouts name.
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

/// Reads a provider's credentials from its Secret, in weir's own namespace only (the
/// admin's, where Rollout authors have no say).
pub async fn provider_auth(
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

pub fn version_of(o: &Value) -> Option<&str> {
    o.pointer("/metadata/resourceVersion").and_then(Value::as_str)
}
