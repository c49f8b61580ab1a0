//! Server-side apply with the operator's one field manager (status: `controller::write_status`).

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::names::FIELD_MANAGER;

fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Creates or updates `obj` to the desired state (fields the operator stops setting are removed).
pub async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K, kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    api.patch(&obj.name_any(), &params(), &Patch::Apply(obj))
        .await
}
