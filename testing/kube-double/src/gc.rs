//! Garbage collection by `ownerReferences`, as the GC controller does it, but synchronously inside
//! the write that triggers it: a dependent whose owners (by uid) are all gone is deleted
//! (background); owners still present keep it (dangling references are removed); an owner in
//! foreground deletion waits for its `blockOwnerDeletion` dependents, then loses its
//! `foregroundDeletion` finalizer; `Orphan` strips the owner's references from its dependents.

use crate::meta::{self, finalizers, is_deleting, meta_str, owner_refs};
use crate::ops::{self, Propagation};
use crate::store::{ObjKey, State};
use serde_json::{Value, json};

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
    ops::delete_key(state, &ty, key, policy, None);
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
