//! Deleting an object as the API server does, and the garbage collection that follows it.
//!
//! A delete keeps an object with finalizers, or a pod its kubelet must stop first (graceful
//! deletion), with a `deletionTimestamp`; otherwise the object goes. Garbage collection by
//! `ownerReferences` follows as the GC controller does it, but synchronously inside the write that
//! triggers it: a dependent whose owners (by uid) are all gone is deleted (background); owners
//! still present keep it (dangling references are removed); an owner in foreground deletion waits
//! for its `blockOwnerDeletion` dependents, then loses its `foregroundDeletion` finalizer;
//! `Orphan` strips the owner's references from its dependents. Deletion and collection call each
//! other (a collected dependent is deleted, which collects its own dependents), so they live in
//! one module.

use crate::meta::{self, finalizers, is_deleting, meta_mut, meta_str, owner_refs};
use crate::resources::{Builtin, ResourceType, present};
use crate::store::{ObjKey, State};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

/// How dependents are treated when their owner is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Propagation {
    Background,
    Foreground,
    Orphan,
}

/// Deletes the object at `key` (which exists): finalizers and graceful pod deletion keep it with a
/// `deletionTimestamp`; otherwise it goes, and garbage collection follows.
pub(crate) fn delete_key(
    state: &mut State,
    ty: &ResourceType,
    key: &ObjKey,
    policy: Propagation,
    grace_period: Option<i64>,
) -> Value {
    let Some(old) = state.objects.get(key).cloned() else {
        return success(ty, &key.name, "");
    };
    let uid = meta_str(&old.obj, "uid").unwrap_or_default().to_owned();
    if policy == Propagation::Orphan {
        orphan_dependents(state, &uid);
    }
    let grace = match ty.builtin {
        Some(Builtin::Pod) => pod_grace(state, &old.obj, grace_period),
        _ => 0,
    };
    let mut finals = finalizers(&old.obj);
    if policy == Propagation::Foreground && !finals.iter().any(|f| f == "foregroundDeletion") {
        finals.push("foregroundDeletion".into());
    }
    let mut obj = old.obj.clone();
    if is_deleting(&old.obj) {
        let current = old
            .obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if grace < current {
            let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
            let m = meta_mut(&mut obj);
            m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            m.insert("deletionTimestamp".into(), json!(meta::timestamp(at)));
        }
        meta::set_finalizers(&mut obj, &finals);
        let grace_done = grace == 0 || current == 0;
        if finals.is_empty() && grace_done {
            if let Some(s) = state.objects.get_mut(key) {
                s.obj = obj;
            }
            let gone = state.remove(key).unwrap_or_default();
            after_removal(state, ty, &gone);
            return deleted_reply(ty, &gone);
        }
        if obj != old.obj {
            let stored = state.replace(key, obj, old.managed);
            if policy == Propagation::Foreground {
                foreground_started(state, &uid);
            }
            return present(ty, &stored);
        }
        return present(ty, &old.obj);
    }
    if finals.is_empty() && grace == 0 {
        let gone = state.remove(key).unwrap_or_default();
        after_removal(state, ty, &gone);
        return deleted_reply(ty, &gone);
    }
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(grace);
    {
        let m = meta_mut(&mut obj);
        m.insert("deletionTimestamp".into(), json!(meta::timestamp(at)));
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
        if let Some(g) = m.get("generation").and_then(Value::as_i64) {
            m.insert("generation".into(), json!(g + 1));
        }
    }
    meta::set_finalizers(&mut obj, &finals);
    let stored = state.replace(key, obj, old.managed);
    if policy == Propagation::Foreground {
        foreground_started(state, &uid);
    }
    present(ty, &stored)
}

pub(crate) fn after_removal(state: &mut State, ty: &ResourceType, gone: &Value) {
    match ty.builtin {
        Some(Builtin::Crd) => crd_removed(state, gone),
        Some(Builtin::Namespace) => {
            let ns = meta_str(gone, "name").unwrap_or_default().to_owned();
            let keys: Vec<ObjKey> = state
                .objects
                .keys()
                .filter(|k| k.namespace == ns)
                .cloned()
                .collect();
            for k in keys {
                if let Some(t) = state.type_for_storage(&k.resource) {
                    delete_key(state, &t, &k, Propagation::Background, None);
                }
            }
        }
        _ => {}
    }
    after_remove(state, gone);
}

/// Unregisters a deleted CRD's types and deletes its objects.
fn crd_removed(state: &mut State, obj: &Value) {
    let Ok(crd) = serde_json::from_value::<CustomResourceDefinition>(obj.clone()) else {
        return;
    };
    let resource = format!("{}/{}", crd.spec.group, crd.spec.names.plural);
    let keys: Vec<ObjKey> = state
        .range(&resource, None, None)
        .map(|(k, _)| k.clone())
        .collect();
    for k in keys {
        if let Some(gone) = state.remove(&k) {
            after_remove(state, &gone);
        }
    }
    let (group, plural) = (crd.spec.group, crd.spec.names.plural);
    state
        .types
        .retain(|(g, _, p), _| !(g == &group && p == &plural));
}

/// Pods and services answer a delete with the object; others with a `Success` status.
fn deleted_reply(ty: &ResourceType, gone: &Value) -> Value {
    match ty.builtin {
        Some(Builtin::Pod | Builtin::Service) => present(ty, gone),
        _ => success(
            ty,
            meta_str(gone, "name").unwrap_or_default(),
            meta_str(gone, "uid").unwrap_or_default(),
        ),
    }
}

fn success(ty: &ResourceType, name: &str, uid: &str) -> Value {
    let mut details = json!({"name": name, "kind": ty.plural, "uid": uid});
    if !ty.group.is_empty() {
        details["group"] = json!(ty.group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

/// How long a pod's deletion waits for its kubelet: only when a kubelet runs and the pod is
/// scheduled and not finished (as the pod strategy's `CheckGracefulDelete`).
fn pod_grace(state: &State, pod: &Value, requested: Option<i64>) -> i64 {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    let scheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if state.kubelets == 0 || !scheduled || matches!(phase, Some("Succeeded" | "Failed")) {
        return 0;
    }
    requested
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0)
}

const FOREGROUND: &str = "foregroundDeletion";

fn is_waiting(owner: &Value) -> bool {
    is_deleting(owner) && finalizers(owner).iter().any(|f| f == FOREGROUND)
}

/// After `gone` left the store: collect its dependents, and let owners waiting in foreground
/// deletion finish if it was their last blocking dependent.
pub(crate) fn after_remove(state: &mut State, gone: &Value) {
    if let Some(uid) = meta_str(gone, "uid") {
        let deps: Vec<ObjKey> = state
            .dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for key in deps {
            process_dependent(state, &key);
        }
    }
    for r in owner_refs(gone) {
        if let Some(owner) = state.uids.get(&r.uid).cloned() {
            maybe_finish_foreground(state, &owner);
        }
    }
}

/// After a write of the object at `key`: if an owner it names is gone or being deleted in the
/// foreground, act as the collector would.
pub(crate) fn check_owners(state: &mut State, key: &ObjKey) {
    let Some(stored) = state.objects.get(key) else {
        return;
    };
    let needs_work = owner_refs(&stored.obj)
        .iter()
        .any(|r| match state.uids.get(&r.uid) {
            None => true,
            Some(k) => state.objects.get(k).is_some_and(|o| is_waiting(&o.obj)),
        });
    if needs_work {
        process_dependent(state, key);
    }
}

/// An owner just entered foreground deletion: delete its dependents, finish if there are none.
pub(crate) fn foreground_started(state: &mut State, owner_uid: &str) {
    let deps: Vec<ObjKey> = state
        .dependents
        .get(owner_uid)
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    for key in deps {
        process_dependent(state, &key);
    }
    if let Some(owner) = state.uids.get(owner_uid).cloned() {
        maybe_finish_foreground(state, &owner);
    }
}

/// `propagationPolicy: Orphan`: dependents lose their reference to the owner and stay.
pub(crate) fn orphan_dependents(state: &mut State, owner_uid: &str) {
    let deps: Vec<ObjKey> = state
        .dependents
        .get(owner_uid)
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    for key in deps {
        remove_refs(state, &key, &[owner_uid.to_owned()]);
    }
}

fn remove_refs(state: &mut State, key: &ObjKey, uids: &[String]) {
    let Some(stored) = state.objects.get(key).cloned() else {
        return;
    };
    let mut obj = stored.obj.clone();
    let m = meta::meta_mut(&mut obj);
    if let Some(Value::Array(refs)) = m.get_mut("ownerReferences") {
        refs.retain(|r| {
            r.get("uid")
                .and_then(Value::as_str)
                .is_none_or(|u| !uids.iter().any(|x| x == u))
        });
        if refs.is_empty() {
            m.remove("ownerReferences");
        }
    }
    let mut managed = stored.managed.clone();
    if let Some(ty) = state.type_for_storage(&key.resource) {
        managed.retain_existing(&crate::fields::collect(&obj, &ty.fields_schema));
    }
    state.replace(key, obj, managed);
}

fn process_dependent(state: &mut State, key: &ObjKey) {
    let Some(stored) = state.objects.get(key) else {
        return;
    };
    let obj = stored.obj.clone();
    let refs = owner_refs(&obj);
    if refs.is_empty() {
        return;
    }
    let (mut solid, mut dangling, mut waiting) = (Vec::new(), Vec::new(), Vec::new());
    for r in &refs {
        match state.uids.get(&r.uid).and_then(|k| state.objects.get(k)) {
            None => dangling.push(r.uid.clone()),
            Some(owner) if is_waiting(&owner.obj) => waiting.push(r.uid.clone()),
            Some(_) => solid.push(r.uid.clone()),
        }
    }
    if !solid.is_empty() {
        if !(dangling.is_empty() && waiting.is_empty()) {
            let stale: Vec<String> = dangling.iter().chain(&waiting).cloned().collect();
            remove_refs(state, key, &stale);
            for uid in &waiting {
                if let Some(owner) = state.uids.get(uid).cloned() {
                    maybe_finish_foreground(state, &owner);
                }
            }
        }
        return;
    }
    if is_deleting(&obj) {
        return;
    }
    let Some(ty) = state.type_for_storage(&key.resource) else {
        return;
    };
    let uid = meta_str(&obj, "uid").unwrap_or_default().to_owned();
    let has_dependents = state.dependents.get(&uid).is_some_and(|d| !d.is_empty());
    let policy = if !waiting.is_empty() && has_dependents {
        Propagation::Foreground
    } else {
        Propagation::Background
    };
    delete_key(state, &ty, key, policy, None);
}

/// Removes `foregroundDeletion` from an owner once no dependent that blocks it remains.
fn maybe_finish_foreground(state: &mut State, owner_key: &ObjKey) {
    let Some(owner) = state.objects.get(owner_key) else {
        return;
    };
    if !is_waiting(&owner.obj) {
        return;
    }
    let uid = meta_str(&owner.obj, "uid").unwrap_or_default().to_owned();
    let blocked = state.dependents.get(&uid).is_some_and(|deps| {
        deps.iter().any(|k| {
            state.objects.get(k).is_some_and(|d| {
                d.obj
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| {
                        refs.iter().any(|r| {
                            r["uid"] == json!(uid) && r["blockOwnerDeletion"] == json!(true)
                        })
                    })
            })
        })
    });
    if blocked {
        return;
    }
    let mut obj = owner.obj.clone();
    let managed = owner.managed.clone();
    let rest: Vec<String> = finalizers(&obj)
        .into_iter()
        .filter(|f| f != FOREGROUND)
        .collect();
    meta::set_finalizers(&mut obj, &rest);
    if rest.is_empty() {
        if let Some(s) = state.objects.get_mut(owner_key) {
            s.obj = obj;
        }
        if let Some(gone) = state.remove(owner_key) {
            after_remove(state, &gone);
        }
    } else {
        state.replace(owner_key, obj, managed);
    }
}
