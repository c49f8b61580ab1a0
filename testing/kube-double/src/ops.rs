//! The verbs: get, list, create, update, patch (merge / JSON / strategic / server-side apply),
//! delete, deletecollection, plus the `status`, `scale` and pod `binding` subresources. Each runs
//! under the store lock and leaves the store consistent (garbage collection included).

use crate::apply::{self, Applier};
use crate::builtin;
use crate::delete::{self, Propagation};
use crate::error::{ApiError, FieldError};
use crate::fields::{self, Managed};
use crate::meta::{self, finalizers, is_deleting, meta_mut, meta_str};
use crate::patch::{self, PatchType};
use crate::resources::{self, Builtin, ResourceType, present, roundtrip_meta};
use crate::schema;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{ObjKey, State, Stored};
use base64::Engine;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sub {
    Main,
    Status,
}

impl Sub {
    fn name(self) -> &'static str {
        match self {
            Sub::Main => "",
            Sub::Status => "status",
        }
    }
}

/// A successful answer: HTTP code and body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub code: u16,
    pub body: Value,
}

/// The request-level context of a write.
pub(crate) struct Ctx<'a> {
    pub ty: &'a Arc<ResourceType>,
    /// Namespace from the path (`None` for cluster-scoped resources).
    pub namespace: Option<&'a str>,
    pub manager: &'a str,
    pub dry_run: bool,
    /// `fieldValidation=Strict`: a custom resource with fields its schema does not know is
    /// refused instead of pruned.
    pub strict: bool,
}

impl Ctx<'_> {
    fn key(&self, name: &str) -> ObjKey {
        ObjKey {
            resource: self.ty.storage_key(),
            namespace: self.namespace.unwrap_or_default().to_owned(),
            name: name.to_owned(),
        }
    }
}

/// `DeleteOptions`, from the query and the request body.
#[derive(Clone, Debug, Default)]
pub(crate) struct DeleteOpts {
    pub grace_period: Option<i64>,
    pub propagation: Option<String>,
    pub orphan_dependents: Option<bool>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

pub(crate) fn get(
    state: &State,
    ty: &ResourceType,
    namespace: Option<&str>,
    name: &str,
) -> Result<Value, ApiError> {
    let key = ObjKey {
        resource: ty.storage_key(),
        namespace: namespace.unwrap_or_default().to_owned(),
        name: name.to_owned(),
    };
    state
        .objects
        .get(&key)
        .map(|s| present(ty, &s.obj))
        .ok_or_else(|| ApiError::not_found(&ty.group, &ty.plural, name))
}

/// A list request's selectors and paging.
pub(crate) struct ListQuery {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

pub(crate) fn list(
    state: &State,
    ty: &ResourceType,
    namespace: Option<&str>,
    q: &ListQuery,
) -> Result<Value, ApiError> {
    let (list_rv, after) = match &q.continue_token {
        Some(token) => {
            let (rv, key) = decode_continue(token, &ty.storage_key())?;
            if rv < state.compacted {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            (rv, Some(key))
        }
        None => (state.rv, None),
    };
    let resource = ty.storage_key();
    let mut items = Vec::new();
    let mut last_served: Option<&ObjKey> = None;
    let mut next = None;
    for (key, stored) in state.range(&resource, namespace, after.as_ref()) {
        if !(q.labels.matches(&stored.obj) && q.fields.matches(&stored.obj)) {
            continue;
        }
        if q.limit.is_some_and(|l| l > 0 && items.len() == l)
            && let Some(last) = last_served
        {
            next = Some(encode_continue(list_rv, last));
            break;
        }
        items.push(present(ty, &stored.obj));
        last_served = Some(key);
    }
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if let Some(c) = next {
        metadata["continue"] = json!(c);
    }
    Ok(json!({
        "apiVersion": ty.api_version(),
        "kind": format!("{}List", ty.kind),
        "metadata": metadata,
        "items": items,
    }))
}

/// A continue token: the list's resourceVersion and the last key served (the next page starts
/// after it).
fn encode_continue(rv: u64, last: &ObjKey) -> String {
    let raw = format!("{rv}|{}|{}", last.namespace, last.name);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str, resource: &str) -> Result<(u64, ObjKey), ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let raw = String::from_utf8(raw).map_err(|_| bad())?;
    let mut parts = raw.splitn(3, '|');
    let rv = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let namespace = parts.next().ok_or_else(bad)?.to_owned();
    let name = parts.next().ok_or_else(bad)?.to_owned();
    Ok((
        rv,
        ObjKey {
            resource: resource.to_owned(),
            namespace,
            name,
        },
    ))
}

fn check_type_meta(ty: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request is not a JSON object",
        ));
    }
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
        && av != ty.api_version()
        && !(ty.is_custom() && av.split('/').next() == Some(&ty.group))
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            ty.api_version()
        )));
    }
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && !kind.is_empty()
        && kind != ty.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            ty.kind
        )));
    }
    obj["apiVersion"] = json!(ty.api_version());
    obj["kind"] = json!(ty.kind);
    Ok(())
}

fn check_namespace(ctx: &Ctx<'_>, obj: &mut Value) -> Result<(), ApiError> {
    let m = meta_mut(obj);
    match (ctx.ty.namespaced, ctx.namespace) {
        (true, Some(ns)) => {
            if let Some(given) = m.get("namespace").and_then(Value::as_str)
                && !given.is_empty()
                && given != ns
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            m.insert("namespace".into(), json!(ns));
        }
        (true, None) => {
            return Err(ApiError::method_not_allowed(
                "a namespaced resource needs a namespace in the path",
            ));
        }
        (false, _) => {
            m.remove("namespace");
        }
    }
    Ok(())
}

/// Defaulting, pruning and validation for a write of `new` (`old` for updates).
fn admit(
    state: &mut State,
    ctx: &Ctx<'_>,
    old: Option<&Value>,
    new: &mut Value,
    sub: Sub,
) -> Result<(), ApiError> {
    let ty: &ResourceType = ctx.ty;
    let name = meta_str(new, "name").unwrap_or_default().to_owned();
    let mut errs: Vec<FieldError> = Vec::new();
    if let Some(m) = new.get_mut("metadata") {
        let pruned = roundtrip_meta(m.take())
            .map_err(|e| ApiError::bad_request(format!("invalid metadata: {e}")))?;
        *m = pruned;
    }
    match ty.builtin {
        Some(kind) => {
            if let Some(old) = old {
                builtin::carry_over(kind, old, new);
            }
            builtin::apply_defaults(kind, new, &mut || state.next_service_ip());
            if let Some(old) = old
                && sub == Sub::Main
            {
                builtin::validate_update(kind, old, new, &mut errs);
            }
            let typed = kind.roundtrip(new.take()).map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version {:?} cannot be handled as a {}: {e}",
                    ty.kind, ty.version, ty.kind
                ))
            })?;
            *new = typed;
            if kind == Builtin::Crd {
                admit_crd(new, &mut errs);
            }
        }
        None => {
            schema::drop_nulls(new, &ty.schema);
            if ctx.strict {
                let mut unknown = Vec::new();
                schema::unknown_fields(new, &ty.schema, true, "", &mut unknown);
                if !unknown.is_empty() {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|f| format!("unknown field \"{f}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                        ty.kind,
                        ty.version,
                        ty.kind,
                        list.join(", ")
                    )));
                }
            }
            schema::prune(new, &ty.schema, true);
            schema::apply_defaults(new, &ty.schema);
            schema::validate(new, &ty.schema, "", &mut errs);
            if let Some(name_schema) = ty
                .schema
                .properties
                .get("metadata")
                .and_then(|m| m.properties.get("name"))
            {
                schema::validate(&json!(name), name_schema, "metadata.name", &mut errs);
            }
        }
    }
    meta::validate_labels_and_annotations(new, &mut errs);
    if let Some(old) = old
        && is_deleting(old)
    {
        let before = finalizers(old);
        let added: Vec<String> = finalizers(new)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        if !added.is_empty() {
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                format!("no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"),
            ));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&ty.group, &ty.kind, &name, &errs))
    }
}

/// A CRD written through the API: checked like `install_crd`, and given the status the
/// apiextensions server reports once it serves the resource.
fn admit_crd(obj: &mut Value, errs: &mut Vec<FieldError>) {
    let crd: CustomResourceDefinition = match serde_json::from_value(obj.clone()) {
        Ok(c) => c,
        Err(e) => {
            errs.push(FieldError::invalid("spec", &Value::Null, e.to_string()));
            return;
        }
    };
    if let Err(e) = resources::crd_types(&crd) {
        errs.push(FieldError::invalid("spec", &Value::Null, e.to_string()));
        return;
    }
    let now = meta::now();
    let cond = |t: &str, reason: &str, msg: &str| json!({"type": t, "status": "True", "reason": reason, "message": msg, "lastTransitionTime": now});
    obj["status"] = json!({
        "acceptedNames": obj["spec"]["names"].clone(),
        "storedVersions": crd.spec.versions.iter().filter(|v| v.storage).map(|v| v.name.clone()).collect::<Vec<_>>(),
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
    });
}

/// Registers the types of a CRD object that was just stored.
fn crd_stored(state: &mut State, obj: &Value) {
    if let Ok(crd) = serde_json::from_value::<CustomResourceDefinition>(obj.clone())
        && let Ok(types) = resources::crd_types(&crd)
    {
        let (group, plural) = (crd.spec.group.clone(), crd.spec.names.plural.clone());
        state
            .types
            .retain(|(g, _, p), _| !(g == &group && p == &plural));
        for t in types {
            state.register(Arc::new(t));
        }
    }
}

/// Body minus what clients may not set: managed fields are the server's.
fn strip_client_meta(obj: &mut Value) {
    if let Some(Value::Object(m)) = obj.get_mut("metadata") {
        m.remove("managedFields");
        m.remove("selfLink");
    }
}

pub(crate) fn create(state: &mut State, ctx: &Ctx<'_>, body: Value) -> Result<Reply, ApiError> {
    create_with(state, ctx, body, None)
}

fn create_with(
    state: &mut State,
    ctx: &Ctx<'_>,
    mut new: Value,
    applied: Option<Managed>,
) -> Result<Reply, ApiError> {
    let ty = ctx.ty;
    check_type_meta(ty, &mut new)?;
    check_namespace(ctx, &mut new)?;
    strip_client_meta(&mut new);
    if meta_str(&new, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
        return Err(ApiError::new(
            500,
            "InternalError",
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let generate = meta_str(&new, "generateName").map(str::to_owned);
    let mut name = meta_str(&new, "name").unwrap_or_default().to_owned();
    if name.is_empty() {
        match &generate {
            Some(prefix) if !prefix.is_empty() => {
                let mut errs = Vec::new();
                meta::validate_name(&format!("{prefix}a"), ty.name_rule, &mut errs);
                if !errs.is_empty() {
                    for e in &mut errs {
                        e.field = "metadata.generateName".into();
                    }
                    return Err(ApiError::invalid(&ty.group, &ty.kind, "", &errs));
                }
                loop {
                    name = format!("{prefix}{}", state.next_suffix());
                    if !state.objects.contains_key(&ctx.key(&name)) {
                        break;
                    }
                }
            }
            _ => {
                return Err(ApiError::invalid(
                    &ty.group,
                    &ty.kind,
                    "",
                    &[FieldError::required(
                        "metadata.name",
                        "name or generateName is required",
                    )],
                ));
            }
        }
    }
    let mut errs = Vec::new();
    meta::validate_name(&name, ty.name_rule, &mut errs);
    if !errs.is_empty() {
        return Err(ApiError::invalid(&ty.group, &ty.kind, &name, &errs));
    }
    let key = ctx.key(&name);
    {
        let m = meta_mut(&mut new);
        m.insert("name".into(), json!(name));
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            m.remove(f);
        }
    }
    if ty.status_subresource
        && let Some(o) = new.as_object_mut()
    {
        o.remove("status");
    }
    if let Some(status) = builtin::initial_status(ty.builtin, &mut new) {
        new["status"] = status;
    }
    admit(state, ctx, None, &mut new, Sub::Main)?;
    if state.objects.contains_key(&key) {
        return Err(ApiError::already_exists(&ty.group, &ty.plural, &name));
    }
    let uid = state.next_uid();
    {
        let m = meta_mut(&mut new);
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(meta::now()));
        if ty.tracks_generation {
            m.insert("generation".into(), json!(1));
        }
    }
    let mut managed = applied.unwrap_or_else(|| {
        let mut m = Managed::default();
        m.record_update(
            ctx.manager,
            "",
            &ty.api_version(),
            None,
            &new,
            &ty.fields_schema,
        );
        m
    });
    managed.retain_existing(&fields::collect(&new, &ty.fields_schema));
    managed.touch(&Managed::default(), &meta::now());
    if ctx.dry_run {
        return Ok(Reply {
            code: 201,
            body: new,
        });
    }
    let stored = state.insert(key.clone(), new, managed);
    if ty.builtin == Some(Builtin::Crd) {
        crd_stored(state, &stored);
    }
    delete::check_owners(state, &key);
    Ok(Reply {
        code: 201,
        body: present(ty, &stored),
    })
}

fn existing(state: &State, ctx: &Ctx<'_>, name: &str) -> Result<Stored, ApiError> {
    state
        .objects
        .get(&ctx.key(name))
        .cloned()
        .ok_or_else(|| ApiError::not_found(&ctx.ty.group, &ctx.ty.plural, name))
}

pub(crate) fn update(
    state: &mut State,
    ctx: &Ctx<'_>,
    name: &str,
    sub: Sub,
    body: Value,
) -> Result<Reply, ApiError> {
    let old = existing(state, ctx, name)?;
    finish_update(state, ctx, name, sub, old, body, None)
}

/// Everything but metadata (and status, when it is a subresource): what `generation` tracks.
fn spec_part(ty: &ResourceType, obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if ty.status_subresource || ty.builtin.is_some() {
            m.remove("status");
        }
    }
    o
}

fn without_volatile(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(Value::Object(m)) = o.get_mut("metadata") {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    o
}

fn finish_update(
    state: &mut State,
    ctx: &Ctx<'_>,
    name: &str,
    sub: Sub,
    old: Stored,
    mut new: Value,
    applied: Option<Managed>,
) -> Result<Reply, ApiError> {
    let ty = ctx.ty;
    check_type_meta(ty, &mut new)?;
    if let Some(given) = meta_str(&new, "name")
        && !given.is_empty()
        && given != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    check_resource_version(ty, name, &old.obj, &new)?;
    strip_client_meta(&mut new);
    match sub {
        Sub::Status => {
            let status = new.get("status").cloned();
            new = old.obj.clone();
            strip_client_meta(&mut new);
            match status {
                Some(s) => new["status"] = s,
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        Sub::Main if ty.status_subresource => match old.obj.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        },
        Sub::Main => {}
    }
    {
        let old_meta = old
            .obj
            .get("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let m = meta_mut(&mut new);
        for f in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ] {
            match old_meta.get(f) {
                Some(v) => m.insert(f.into(), v.clone()),
                None => m.remove(f),
            };
        }
    }
    admit(state, ctx, Some(&old.obj), &mut new, sub)?;
    if ty.tracks_generation && spec_part(ty, &old.obj) != spec_part(ty, &new) {
        let g = old
            .obj
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(&mut new).insert("generation".into(), json!(g + 1));
    }
    let mut managed = applied.unwrap_or_else(|| {
        let mut m = old.managed.clone();
        m.record_update(
            ctx.manager,
            sub.name(),
            &ty.api_version(),
            Some(&old.obj),
            &new,
            &ty.fields_schema,
        );
        m
    });
    managed.retain_existing(&fields::collect(&new, &ty.fields_schema));
    managed.touch(&old.managed, &meta::now());
    if without_volatile(&old.obj) == without_volatile(&new) && managed.same_fields(&old.managed) {
        return Ok(Reply {
            code: 200,
            body: present(ty, &old.obj),
        });
    }
    if ctx.dry_run {
        return Ok(Reply {
            code: 200,
            body: present(ty, &new),
        });
    }
    let key = ctx.key(name);
    let grace_done = new
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .is_none_or(|g| g == 0);
    if is_deleting(&new) && finalizers(&new).is_empty() && grace_done {
        // The last finalizer is gone: the update completes the deletion.
        if let Some(s) = state.objects.get_mut(&key) {
            s.obj = new;
            s.managed = managed;
        }
        let gone = state.remove(&key).unwrap_or_default();
        delete::after_removal(state, ty, &gone);
        return Ok(Reply {
            code: 200,
            body: present(ty, &gone),
        });
    }
    let stored = state.replace(&key, new, managed);
    if ty.builtin == Some(Builtin::Crd) {
        crd_stored(state, &stored);
    }
    delete::check_owners(state, &key);
    Ok(Reply {
        code: 200,
        body: present(ty, &stored),
    })
}

/// A `PATCH` request's body and options.
pub(crate) struct PatchRequest<'a> {
    pub patch_type: PatchType,
    pub body: &'a [u8],
    /// `force=true` (server-side apply only).
    pub force: bool,
    /// Whether the request named a `fieldManager` (server-side apply requires one).
    pub manager_given: bool,
}

/// `PATCH`: merge, JSON and strategic patches of existing objects, and server-side apply.
pub(crate) fn patch(
    state: &mut State,
    ctx: &Ctx<'_>,
    name: &str,
    sub: Sub,
    req: &PatchRequest<'_>,
) -> Result<Reply, ApiError> {
    let ty = ctx.ty;
    let (ty_patch, body) = (req.patch_type, req.body);
    if ty_patch == PatchType::Apply {
        return server_side_apply(state, ctx, name, sub, req);
    }
    if ty_patch == PatchType::Strategic && ty.is_custom() {
        return Err(ApiError::unsupported_media_type(
            "application/strategic-merge-patch+json",
        ));
    }
    let old = existing(state, ctx, name)?;
    let mut target = present(ty, &old.obj);
    strip_client_meta(&mut target);
    patch::apply_patch(&mut target, ty_patch, body, &ty.fields_schema)?;
    finish_update(state, ctx, name, sub, old, target, None)
}

fn server_side_apply(
    state: &mut State,
    ctx: &Ctx<'_>,
    name: &str,
    sub: Sub,
    req: &PatchRequest<'_>,
) -> Result<Reply, ApiError> {
    let ty = ctx.ty;
    let (body, force) = (req.body, req.force);
    if !req.manager_given {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions",
            "",
            &[FieldError::required(
                "fieldManager",
                "is required for apply patch",
            )],
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("apply patch is not UTF-8: {e}")))?;
    let mut cfg: Value = serde_json::from_str(text)
        .or_else(|_| serde_saphyr::from_str(text))
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if cfg
        .get("apiVersion")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        || cfg
            .get("kind")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        return Err(ApiError::bad_request(
            "invalid object type: apiVersion and kind must be set in an apply patch",
        ));
    }
    check_type_meta(ty, &mut cfg)?;
    if let Some(given) = meta_str(&cfg, "name")
        && given != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    strip_client_meta(&mut cfg);
    let who = Applier {
        manager: ctx.manager,
        subresource: sub.name(),
        api_version: &ty.api_version(),
        force,
    };
    let old = state.objects.get(&ctx.key(name)).cloned();
    let Some(old) = old else {
        if sub == Sub::Status {
            return Err(ApiError::not_found(&ty.group, &ty.plural, name));
        }
        meta_mut(&mut cfg).insert("name".into(), json!(name));
        let mut tracked = cfg.clone();
        untracked_meta(&mut tracked);
        if ty.status_subresource
            && let Some(o) = tracked.as_object_mut()
        {
            o.remove("status");
        }
        let (_, managed) =
            apply::apply(None, &Managed::default(), &tracked, &ty.fields_schema, &who).map_err(
                |c| ApiError::apply_conflicts(&ty.group, &ty.plural, name, &ty.api_version(), &c),
            )?;
        return create_with(state, ctx, cfg, Some(managed));
    };
    check_resource_version(ty, name, &old.obj, &cfg)?;
    let mut effective = match sub {
        Sub::Status => json!({
            "apiVersion": ty.api_version(),
            "kind": ty.kind,
            "metadata": {},
            "status": cfg.get("status").cloned().unwrap_or(json!({})),
        }),
        Sub::Main => {
            let mut c = cfg.clone();
            if ty.status_subresource
                && let Some(o) = c.as_object_mut()
            {
                o.remove("status");
            }
            c
        }
    };
    untracked_meta(&mut effective);
    let mut live = old.obj.clone();
    strip_client_meta(&mut live);
    let (merged, managed) = apply::apply(
        Some(&live),
        &old.managed,
        &effective,
        &ty.fields_schema,
        &who,
    )
    .map_err(|c| ApiError::apply_conflicts(&ty.group, &ty.plural, name, &ty.api_version(), &c))?;
    finish_update(state, ctx, name, sub, old, merged, Some(managed))
}

/// Removes identity and server-maintained metadata from an apply configuration.
fn untracked_meta(cfg: &mut Value) {
    if let Some(Value::Object(m)) = cfg.get_mut("metadata") {
        for f in [
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generateName",
        ] {
            m.remove(f);
        }
    }
}

fn propagation(opts: &DeleteOpts) -> Result<Propagation, ApiError> {
    match (opts.propagation.as_deref(), opts.orphan_dependents) {
        (Some("Foreground"), _) => Ok(Propagation::Foreground),
        (Some("Orphan"), _) => Ok(Propagation::Orphan),
        (Some("Background"), _) | (None, Some(false)) | (None, None) => Ok(Propagation::Background),
        (None, Some(true)) => Ok(Propagation::Orphan),
        (Some(other), _) => Err(ApiError::invalid(
            "meta.k8s.io",
            "DeleteOptions",
            "",
            &[FieldError {
                field: "propagationPolicy".into(),
                kind: crate::error::FieldErrorKind::NotSupported {
                    value: format!("{other:?}"),
                    supported: vec![
                        "\"Foreground\"".into(),
                        "\"Background\"".into(),
                        "\"Orphan\"".into(),
                    ],
                },
            }],
        )),
    }
}

pub(crate) fn delete(
    state: &mut State,
    ctx: &Ctx<'_>,
    name: &str,
    opts: &DeleteOpts,
) -> Result<Reply, ApiError> {
    let ty = ctx.ty;
    let old = existing(state, ctx, name)?;
    let uid = meta_str(&old.obj, "uid").unwrap_or_default().to_owned();
    if let Some(want) = &opts.precondition_uid
        && *want != uid
    {
        return Err(ApiError::conflict(
            &ty.group,
            &ty.plural,
            name,
            &format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"),
        ));
    }
    let rv = meta_str(&old.obj, "resourceVersion")
        .unwrap_or_default()
        .to_owned();
    if let Some(want) = &opts.precondition_rv
        && *want != rv
    {
        return Err(ApiError::conflict(
            &ty.group,
            &ty.plural,
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rv}"
            ),
        ));
    }
    let policy = propagation(opts)?;
    if ctx.dry_run || opts.dry_run {
        return Ok(Reply {
            code: 200,
            body: present(ty, &old.obj),
        });
    }
    let key = ctx.key(name);
    Ok(Reply {
        code: 200,
        body: delete::delete_key(state, ty, &key, policy, opts.grace_period),
    })
}

pub(crate) fn delete_collection(
    state: &mut State,
    ctx: &Ctx<'_>,
    q: &ListQuery,
    opts: &DeleteOpts,
) -> Result<Reply, ApiError> {
    let ty = ctx.ty;
    let policy = propagation(opts)?;
    let keys: Vec<ObjKey> = state
        .range(&ty.storage_key(), ctx.namespace, None)
        .filter(|(_, s)| q.labels.matches(&s.obj) && q.fields.matches(&s.obj))
        .map(|(k, _)| k.clone())
        .collect();
    let mut items = Vec::new();
    for k in keys {
        if let Some(s) = state.objects.get(&k) {
            items.push(present(ty, &s.obj));
        }
        if !(ctx.dry_run || opts.dry_run) {
            delete::delete_key(state, ty, &k, policy, opts.grace_period);
        }
    }
    Ok(Reply {
        code: 200,
        body: json!({"apiVersion": ty.api_version(), "kind": format!("{}List", ty.kind),
                     "metadata": {"resourceVersion": state.rv.to_string()}, "items": items}),
    })
}

/// `POST pods/<name>/binding`: assigns the pod to a node, as the scheduler does.
pub(crate) fn bind(
    state: &mut State,
    ctx: &Ctx<'_>,
    name: &str,
    body: &Value,
) -> Result<Reply, ApiError> {
    let ty = ctx.ty;
    let node = body
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("binding target.name is required"))?
        .to_owned();
    let old = existing(state, ctx, name)?;
    if let Some(current) = old
        .obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Err(ApiError::conflict(
            &ty.group,
            &ty.plural,
            name,
            &format!("pod {name} is already assigned to node {current:?}"),
        ));
    }
    if is_deleting(&old.obj) {
        return Err(ApiError::conflict(
            &ty.group,
            &ty.plural,
            name,
            "pod is being deleted",
        ));
    }
    let mut obj = old.obj.clone();
    obj["spec"]["nodeName"] = json!(node);
    let conditions = obj["status"]
        .as_object_mut()
        .map(|s| s.entry("conditions").or_insert(json!([])));
    if let Some(Value::Array(cs)) = conditions {
        cs.retain(|c| c["type"] != "PodScheduled");
        cs.push(
            json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": meta::now()}),
        );
    }
    let key = ctx.key(name);
    state.replace(&key, obj, old.managed);
    Ok(Reply {
        code: 201,
        body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    })
}

fn dotted<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(obj, |v, seg| v.get(seg))
}

fn set_dotted(obj: &mut Value, path: &str, value: Value) {
    let mut v = obj;
    let segs: Vec<&str> = path.split('.').collect();
    for (i, seg) in segs.iter().enumerate() {
        if !v.is_object() {
            *v = Value::Object(Map::new());
        }
        if i == segs.len() - 1 {
            v[*seg] = value;
            return;
        }
        v = v
            .as_object_mut()
            .map(|m| m.entry(*seg).or_insert(json!({})))
            .expect("just made an object");
    }
}

/// The `autoscaling/v1` `Scale` view of a custom resource with a scale subresource.
pub(crate) fn get_scale(state: &State, ctx: &Ctx<'_>, name: &str) -> Result<Value, ApiError> {
    let ty = ctx.ty;
    let paths = ty.scale.as_ref().ok_or_else(ApiError::no_route)?;
    let obj = existing(state, ctx, name)?.obj;
    let mut status =
        json!({"replicas": dotted(&obj, &paths.status_replicas).cloned().unwrap_or(json!(0))});
    if let Some(sel) = paths.label_selector.as_ref().and_then(|p| dotted(&obj, p)) {
        status["selector"] = sel.clone();
    }
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": name, "namespace": ctx.namespace, "uid": obj["metadata"]["uid"],
                     "resourceVersion": obj["metadata"]["resourceVersion"], "creationTimestamp": obj["metadata"]["creationTimestamp"]},
        "spec": {"replicas": dotted(&obj, &paths.spec_replicas).cloned().unwrap_or(json!(0))},
        "status": status,
    }))
}

/// Writes a `Scale` (from a PUT, or a merge/JSON patch of the current one) back to the object.
pub(crate) fn write_scale(
    state: &mut State,
    ctx: &Ctx<'_>,
    name: &str,
    patch_type: Option<PatchType>,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let ty = ctx.ty;
    let paths = ty.scale.clone().ok_or_else(ApiError::no_route)?;
    let mut scale = get_scale(state, ctx, name)?;
    match patch_type {
        None => scale = patch::parse_json(body)?,
        Some(PatchType::Apply | PatchType::Strategic) => {
            return Err(ApiError::unsupported_media_type(
                "scale subresource accepts merge and JSON patches",
            ));
        }
        Some(pt) => patch::apply_patch(&mut scale, pt, body, &schema::ANY)?,
    }
    let replicas = scale
        .pointer("/spec/replicas")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("scale spec.replicas is required"))?;
    let old = existing(state, ctx, name)?;
    let mut obj = old.obj.clone();
    set_dotted(&mut obj, &paths.spec_replicas, replicas);
    if let Some(rv) = scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv));
    }
    let ctx_scale = Ctx {
        manager: ctx.manager,
        ..*ctx
    };
    finish_update(state, &ctx_scale, name, Sub::Main, old, obj, None)?;
    Ok(Reply {
        code: 200,
        body: get_scale(state, ctx, name)?,
    })
}

/// Creates the namespaces a fresh cluster has.
pub(crate) fn seed_namespaces(state: &mut State) {
    let Some(ty) = state.find_type("", "v1", "namespaces") else {
        return;
    };
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let ctx = Ctx {
            ty: &ty,
            namespace: None,
            manager: "kube-apiserver",
            dry_run: false,
            strict: false,
        };
        let _ = create(state, &ctx, json!({"metadata": {"name": ns}}));
    }
}

/// A write naming a `resourceVersion` other than the stored one is a 409 Conflict (optimistic
/// concurrency); a write naming none is unconditional.
fn check_resource_version(
    ty: &ResourceType,
    name: &str,
    stored: &Value,
    written: &Value,
) -> Result<(), ApiError> {
    let current = meta_str(stored, "resourceVersion").unwrap_or_default();
    match meta_str(written, "resourceVersion") {
        Some(rv) if !rv.is_empty() && rv != current => Err(ApiError::conflict(
            &ty.group,
            &ty.plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )),
        _ => Ok(()),
    }
}
