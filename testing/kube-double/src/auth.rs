//! Who is asking, and whether they may: bearer tokens mapped to identities (as a real cluster's
//! token authenticator maps ServiceAccount tokens), and Kubernetes' RBAC authorizer over the
//! Roles, ClusterRoles, RoleBindings and ClusterRoleBindings in the store.

use crate::error::{ApiError, group_resource};
use crate::store::State;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// A Kubernetes API verb, as RBAC and audit logs name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `GET` of one object.
    Get,
    /// `GET` of a collection.
    List,
    /// `GET` of a collection with `watch=true`.
    Watch,
    /// `POST`.
    Create,
    /// `PUT`.
    Update,
    /// `PATCH` of any type, server-side apply included.
    Patch,
    /// `DELETE` of one object.
    Delete,
    /// `DELETE` of a collection.
    DeleteCollection,
}

impl Verb {
    /// Whether the verb can change state.
    pub fn is_write(self) -> bool {
        !matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
}

/// The token of the administrator identity, accepted by every server (kube-double-serve's
/// kubeconfig carries it).
pub(crate) const ADMIN_TOKEN: &str = "kube-double";

/// How requests are authorised (kube-apiserver's `--authorization-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Authorization {
    /// Every authenticated or anonymous request is allowed (the double's default).
    #[default]
    AlwaysAllow,
    /// Kubernetes' RBAC: a request is allowed when a rule of a Role or ClusterRole bound to its
    /// user (or one of the user's groups) allows it; the administrator (`system:masters`) always
    /// is. Everything else is `403 Forbidden`.
    Rbac,
}

/// Who sent a request, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Identity {
    /// The tests' own clients ([`crate::ApiServer::client`]), kubelets, and [`ADMIN_TOKEN`]:
    /// `system:admin` in `system:masters`, which RBAC never restricts.
    Admin,
    /// A ServiceAccount, through a token from [`crate::ApiServer::service_account_token`].
    ServiceAccount { namespace: String, name: String },
    /// A request without credentials.
    Anonymous,
}

impl Identity {
    /// The user name RBAC subjects and messages use.
    pub fn user(&self) -> String {
        match self {
            Identity::Admin => "system:admin".to_owned(),
            Identity::ServiceAccount { namespace, name } => {
                format!("system:serviceaccount:{namespace}:{name}")
            }
            Identity::Anonymous => "system:anonymous".to_owned(),
        }
    }

    /// The groups a real cluster puts the user in.
    fn groups(&self) -> Vec<String> {
        match self {
            Identity::Admin => vec!["system:masters".into(), "system:authenticated".into()],
            Identity::ServiceAccount { namespace, .. } => vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            Identity::Anonymous => vec!["system:unauthenticated".into()],
        }
    }
}

/// Bearer tokens the server accepts.
pub(crate) struct Tokens {
    by_token: HashMap<String, Identity>,
    issued: u64,
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens {
            by_token: HashMap::from([(ADMIN_TOKEN.to_owned(), Identity::Admin)]),
            issued: 0,
        }
    }
}

impl Tokens {
    /// A new token for a ServiceAccount (the account itself need not exist, as with a token
    /// minted before the account was deleted; RBAC decides what it may do).
    pub fn issue(&mut self, namespace: &str, name: &str) -> String {
        self.issued += 1;
        let token = format!("kube-double-sa.{namespace}.{name}.{}", self.issued);
        self.by_token.insert(
            token.clone(),
            Identity::ServiceAccount {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
        );
        token
    }

    /// The identity of an `Authorization` header's value: none is anonymous, a bearer token must
    /// be one the server issued (`401 Unauthorized` otherwise, as a real server answers).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Identity, ApiError> {
        let Some(header) = authorization else {
            return Ok(Identity::Anonymous);
        };
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim);
        match token.and_then(|t| self.by_token.get(t)) {
            Some(identity) => Ok(identity.clone()),
            None => Err(ApiError::new(401, "Unauthorized", "Unauthorized")),
        }
    }
}

/// What a resource request asks to do, as RBAC sees it.
pub(crate) struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// RBAC's name for a verb.
pub(crate) fn verb_name(verb: Verb) -> &'static str {
    match verb {
        Verb::Get => "get",
        Verb::List => "list",
        Verb::Watch => "watch",
        Verb::Create => "create",
        Verb::Update => "update",
        Verb::Patch => "patch",
        Verb::Delete => "delete",
        Verb::DeleteCollection => "deletecollection",
    }
}

/// Allows the request or answers `403 Forbidden` with Kubernetes' message, e.g. `pods "web" is
/// forbidden: User "system:serviceaccount:ops:op" cannot get resource "pods" in API group "" in
/// the namespace "default"`.
pub(crate) fn authorize(
    mode: Authorization,
    state: &State,
    who: &Identity,
    a: &Attributes<'_>,
) -> Result<(), ApiError> {
    if !restricted(mode, who) || allowed(state, who, a) {
        return Ok(());
    }
    Err(forbidden(who, a))
}

/// Whether RBAC decides for `who`: not without RBAC, nor for the administrator.
pub(crate) fn restricted(mode: Authorization, who: &Identity) -> bool {
    mode == Authorization::Rbac && *who != Identity::Admin
}

fn forbidden(who: &Identity, a: &Attributes<'_>) -> ApiError {
    let resource = match a.subresource {
        Some(sub) => format!("{}/{sub}", a.resource),
        None => a.resource.to_owned(),
    };
    let scope = match a.namespace {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".to_owned(),
    };
    let why = format!(
        "User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
        who.user(),
        a.verb,
        a.group
    );
    let qualified = group_resource(a.group, a.resource);
    let message = match a.name {
        Some(name) => format!("{qualified} {name:?} is forbidden: {why}"),
        None => format!("{qualified} is forbidden: {why}"),
    };
    let mut details = serde_json::json!({"kind": a.resource});
    if let Some(name) = a.name {
        details["name"] = serde_json::json!(name);
    }
    if !a.group.is_empty() {
        details["group"] = serde_json::json!(a.group);
    }
    ApiError::new(403, "Forbidden", message).with_details(details)
}

const RBAC: &str = "rbac.authorization.k8s.io";

/// Every stored object of an RBAC resource, typed; objects that do not decode grant nothing.
fn stored<K: DeserializeOwned>(
    state: &State,
    plural: &str,
    namespace: Option<&str>,
) -> Vec<(String, K)> {
    let resource = format!("{RBAC}/{plural}");
    state
        .range(&resource, namespace, None)
        .filter_map(|(key, s)| {
            serde_json::from_value(s.obj.clone())
                .ok()
                .map(|k| (key.name.clone(), k))
        })
        .collect()
}

fn cluster_role_rules(state: &State, name: &str) -> Vec<PolicyRule> {
    stored::<ClusterRole>(state, "clusterroles", None)
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, r)| r.rules)
        .unwrap_or_default()
}

fn role_rules(state: &State, namespace: &str, name: &str) -> Vec<PolicyRule> {
    stored::<Role>(state, "roles", Some(namespace))
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, r)| r.rules)
        .unwrap_or_default()
}

/// Whether a binding's subject is the user or one of its groups; a ServiceAccount subject
/// without a namespace means the binding's own (as Kubernetes reads it).
fn subject_matches(
    subject: &k8s_openapi::api::rbac::v1::Subject,
    binding_namespace: &str,
    who: &Identity,
    groups: &[String],
) -> bool {
    match subject.kind.as_str() {
        "ServiceAccount" => {
            let ns = subject
                .namespace
                .as_deref()
                .filter(|ns| !ns.is_empty())
                .unwrap_or(binding_namespace);
            !ns.is_empty() && who.user() == format!("system:serviceaccount:{ns}:{}", subject.name)
        }
        "User" => who.user() == subject.name,
        "Group" => groups.contains(&subject.name),
        _ => false,
    }
}

fn allowed(state: &State, who: &Identity, a: &Attributes<'_>) -> bool {
    let groups = who.groups();
    let binds = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>, ns: &str| {
        subjects
            .iter()
            .flatten()
            .any(|s| subject_matches(s, ns, who, &groups))
    };
    let cluster_wide = stored::<ClusterRoleBinding>(state, "clusterrolebindings", None)
        .into_iter()
        .filter(|(_, b)| b.role_ref.kind == "ClusterRole" && binds(&b.subjects, ""))
        .any(|(_, b)| {
            cluster_role_rules(state, &b.role_ref.name)
                .iter()
                .any(|r| rule_allows(r, a))
        });
    if cluster_wide {
        return true;
    }
    // A RoleBinding grants within its namespace only, whether it refers to a Role there or to a
    // ClusterRole.
    let Some(ns) = a.namespace else {
        return false;
    };
    stored::<RoleBinding>(state, "rolebindings", Some(ns))
        .into_iter()
        .filter(|(_, b)| binds(&b.subjects, ns))
        .any(|(_, b)| {
            let rules = match b.role_ref.kind.as_str() {
                "Role" => role_rules(state, ns, &b.role_ref.name),
                "ClusterRole" => cluster_role_rules(state, &b.role_ref.name),
                _ => Vec::new(),
            };
            rules.iter().any(|r| rule_allows(r, a))
        })
}

/// Kubernetes' `RuleAllows` for resource requests: verb, API group, resource (`*`, the exact
/// `resource/subresource`, or `*/subresource`) and, if the rule names any, the object's name.
pub(crate) fn rule_allows(rule: &PolicyRule, a: &Attributes<'_>) -> bool {
    let any = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
    let verbs_ok = any(&rule.verbs, a.verb);
    let groups_ok = any(rule.api_groups.as_deref().unwrap_or_default(), a.group);
    let combined = match a.subresource {
        Some(sub) => format!("{}/{sub}", a.resource),
        None => a.resource.to_owned(),
    };
    let resources_ok = rule.resources.iter().flatten().any(|r| {
        r == "*"
            || *r == combined
            || a.subresource
                .is_some_and(|sub| r.strip_prefix("*/").is_some_and(|s| s == sub))
    });
    let names_ok = match rule.resource_names.as_deref() {
        None | Some([]) => true,
        Some(names) => a.name.is_some_and(|n| names.iter().any(|x| x == n)),
    };
    verbs_ok && groups_ok && resources_ok && names_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> PolicyRule {
        let v = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        PolicyRule {
            api_groups: Some(v(groups)),
            resources: Some(v(resources)),
            verbs: v(verbs),
            resource_names: (!names.is_empty()).then(|| v(names)),
            non_resource_urls: None,
        }
    }

    fn attrs<'a>(verb: &'a str, resource: &'a str, sub: Option<&'a str>) -> Attributes<'a> {
        Attributes {
            verb,
            group: "",
            resource,
            subresource: sub,
            namespace: Some("default"),
            name: Some("web"),
        }
    }

    #[test]
    fn rules_match_as_kubernetes_matches_them() {
        let pods = rule(&[""], &["pods"], &["get"], &[]);
        assert!(rule_allows(&pods, &attrs("get", "pods", None)));
        assert!(!rule_allows(&pods, &attrs("list", "pods", None)));
        // A resource does not grant its subresources.
        assert!(!rule_allows(&pods, &attrs("get", "pods", Some("log"))));
        assert!(rule_allows(
            &rule(&[""], &["pods/log"], &["get"], &[]),
            &attrs("get", "pods", Some("log"))
        ));
        assert!(rule_allows(
            &rule(&[""], &["*/log"], &["get"], &[]),
            &attrs("get", "pods", Some("log"))
        ));
        assert!(rule_allows(
            &rule(&["*"], &["*"], &["*"], &[]),
            &attrs("delete", "pods", Some("status"))
        ));
        // Another group.
        assert!(!rule_allows(
            &rule(&["apps"], &["pods"], &["get"], &[]),
            &attrs("get", "pods", None)
        ));
        // resourceNames restrict to those names, and never match a request without a name.
        let named = rule(&[""], &["pods"], &["get", "list"], &["web"]);
        assert!(rule_allows(&named, &attrs("get", "pods", None)));
        let other = Attributes {
            name: Some("db"),
            ..attrs("get", "pods", None)
        };
        assert!(!rule_allows(&named, &other));
        let list = Attributes {
            name: None,
            ..attrs("list", "pods", None)
        };
        assert!(!rule_allows(&named, &list));
    }

    #[test]
    fn forbidden_messages_are_kubernetes_own() {
        let sa = Identity::ServiceAccount {
            namespace: "ops".into(),
            name: "op".into(),
        };
        let e = forbidden(&sa, &attrs("get", "pods", None));
        assert_eq!(e.code, 403);
        assert_eq!(e.reason, "Forbidden");
        assert_eq!(
            e.message,
            "pods \"web\" is forbidden: User \"system:serviceaccount:ops:op\" cannot get resource \
             \"pods\" in API group \"\" in the namespace \"default\""
        );
        let list = Attributes {
            verb: "list",
            group: "kubernetes.dask.org",
            resource: "daskclusters",
            subresource: None,
            namespace: None,
            name: None,
        };
        assert_eq!(
            forbidden(&sa, &list).message,
            "daskclusters.kubernetes.dask.org is forbidden: User \
             \"system:serviceaccount:ops:op\" cannot list resource \"daskclusters\" in API group \
             \"kubernetes.dask.org\" at the cluster scope"
        );
        let status = Attributes {
            verb: "patch",
            subresource: Some("status"),
            namespace: Some("default"),
            name: Some("c"),
            ..list
        };
        assert_eq!(
            forbidden(&Identity::Anonymous, &status).message,
            "daskclusters.kubernetes.dask.org \"c\" is forbidden: User \"system:anonymous\" \
             cannot patch resource \"daskclusters/status\" in API group \"kubernetes.dask.org\" \
             in the namespace \"default\""
        );
    }

    #[test]
    fn tokens_authenticate_their_service_account_and_nothing_else() {
        let mut tokens = Tokens::default();
        let t = tokens.issue("ops", "op");
        assert_eq!(
            tokens.authenticate(Some(&format!("Bearer {t}"))).unwrap(),
            Identity::ServiceAccount {
                namespace: "ops".into(),
                name: "op".into()
            }
        );
        assert_eq!(
            tokens.authenticate(Some("Bearer kube-double")).unwrap(),
            Identity::Admin
        );
        assert_eq!(tokens.authenticate(None).unwrap(), Identity::Anonymous);
        for bad in ["Bearer nope", "Basic dXNlcjpwdw==", "Bearer"] {
            let e = tokens.authenticate(Some(bad)).unwrap_err();
            assert_eq!((e.code, e.reason.as_str()), (401, "Unauthorized"), "{bad}");
        }
    }
}
