//! Rollouts read and written without the product crate's CRD type: the test kit stays
//! independent of the `weir` crate, and reads status with the core's own types.

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use weir_core::status::RolloutStatus;

use crate::Error;

pub fn resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("weir.dev", "v1alpha1", "Rollout"))
}

pub fn api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &resource())
}

/// The Rollout's status as the API server holds it (default when none is written yet).
pub async fn status(client: &Client, namespace: &str, name: &str) -> Result<RolloutStatus, Error> {
    let rollout = api(client, namespace).get(name).await?;
    Ok(match rollout.data.get("status") {
        Some(status) => serde_json::from_value(status.clone())?,
        None => RolloutStatus::default(),
    })
}
