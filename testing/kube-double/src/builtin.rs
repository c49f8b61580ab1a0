//! What the API server does to built-in objects beyond storing them: defaulting (the fields a
//! `kubectl get -o yaml` shows that nobody wrote), the status a new object starts with, and the
//! update rules (a pod's spec is immutable but for images and a few fields; a Service keeps its
//! cluster IP).

use crate::error::FieldError;
use crate::resources::Builtin;
use base64::Engine;
use serde_json::{Map, Value, json};

/// Sets `obj[key]` to `value` when missing.
fn default(obj: &mut Map<String, Value>, key: &str, value: Value) {
    obj.entry(key.to_owned()).or_insert(value);
}

fn object_at<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    v.get_mut(key)
        .and_then(Value::as_object_mut)
        .expect("just made an object")
}

/// Applies the API server's defaults; `next_ip` allocates Service cluster IPs.
pub(crate) fn apply_defaults(kind: Builtin, obj: &mut Value, next_ip: &mut dyn FnMut() -> String) {
    match kind {
        Builtin::Pod => default_pod(obj),
        Builtin::Service => default_service(obj, next_ip),
        Builtin::Secret => {
            let string_data = obj.as_object_mut().and_then(|o| o.remove("stringData"));
            if let Some(Value::Object(sd)) = string_data {
                let data = object_at(obj, "data");
                for (k, v) in sd {
                    let text = v.as_str().unwrap_or_default().to_owned();
                    data.insert(
                        k,
                        json!(base64::engine::general_purpose::STANDARD.encode(text)),
                    );
                }
            }
            if let Some(o) = obj.as_object_mut() {
                default(o, "type", json!("Opaque"));
            }
        }
        Builtin::Namespace => {
            let spec = object_at(obj, "spec");
            default(spec, "finalizers", json!(["kubernetes"]));
        }
        Builtin::ConfigMap
        | Builtin::CoreEvent
        | Builtin::Event
        | Builtin::Lease
        | Builtin::Crd
        | Builtin::ServiceAccount
        | Builtin::Role
        | Builtin::ClusterRole
        | Builtin::RoleBinding
        | Builtin::ClusterRoleBinding => {}
    }
}

fn default_pod(pod: &mut Value) {
    let spec = object_at(pod, "spec");
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "securityContext", json!({}));
    default(spec, "enableServiceLinks", json!(true));
    default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    default(spec, "priority", json!(0));
    default(spec, "serviceAccountName", json!("default"));
    let sa = spec.get("serviceAccountName").cloned().unwrap_or_default();
    default(spec, "serviceAccount", sa);
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                default_container(c);
            }
        }
    }
}

fn default_container(c: &mut Map<String, Value>) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or_default();
    let pull = if image.contains('@') {
        "IfNotPresent"
    } else if !last.contains(':') || last.ends_with(":latest") {
        "Always"
    } else {
        "IfNotPresent"
    };
    default(c, "imagePullPolicy", json!(pull));
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    if let Some(Value::Array(ports)) = c.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default(p, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(Value::Object(p)) = c.get_mut(probe) {
            default(p, "timeoutSeconds", json!(1));
            default(p, "periodSeconds", json!(10));
            default(p, "successThreshold", json!(1));
            default(p, "failureThreshold", json!(3));
            if let Some(Value::Object(h)) = p.get_mut("httpGet") {
                default(h, "scheme", json!("HTTP"));
            }
        }
    }
    if let Some(Value::Array(env)) = c.get_mut("env") {
        for e in env.iter_mut() {
            if let Some(Value::Object(fr)) = e.pointer_mut("/valueFrom/fieldRef") {
                default(fr, "apiVersion", json!("v1"));
            }
        }
    }
}

fn default_service(svc: &mut Value, next_ip: &mut dyn FnMut() -> String) {
    let spec = object_at(svc, "spec");
    default(spec, "type", json!("ClusterIP"));
    default(spec, "sessionAffinity", json!("None"));
    default(spec, "internalTrafficPolicy", json!("Cluster"));
    default(spec, "ipFamilies", json!(["IPv4"]));
    default(spec, "ipFamilyPolicy", json!("SingleStack"));
    let is_external = spec.get("type").and_then(Value::as_str) == Some("ExternalName");
    if !is_external
        && spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        spec.insert("clusterIP".into(), json!(next_ip()));
    }
    if let Some(ip) = spec.get("clusterIP").cloned() {
        default(spec, "clusterIPs", json!([ip]));
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                default(p, "targetPort", port);
            }
        }
    }
}

/// The status a freshly created object starts with (custom resources with a status subresource
/// start with none).
pub(crate) fn initial_status(kind: Option<Builtin>, obj: &mut Value) -> Option<Value> {
    match kind {
        Some(Builtin::Pod) => Some(json!({"phase": "Pending", "qosClass": qos_class(obj)})),
        Some(Builtin::Service) => Some(json!({"loadBalancer": {}})),
        Some(Builtin::Namespace) => Some(json!({"phase": "Active"})),
        _ => None,
    }
}

fn qos_class(pod: &Value) -> &'static str {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        any |= requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty());
        let full = |l: Option<&Map<String, Value>>| {
            l.is_some_and(|l| l.contains_key("cpu") && l.contains_key("memory"))
        };
        if !full(limits)
            || requests.is_some_and(|r| {
                r.iter()
                    .any(|(k, v)| limits.and_then(|l| l.get(k)) != Some(v))
            })
        {
            guaranteed = false;
        }
    }
    if guaranteed {
        "Guaranteed"
    } else if any {
        "Burstable"
    } else {
        "BestEffort"
    }
}

const POD_UPDATE_RULE: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Carries server-allocated values a client may omit on update (a Service's cluster IP) over from
/// the stored object, before defaulting would allocate new ones.
pub(crate) fn carry_over(kind: Builtin, old: &Value, new: &mut Value) {
    if kind != Builtin::Service {
        return;
    }
    let Some(ip) = old.pointer("/spec/clusterIP").cloned() else {
        return;
    };
    let spec = object_at(new, "spec");
    if spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        spec.insert("clusterIP".into(), ip);
        if let Some(ips) = old.pointer("/spec/clusterIPs") {
            spec.insert("clusterIPs".into(), ips.clone());
        }
    }
}

/// Checks an update of the main resource (after defaulting) against the type's immutability rules.
pub(crate) fn validate_update(kind: Builtin, old: &Value, new: &Value, errs: &mut Vec<FieldError>) {
    match kind {
        Builtin::Pod => {
            let strip = |spec: Option<&Value>, images_from: Option<&Value>| {
                let mut s = spec.cloned().unwrap_or(Value::Null);
                if let Value::Object(m) = &mut s {
                    for k in [
                        "activeDeadlineSeconds",
                        "tolerations",
                        "terminationGracePeriodSeconds",
                    ] {
                        m.remove(k);
                    }
                    for list in ["containers", "initContainers"] {
                        let images: Vec<Value> = images_from
                            .and_then(|f| f.get(list))
                            .and_then(Value::as_array)
                            .map(|cs| {
                                cs.iter()
                                    .map(|c| c.get("image").cloned().unwrap_or(Value::Null))
                                    .collect()
                            })
                            .unwrap_or_default();
                        if let Some(Value::Array(cs)) = m.get_mut(list) {
                            for (c, img) in cs.iter_mut().zip(images) {
                                c["image"] = img;
                            }
                        }
                    }
                }
                s
            };
            let old_spec = old.get("spec");
            if strip(old_spec, old_spec) != strip(new.get("spec"), old_spec) {
                errs.push(FieldError::forbidden("spec", POD_UPDATE_RULE));
            }
        }
        Builtin::Service => {
            let old_ip = old.pointer("/spec/clusterIP");
            let new_ip = new.pointer("/spec/clusterIP");
            if let (Some(o), Some(n)) = (old_ip, new_ip)
                && o != n
            {
                errs.push(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    n,
                    "may not change once set",
                ));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_kubernetes_defaults() {
        let mut pod = json!({"spec": {"containers": [{"name": "c", "image": "ghcr.io/dask/dask:latest",
            "ports": [{"containerPort": 8786}], "readinessProbe": {"httpGet": {"port": 8787}}}]}});
        apply_defaults(Builtin::Pod, &mut pod, &mut || unreachable!());
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(
            pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]["scheme"],
            "HTTP"
        );
        assert_eq!(
            initial_status(Some(Builtin::Pod), &mut pod).unwrap()["qosClass"],
            "BestEffort"
        );
    }

    #[test]
    fn pod_spec_is_immutable_but_for_images() {
        let old = json!({"spec": {"containers": [{"name": "c", "image": "a", "env": []}]}});
        let mut errs = Vec::new();
        let new = json!({"spec": {"containers": [{"name": "c", "image": "b", "env": []}]}});
        validate_update(Builtin::Pod, &old, &new, &mut errs);
        assert!(errs.is_empty());
        let new =
            json!({"spec": {"containers": [{"name": "c", "image": "a", "env": [{"name": "X"}]}]}});
        validate_update(Builtin::Pod, &old, &new, &mut errs);
        assert_eq!(errs.len(), 1);
    }

    #[test]
    fn services_get_a_cluster_ip_that_sticks() {
        let mut svc = json!({"spec": {"ports": [{"port": 8786}]}});
        apply_defaults(Builtin::Service, &mut svc, &mut || "10.96.0.7".to_owned());
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.7");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8786);
        let mut new = json!({"spec": {"ports": []}});
        carry_over(Builtin::Service, &svc, &mut new);
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.7");
        let mut errs = Vec::new();
        validate_update(
            Builtin::Service,
            &svc,
            &json!({"spec": {"clusterIP": "10.96.0.8"}}),
            &mut errs,
        );
        assert_eq!(errs.len(), 1);
    }
}
