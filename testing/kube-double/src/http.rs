//! HTTP: routes Kubernetes REST paths (`/api/v1/...`, `/apis/<group>/<version>/...`, namespaced,
//! cluster-scoped and all-namespaces, subresources) to the verbs, parses query parameters and
//! bodies, applies injected faults, logs requests, and serves discovery and `/version`.

use crate::auth::{self, Identity, Verb};
use crate::error::ApiError;
use crate::ops::{self, Ctx, DeleteOpts, ListQuery, Sub};
use crate::patch::PatchType;
use crate::resources::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::shared::{Caller, RequestRecord, Shared};
use crate::watch::{self, Start, WatchSpec};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// The response body type of the in-process service.
pub(crate) type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

fn json_response(code: u16, body: &Value) -> ::http::Response<ResponseBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    ::http::Response::builder()
        .status(code)
        .header(::http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed_unsync())
        .unwrap_or_else(|_| ::http::Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

fn error_response(e: &ApiError) -> ::http::Response<ResponseBody> {
    json_response(e.code, &e.to_status())
}

/// Query parameters, decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Query {
        Query(
            form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        self.get(key) == Some("true")
    }

    fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid {key}: {v:?}")))
            })
            .transpose()
    }
}

/// What a path names.
enum Route {
    Version,
    Discovery(Value),
    OpenApi(Value),
    Resource {
        ty: Arc<ResourceType>,
        namespace: Option<String>,
        name: Option<String>,
        sub: Option<String>,
        /// The path after the subresource (a proxy's target path).
        rest: String,
    },
}

fn route(shared: &Shared, path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let state = shared.lock();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["api"] => {
            return Ok(Route::Discovery(
                json!({"kind": "APIVersions", "versions": ["v1"]}),
            ));
        }
        ["apis"] => return Ok(Route::Discovery(group_list(&state.types))),
        ["openapi", "v3"] => return Ok(Route::OpenApi(crate::openapi::index(&state.types))),
        ["openapi", "v3", rest @ ..] => {
            return crate::openapi::group_version(&state.types, &rest.join("/"))
                .map(Route::OpenApi)
                .ok_or_else(ApiError::no_route);
        }
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_route()),
    };
    if rest.is_empty() {
        return Ok(Route::Discovery(resource_list(
            &state.types,
            group,
            version,
        )));
    }
    let lookup = |plural: &str| {
        state
            .find_type(group, version, plural)
            .ok_or_else(ApiError::no_route)
    };
    let own = |s: Option<&&str>| s.map(|s| (*s).to_owned());
    let after = |tail: &[&str]| {
        let mut r = tail.get(2..).map(|t| t.join("/")).unwrap_or_default();
        if tail.len() > 2 && path.ends_with('/') {
            r.push('/');
        }
        r
    };
    let (ty, namespace, name, sub, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !matches!(*plural, "status" | "finalize") || !tail.is_empty() =>
        {
            let ty = lookup(plural)?;
            if !ty.namespaced {
                return Err(ApiError::no_route());
            }
            (
                ty,
                Some((*ns).to_owned()),
                own(tail.first()),
                own(tail.get(1)),
                after(tail),
            )
        }
        [plural, tail @ ..] => {
            let ty = lookup(plural)?;
            if ty.namespaced && !tail.is_empty() {
                return Err(ApiError::no_route());
            }
            (ty, None, own(tail.first()), own(tail.get(1)), after(tail))
        }
        [] => return Err(ApiError::no_route()),
    };
    Ok(Route::Resource {
        ty,
        namespace,
        name,
        sub,
        rest,
    })
}

fn group_list(
    types: &std::collections::BTreeMap<(String, String, String), Arc<ResourceType>>,
) -> Value {
    let mut groups: Vec<(String, BTreeSet<String>)> = Vec::new();
    for (g, v, _) in types.keys().filter(|(g, _, _)| !g.is_empty()) {
        match groups.iter_mut().find(|(name, _)| name == g) {
            Some((_, vs)) => {
                vs.insert(v.clone());
            }
            None => groups.push((g.clone(), BTreeSet::from([v.clone()]))),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> =
                vs.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions.last().cloned().unwrap_or_default()})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(
    types: &std::collections::BTreeMap<(String, String, String), Arc<ResourceType>>,
    group: &str,
    version: &str,
) -> Value {
    let mut resources = Vec::new();
    for ((g, v, _), ty) in types {
        if g != group || v != version {
            continue;
        }
        let verbs = json!([
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ]);
        let mut r = json!({"name": ty.plural, "singularName": ty.kind.to_lowercase(), "namespaced": ty.namespaced,
                           "kind": ty.kind, "verbs": verbs});
        if !ty.short_names.is_empty() {
            r["shortNames"] = json!(ty.short_names);
        }
        if !ty.categories.is_empty() {
            r["categories"] = json!(ty.categories);
        }
        resources.push(r);
        if ty.status_subresource {
            resources.push(json!({"name": format!("{}/status", ty.plural), "singularName": "", "namespaced": ty.namespaced,
                                  "kind": ty.kind, "verbs": ["get", "patch", "update"]}));
        }
        if ty.builtin == Some(crate::resources::Builtin::Pod) {
            for (sub, verbs) in [
                ("log", json!(["get"])),
                ("portforward", json!(["create", "get"])),
                (
                    "proxy",
                    json!(["create", "delete", "get", "patch", "update"]),
                ),
            ] {
                resources.push(json!({"name": format!("pods/{sub}"), "singularName": "", "namespaced": true, "kind": if sub == "log" { "Pod" } else { "PodProxyOptions" }, "verbs": verbs}));
            }
        }
        if ty.builtin == Some(crate::resources::Builtin::Service) {
            resources.push(json!({"name": "services/proxy", "singularName": "", "namespaced": true, "kind": "ServiceProxyOptions",
                                  "verbs": ["create", "delete", "get", "patch", "update"]}));
        }
        if ty.scale.is_some() {
            resources.push(json!({"name": format!("{}/scale", ty.plural), "singularName": "", "namespaced": ty.namespaced,
                                  "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn verb_of(method: &::http::Method, has_name: bool, watch: bool) -> Option<Verb> {
    use ::http::Method;
    Some(match (method, has_name) {
        (&Method::GET, true) => Verb::Get,
        (&Method::GET, false) if watch => Verb::Watch,
        (&Method::GET, false) => Verb::List,
        (&Method::POST, _) => Verb::Create,
        (&Method::PUT, true) => Verb::Update,
        (&Method::PATCH, true) => Verb::Patch,
        (&Method::DELETE, true) => Verb::Delete,
        (&Method::DELETE, false) => Verb::DeleteCollection,
        _ => return None,
    })
}

/// Whether the object a path names is stored.
fn exists(shared: &Shared, ty: &ResourceType, namespace: Option<&str>, name: Option<&str>) -> bool {
    let key = crate::store::ObjKey {
        resource: ty.storage_key(),
        namespace: namespace.unwrap_or_default().to_owned(),
        name: name.unwrap_or_default().to_owned(),
    };
    shared.lock().objects.contains_key(&key)
}

/// Answers one request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    actor: &str,
    caller: Caller,
    req: ::http::Request<kube::client::Body>,
) -> ::http::Response<ResponseBody> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error_response(&ApiError::bad_request(format!(
                "reading the request body: {e}"
            )));
        }
    };
    let path = parts.uri.path().to_owned();
    let raw_query = parts.uri.query().unwrap_or_default().to_owned();
    let query = Query::parse(&raw_query);
    let content_type = parts
        .headers
        .get(::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let identity = shared.authenticate(&caller, &parts.headers);
    let mut record = RequestRecord {
        actor: actor.to_owned(),
        user: identity.as_ref().ok().map(Identity::user),
        method: parts.method.clone(),
        path: path.clone(),
        query: raw_query.clone(),
        verb: None,
        resource: None,
        subresource: None,
        namespace: None,
        name: None,
        content_type: content_type.clone(),
        field_manager: query.get("fieldManager").map(str::to_owned),
        code: 0,
    };
    let routed = route(&shared, &path);
    if let Ok(Route::Resource {
        ty,
        namespace,
        name,
        sub,
        ..
    }) = &routed
    {
        record.verb = verb_of(&parts.method, name.is_some(), query.flag("watch"));
        record.resource = Some(ty.plural.clone());
        record.subresource.clone_from(sub);
        record.namespace.clone_from(namespace);
        record.name.clone_from(name);
    }
    // Authorisation, as a real server checks it: before anything else happens. Non-resource
    // paths (discovery, /version, /openapi) are open to everyone, as the default
    // system:discovery and system:public-info-viewer roles make them.
    let access = identity.and_then(|who| match (&routed, record.verb) {
        _ if !auth::restricted(shared.options.authorization, &who) => Ok(()),
        (
            Ok(Route::Resource {
                ty,
                namespace,
                name,
                sub,
                ..
            }),
            Some(verb),
        ) => {
            let check = |verb: &str| {
                shared.authorize(
                    &who,
                    ty,
                    verb,
                    namespace.as_deref(),
                    name.as_deref(),
                    sub.as_deref(),
                )
            };
            check(auth::verb_name(verb))?;
            // Server-side apply of an object that does not exist creates it: Kubernetes then
            // also checks `create`.
            let applies = verb == Verb::Patch
                && content_type
                    .as_deref()
                    .and_then(PatchType::from_content_type)
                    == Some(PatchType::Apply);
            if applies
                && sub.is_none()
                && !exists(&shared, ty, namespace.as_deref(), name.as_deref())
            {
                check("create")?;
            }
            Ok(())
        }
        _ => Ok(()),
    });
    let injected = access
        .is_ok()
        .then(|| {
            let mut faults = shared
                .faults
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let hit = faults.iter_mut().find(|f| f.matches(&record)).map(|f| {
                f.consume();
                f.code()
            });
            faults.retain(|f| !f.spent());
            hit
        })
        .flatten();
    let metadata_only = parts
        .headers
        .get(::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    let user_agent = parts
        .headers
        .get(::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.split('/').next().unwrap_or(ua).to_owned());
    let response = match (access, injected, routed) {
        (Err(e), _, _) => error_response(&e),
        (Ok(()), Some(code), _) => error_response(&ApiError::injected(code)),
        (Ok(()), None, Err(e)) => error_response(&e),
        (Ok(()), None, Ok(Route::Version)) => json_response(
            200,
            &json!({"major": "1", "minor": "37", "gitVersion": "v1.37.0-kube-double", "platform": "linux/amd64"}),
        ),
        (Ok(()), None, Ok(Route::Discovery(v) | Route::OpenApi(v))) => json_response(200, &v),
        (
            Ok(()),
            None,
            Ok(Route::Resource {
                ty,
                namespace: Some(ns),
                name: Some(name),
                sub: Some(sub),
                rest,
            }),
        ) if reaches_pods(&ty, &sub) => {
            reach_pods(&shared, &ty, &ns, &name, &sub, &rest, &parts, &query, body).await
        }
        (
            Ok(()),
            None,
            Ok(Route::Resource {
                ty,
                namespace,
                name,
                sub,
                ..
            }),
        ) => {
            let manager = query
                .get("fieldManager")
                .map(str::to_owned)
                .or(user_agent)
                .unwrap_or_else(|| "unknown".to_owned());
            let req = ResourceRequest {
                ty,
                namespace,
                name,
                sub,
                query: &query,
                body: &body,
                content_type: content_type.as_deref(),
                manager: &manager,
                verb: record.verb,
                metadata_only,
            };
            match serve(&shared, req) {
                Ok(Served::Json(code, v)) if metadata_only => {
                    json_response(code, &metadata_view(v))
                }
                Ok(Served::Json(code, v)) => json_response(code, &v),
                Ok(Served::Stream(stream)) => {
                    let body = StreamBody::new(
                        stream.map(|b| Ok::<_, Infallible>(http_body::Frame::data(b))),
                    );
                    ::http::Response::builder()
                        .status(200)
                        .header(::http::header::CONTENT_TYPE, "application/json")
                        .body(body.boxed_unsync())
                        .unwrap_or_else(|_| {
                            ::http::Response::new(Full::new(Bytes::new()).boxed_unsync())
                        })
                }
                Err(e) => error_response(&e),
            }
        }
    };
    shared.changed();
    record.code = response.status().as_u16();
    shared
        .log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(record);
    response
}

/// Whether `{ty}/{name}/{sub}` is served by reaching a pod (its log, a proxy, a port-forward)
/// rather than by the object store.
fn reaches_pods(ty: &ResourceType, sub: &str) -> bool {
    use crate::resources::Builtin;
    matches!(
        (ty.builtin, sub),
        (Some(Builtin::Pod), "log" | "proxy" | "portforward") | (Some(Builtin::Service), "proxy")
    )
}

#[allow(clippy::too_many_arguments)]
async fn reach_pods(
    shared: &Arc<Shared>,
    ty: &ResourceType,
    ns: &str,
    name: &str,
    sub: &str,
    rest: &str,
    parts: &::http::request::Parts,
    query: &Query,
    body: Bytes,
) -> ::http::Response<ResponseBody> {
    let answer = match sub {
        "log" if parts.method == ::http::Method::GET => pod_log(shared, ns, name, query),
        "log" => Err(ApiError::method_not_allowed("pods/log supports get")),
        "portforward" => Err(ApiError::bad_request(
            "Upgrade request required: port-forwarding takes a WebSocket (served over HTTP by serve_http)",
        )),
        _ => crate::proxy::forward(shared, &ty.plural, ns, name, rest, parts, body).await,
    };
    answer.unwrap_or_else(|e| error_response(&e))
}

/// `pods/{name}/log`: the container's output (`container`, `previous`, `tailLines`,
/// `limitBytes`), and with `follow=true` what it writes next, until it exits.
fn pod_log(
    shared: &Arc<Shared>,
    ns: &str,
    name: &str,
    q: &Query,
) -> Result<::http::Response<ResponseBody>, ApiError> {
    use crate::logs::{LogAnswer, LogError, LogQuery};
    let pod = {
        let state = shared.lock();
        let ty = state
            .find_type("", "v1", "pods")
            .ok_or_else(ApiError::no_route)?;
        ops::get(&state, &ty, Some(ns), name)?
    };
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let lq = LogQuery {
        container: q.get("container").map(str::to_owned),
        previous: q.flag("previous"),
        follow: q.flag("follow"),
        tail_lines: q.int("tailLines")?.map(|n| n.max(0) as usize),
        limit_bytes: q.int("limitBytes")?.map(|n| n.max(0) as usize),
    };
    let text = |code: u16, body: ResponseBody| {
        ::http::Response::builder()
            .status(code)
            .header(::http::header::CONTENT_TYPE, "text/plain")
            .body(body)
            .unwrap_or_else(|_| ::http::Response::new(Full::new(Bytes::new()).boxed_unsync()))
    };
    match shared.pod_logs.serve(ns, name, &containers, &lq) {
        Ok(LogAnswer::Text(t)) => Ok(text(200, Full::new(Bytes::from(t)).boxed_unsync())),
        Ok(LogAnswer::Follow(t, rest)) => {
            let stream = futures::stream::once(async move { Bytes::from(t) }).chain(rest);
            let body =
                StreamBody::new(stream.map(|b| Ok::<_, Infallible>(http_body::Frame::data(b))));
            Ok(text(200, body.boxed_unsync()))
        }
        Err(LogError::Container(m) | LogError::NotStarted(m)) => Err(ApiError::bad_request(m)),
    }
}

struct ResourceRequest<'a> {
    ty: Arc<ResourceType>,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
    query: &'a Query,
    body: &'a [u8],
    content_type: Option<&'a str>,
    manager: &'a str,
    verb: Option<Verb>,
    metadata_only: bool,
}

/// The metadata-only view of an answer: objects become `PartialObjectMetadata`, lists
/// `PartialObjectMetadataList`; `Status` answers stay as they are.
fn metadata_view(v: Value) -> Value {
    match v.get("kind").and_then(Value::as_str) {
        Some("Status") | None => v,
        Some(_) => match v.get("items").and_then(Value::as_array) {
            Some(items) => json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": v.get("metadata").cloned().unwrap_or_default(),
                "items": items.iter().map(watch::partial_metadata).collect::<Vec<_>>(),
            }),
            None => watch::partial_metadata(&v),
        },
    }
}

enum Served {
    Json(u16, Value),
    Stream(std::pin::Pin<Box<dyn futures::Stream<Item = Bytes> + Send>>),
}

fn list_query(ty: &ResourceType, q: &Query) -> Result<ListQuery, ApiError> {
    Ok(ListQuery {
        labels: LabelSelector::parse(q.get("labelSelector").unwrap_or_default())?,
        fields: FieldSelector::parse(q.get("fieldSelector").unwrap_or_default(), &ty.selectable())?,
        limit: q.int("limit")?.map(|l| l.max(0) as usize),
        continue_token: q
            .get("continue")
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
    })
}

fn delete_opts(q: &Query, body: &[u8]) -> Result<DeleteOpts, ApiError> {
    let b: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let dry_run = q.get("dryRun") == Some("All")
        || b.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    Ok(DeleteOpts {
        grace_period: b
            .get("gracePeriodSeconds")
            .and_then(Value::as_i64)
            .or(q.int("gracePeriodSeconds")?),
        propagation: b
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .or(q.get("propagationPolicy"))
            .map(str::to_owned),
        orphan_dependents: b
            .get("orphanDependents")
            .and_then(Value::as_bool)
            .or(q.get("orphanDependents").map(|v| v == "true")),
        precondition_uid: b
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned),
        precondition_rv: b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned),
        dry_run,
    })
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding the request body: {e}")))
}

fn serve(shared: &Arc<Shared>, r: ResourceRequest<'_>) -> Result<Served, ApiError> {
    let ty = &r.ty;
    let verb = r
        .verb
        .ok_or_else(|| ApiError::method_not_allowed("method not allowed on this path"))?;
    let q = r.query;
    let dry_run = q.get("dryRun") == Some("All");
    let ctx = Ctx {
        ty,
        namespace: r.namespace.as_deref(),
        manager: r.manager,
        dry_run,
        strict: q.get("fieldValidation") == Some("Strict"),
    };
    let sub = match r.sub.as_deref() {
        None => Sub::Main,
        Some("status") if ty.status_subresource => Sub::Status,
        Some("scale") if ty.scale.is_some() => return serve_scale(shared, &ctx, verb, &r),
        Some("binding")
            if ty.builtin == Some(crate::resources::Builtin::Pod) && verb == Verb::Create =>
        {
            let name = r.name.as_deref().unwrap_or_default();
            let reply = ops::bind(&mut shared.lock(), &ctx, name, &parse_body(r.body)?)?;
            return Ok(Served::Json(reply.code, reply.body));
        }
        Some(_) => return Err(ApiError::no_route()),
    };
    let name = r.name.as_deref();
    let reply = match (verb, name) {
        (Verb::Get, Some(n)) => {
            return Ok(Served::Json(
                200,
                ops::get(&shared.lock(), ty, r.namespace.as_deref(), n)?,
            ));
        }
        (Verb::List, _) => {
            let lq = list_query(ty, q)?;
            return Ok(Served::Json(
                200,
                ops::list(&shared.lock(), ty, r.namespace.as_deref(), &lq)?,
            ));
        }
        (Verb::Watch, _) => {
            let lq = list_query(ty, q)?;
            let start = match q.get("resourceVersion").unwrap_or_default() {
                "" | "0" => Start::CurrentState,
                rv => Start::After(rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?),
            };
            let timeout = q.int("timeoutSeconds")?.filter(|t| *t > 0).unwrap_or(1800) as u64;
            let spec = WatchSpec {
                ty: ty.clone(),
                namespace: r.namespace.clone(),
                labels: lq.labels,
                fields: lq.fields,
                start,
                bookmarks: q.flag("allowWatchBookmarks"),
                send_initial_events: q.flag("sendInitialEvents"),
                metadata_only: r.metadata_only,
                timeout: Duration::from_secs(timeout),
            };
            return Ok(Served::Stream(Box::pin(watch::start(shared.clone(), spec))));
        }
        (Verb::Create, None) if sub == Sub::Main => {
            ops::create(&mut shared.lock(), &ctx, parse_body(r.body)?)?
        }
        (Verb::Update, Some(n)) => {
            ops::update(&mut shared.lock(), &ctx, n, sub, parse_body(r.body)?)?
        }
        (Verb::Patch, Some(n)) => {
            let ct = r.content_type.unwrap_or_default();
            let pt = PatchType::from_content_type(ct)
                .ok_or_else(|| ApiError::unsupported_media_type(ct))?;
            let manager_given = q.get("fieldManager").is_some_and(|m| !m.is_empty());
            ops::patch(
                &mut shared.lock(),
                &ctx,
                n,
                sub,
                &ops::PatchRequest {
                    patch_type: pt,
                    body: r.body,
                    force: q.flag("force"),
                    manager_given,
                },
            )?
        }
        (Verb::Delete, Some(n)) if sub == Sub::Main => {
            ops::delete(&mut shared.lock(), &ctx, n, &delete_opts(q, r.body)?)?
        }
        (Verb::DeleteCollection, None) if sub == Sub::Main => {
            let lq = list_query(ty, q)?;
            ops::delete_collection(&mut shared.lock(), &ctx, &lq, &delete_opts(q, r.body)?)?
        }
        _ => {
            return Err(ApiError::method_not_allowed(format!(
                "{verb:?} is not allowed on this path"
            )));
        }
    };
    Ok(Served::Json(reply.code, reply.body))
}

fn serve_scale(
    shared: &Arc<Shared>,
    ctx: &Ctx<'_>,
    verb: Verb,
    r: &ResourceRequest<'_>,
) -> Result<Served, ApiError> {
    let name = r.name.as_deref().ok_or_else(ApiError::no_route)?;
    let mut state = shared.lock();
    match verb {
        Verb::Get => Ok(Served::Json(200, ops::get_scale(&state, ctx, name)?)),
        Verb::Update => {
            let reply = ops::write_scale(&mut state, ctx, name, None, r.body)?;
            Ok(Served::Json(reply.code, reply.body))
        }
        Verb::Patch => {
            let ct = r.content_type.unwrap_or_default();
            let pt = PatchType::from_content_type(ct)
                .ok_or_else(|| ApiError::unsupported_media_type(ct))?;
            let reply = ops::write_scale(&mut state, ctx, name, Some(pt), r.body)?;
            Ok(Served::Json(reply.code, reply.body))
        }
        _ => Err(ApiError::method_not_allowed(
            "the scale subresource supports get, update and patch",
        )),
    }
}
