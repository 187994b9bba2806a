//! The `Rollout` custom resource (`weir.dev/v1alpha1`). The spec and status types are the
//! core's (`weir_core::spec`, `weir_core::status`): plain serde types with their schema,
//! CEL rules included. Here they become a Kubernetes resource.

use std::ops::{Deref, DerefMut};

use kube::CustomResource;
use serde::{Deserialize, Serialize};

pub use weir_core::spec::*;
pub use weir_core::status::*;

/// A canary release of one Deployment through an Istio VirtualService.
#[derive(CustomResource, schemars::JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "Rollout",
    namespaced,
    status = "RolloutStatus",
    shortname = "wro",
    cel,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".status.canaryWeight"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.stepDisplay"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.canaryRevision"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(transparent)]
#[schemars(transparent)]
pub struct RolloutSpec(pub weir_core::spec::RolloutSpec);

impl Deref for RolloutSpec {
    type Target = weir_core::spec::RolloutSpec;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for RolloutSpec {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
