//! Authentication and RBAC: ServiceAccount tokens, Roles and ClusterRoles with their bindings,
//! and Kubernetes' 401 and 403 answers.

use crate::support::*;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube_double::{ApiServer, Authorization, Options, Verb};
use serde_json::{Value, json};

const SA_USER: &str = "system:serviceaccount:ops:robot";

fn rbac_server() -> ApiServer {
    let server = ApiServer::with_options(Options {
        authorization: Authorization::Rbac,
        ..Options::default()
    });
    server
        .install_crd(<Widget as kube::CustomResourceExt>::crd())
        .unwrap();
    server
}

fn typed<K: serde::de::DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).unwrap()
}

fn robot() -> Value {
    json!({"kind": "ServiceAccount", "name": "robot", "namespace": "ops"})
}

async fn role(server: &ApiServer, ns: &str, name: &str, rules: Value) {
    Api::<Role>::namespaced(server.client(), ns)
        .create(
            &PostParams::default(),
            &typed(json!({"metadata": {"name": name}, "rules": rules})),
        )
        .await
        .unwrap();
}

async fn cluster_role(server: &ApiServer, name: &str, rules: Value) {
    Api::<ClusterRole>::all(server.client())
        .create(
            &PostParams::default(),
            &typed(json!({"metadata": {"name": name}, "rules": rules})),
        )
        .await
        .unwrap();
}

async fn role_binding(server: &ApiServer, ns: &str, kind: &str, role: &str, subject: Value) {
    Api::<RoleBinding>::namespaced(server.client(), ns)
        .create(
            &PostParams::default(),
            &typed(json!({
                "metadata": {"name": format!("{role}-binding")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
                "subjects": [subject],
            })),
        )
        .await
        .unwrap();
}

async fn cluster_role_binding(server: &ApiServer, role: &str, subject: Value) {
    Api::<ClusterRoleBinding>::all(server.client())
        .create(
            &PostParams::default(),
            &typed(json!({
                "metadata": {"name": format!("{role}-binding")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [subject],
            })),
        )
        .await
        .unwrap();
}

fn forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> String {
    let s = api_error(r);
    assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"), "{s:?}");
    s.message
}

#[tokio::test]
async fn a_service_account_without_bindings_may_do_nothing_and_is_told_so() {
    let server = rbac_server();
    let client = server.service_account_client("ops", "robot");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    assert_eq!(
        forbidden(pods.get("web").await),
        format!(
            "pods \"web\" is forbidden: User \"{SA_USER}\" cannot get resource \"pods\" in API \
             group \"\" in the namespace \"default\""
        )
    );
    assert_eq!(
        forbidden(
            Api::<Pod>::all(client.clone())
                .list(&ListParams::default())
                .await
        ),
        format!(
            "pods is forbidden: User \"{SA_USER}\" cannot list resource \"pods\" in API group \
             \"\" at the cluster scope"
        )
    );
    let widgets: Api<Widget> = Api::namespaced(client, "default");
    assert_eq!(
        forbidden(
            widgets
                .create(&PostParams::default(), &widget("w", 1))
                .await
        ),
        format!(
            "widgets.test.kube-double.dev is forbidden: User \"{SA_USER}\" cannot create \
             resource \"widgets\" in API group \"test.kube-double.dev\" in the namespace \
             \"default\""
        )
    );
    // Refused requests change nothing, and the log says who was refused.
    let admin: Api<Widget> = Api::namespaced(server.client(), "default");
    assert!(admin.get_opt("w").await.unwrap().is_none());
    let refused: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.code == 403)
        .collect();
    assert_eq!(refused.len(), 3);
    assert!(refused.iter().all(|r| r.user.as_deref() == Some(SA_USER)));
}

#[tokio::test]
async fn a_role_grants_its_verbs_in_its_namespace_only() {
    let server = rbac_server();
    role(
        &server,
        "default",
        "cm-reader",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]),
    )
    .await;
    role_binding(&server, "default", "Role", "cm-reader", robot()).await;
    let admin: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    admin
        .create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let client = server.service_account_client("ops", "robot");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.get("a").await.unwrap();
    assert_eq!(
        cms.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    // Not other verbs, resources, namespaces or the cluster scope.
    forbidden(cms.delete("a", &Default::default()).await);
    forbidden(
        Api::<Secret>::namespaced(client.clone(), "default")
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
            .list(&ListParams::default())
            .await,
    );
    forbidden(
        Api::<ConfigMap>::all(client)
            .list(&ListParams::default())
            .await,
    );
}

#[tokio::test]
async fn a_role_binding_to_a_cluster_role_grants_in_the_bindings_namespace_only() {
    let server = rbac_server();
    cluster_role(
        &server,
        "widget-editor",
        json!([{"apiGroups": ["test.kube-double.dev"], "resources": ["*"], "verbs": ["*"]}]),
    )
    .await;
    role_binding(&server, "default", "ClusterRole", "widget-editor", robot()).await;
    let client = server.service_account_client("ops", "robot");
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    // `*` covers subresources.
    widgets
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 1}})),
        )
        .await
        .unwrap();
    forbidden(
        Api::<Widget>::namespaced(client.clone(), "kube-system")
            .create(&PostParams::default(), &widget("w", 1))
            .await,
    );
    forbidden(
        Api::<Widget>::all(client)
            .list(&ListParams::default())
            .await,
    );
}

#[tokio::test]
async fn a_cluster_role_binding_grants_everywhere_and_at_the_cluster_scope() {
    let server = rbac_server();
    cluster_role(
        &server,
        "pod-watcher",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]),
    )
    .await;
    cluster_role_binding(&server, "pod-watcher", robot()).await;
    let client = server.service_account_client("ops", "robot");
    Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    Api::<Pod>::namespaced(client.clone(), "kube-system")
        .list(&ListParams::default())
        .await
        .unwrap();
    // A watch is its own verb.
    use futures::TryStreamExt;
    let stream = Api::<Pod>::all(client.clone())
        .watch(&kube::api::WatchParams::default().timeout(1), "0")
        .await
        .unwrap();
    let _: Vec<_> = stream.try_collect().await.unwrap();
    // get is not granted.
    forbidden(Api::<Pod>::namespaced(client, "default").get("p").await);
    // Another ServiceAccount of the same name elsewhere is someone else.
    let stranger = server.service_account_client("other", "robot");
    forbidden(Api::<Pod>::all(stranger).list(&ListParams::default()).await);
}

#[tokio::test]
async fn subresources_are_granted_by_name_and_resource_names_restrict() {
    let server = rbac_server();
    role(
        &server,
        "default",
        "status-writer",
        json!([
            {"apiGroups": ["test.kube-double.dev"], "resources": ["widgets"], "verbs": ["get", "create"]},
            {"apiGroups": ["test.kube-double.dev"], "resources": ["widgets/status"], "verbs": ["patch"], "resourceNames": ["mine"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        ]),
    )
    .await;
    role_binding(&server, "default", "Role", "status-writer", robot()).await;
    let client = server.service_account_client("ops", "robot");
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    for name in ["mine", "theirs"] {
        widgets
            .create(&PostParams::default(), &widget(name, 1))
            .await
            .unwrap();
    }
    let status = Patch::Merge(json!({"status": {"replicas": 2}}));
    widgets
        .patch_status("mine", &PatchParams::default(), &status)
        .await
        .unwrap();
    assert_eq!(
        forbidden(
            widgets
                .patch_status("theirs", &PatchParams::default(), &status)
                .await
        ),
        format!(
            "widgets.test.kube-double.dev \"theirs\" is forbidden: User \"{SA_USER}\" cannot \
             patch resource \"widgets/status\" in API group \"test.kube-double.dev\" in the \
             namespace \"default\""
        )
    );
    // The main resource's verbs do not reach the subresource, nor the reverse.
    forbidden(
        widgets
            .patch("mine", &PatchParams::default(), &status)
            .await,
    );
    forbidden(widgets.get_scale("mine").await);
    // pods/log without pods.
    let pods: Api<Pod> = Api::namespaced(client, "default");
    forbidden(pods.get("p").await);
    let log = api_error(pods.logs("p", &Default::default()).await);
    assert_eq!(log.code, 404, "allowed, then not found: {log:?}");
}

#[tokio::test]
async fn server_side_apply_that_creates_needs_create_too() {
    let server = rbac_server();
    role(
        &server,
        "default",
        "patcher",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "patch"]}]),
    )
    .await;
    role_binding(&server, "default", "Role", "patcher", robot()).await;
    let client = server.service_account_client("ops", "robot");
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let apply = PatchParams::apply("robot");
    let body = Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"}}));
    assert!(forbidden(cms.patch("new", &apply, &body).await).contains("cannot create resource"));
    // Once it exists, patch is enough.
    Api::<ConfigMap>::namespaced(server.client(), "default")
        .create(&PostParams::default(), &config_map("new", &[]))
        .await
        .unwrap();
    cms.patch("new", &apply, &body).await.unwrap();
}

#[tokio::test]
async fn group_subjects_and_namespace_defaults_bind_as_in_kubernetes() {
    let server = rbac_server();
    role(
        &server,
        "ops",
        "sa-reader",
        json!([{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["list"]}]),
    )
    .await;
    // A ServiceAccount subject without a namespace means the binding's.
    role_binding(
        &server,
        "ops",
        "Role",
        "sa-reader",
        json!({"kind": "ServiceAccount", "name": "robot"}),
    )
    .await;
    cluster_role(
        &server,
        "secret-reader",
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]),
    )
    .await;
    cluster_role_binding(
        &server,
        "secret-reader",
        json!({"kind": "Group", "name": "system:serviceaccounts:ops", "apiGroup": "rbac.authorization.k8s.io"}),
    )
    .await;
    let client = server.service_account_client("ops", "robot");
    Api::<ServiceAccount>::namespaced(client.clone(), "ops")
        .list(&ListParams::default())
        .await
        .unwrap();
    let err = api_error(Api::<Secret>::namespaced(client, "default").get("s").await);
    assert_eq!(err.code, 404, "allowed through the group: {err:?}");
    let other = server.service_account_client("default", "robot");
    forbidden(Api::<Secret>::namespaced(other, "default").get("s").await);
}

#[tokio::test]
async fn tokens_authenticate_requests_over_http() {
    let server = rbac_server();
    let (addr, _task) = server
        .serve_http("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    cluster_role(
        &server,
        "cm-lister",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]),
    )
    .await;
    cluster_role_binding(&server, "cm-lister", robot()).await;
    let token = server.service_account_token("ops", "robot");
    let get = |auth: Option<String>| async move {
        let mut req =
            "GET /api/v1/configmaps HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_owned();
        if let Some(a) = auth {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        req.push_str("\r\n");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    assert!(
        get(Some(format!("Bearer {token}")))
            .await
            .starts_with("HTTP/1.1 200")
    );
    // The administrator's token (kube-double-serve's kubeconfig) is not restricted.
    assert!(
        get(Some("Bearer kube-double".into()))
            .await
            .starts_with("HTTP/1.1 200")
    );
    let unknown = get(Some("Bearer forged".into())).await;
    assert!(unknown.starts_with("HTTP/1.1 401"), "{unknown}");
    assert!(unknown.contains("\"reason\":\"Unauthorized\""), "{unknown}");
    let anonymous = get(None).await;
    assert!(anonymous.starts_with("HTTP/1.1 403"), "{anonymous}");
    assert!(
        anonymous.contains("User \\\"system:anonymous\\\" cannot list"),
        "{anonymous}"
    );
    // Discovery is open to everyone.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

#[tokio::test]
async fn without_rbac_every_identity_may_do_anything() {
    let server = server();
    let client = server.service_account_client("ops", "robot");
    Api::<ConfigMap>::namespaced(client, "default")
        .create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let rec = server
        .requests()
        .into_iter()
        .find(|r| r.verb == Some(Verb::Create))
        .unwrap();
    assert_eq!(rec.user.as_deref(), Some(SA_USER));
}

#[tokio::test]
async fn rbac_objects_are_served_with_their_naming_rule() {
    let server = rbac_server();
    // Colons are allowed in RBAC names (system:controller:...), slashes are not.
    cluster_role(&server, "system:controller:widgets", json!([])).await;
    let bad: ClusterRole = typed(json!({"metadata": {"name": "a/b"}, "rules": []}));
    let err = api_error(
        Api::<ClusterRole>::all(server.client())
            .create(&PostParams::default(), &bad)
            .await,
    );
    assert_eq!(err.code, 422, "{err:?}");
    assert!(
        err.message.contains("may not contain '/'"),
        "{}",
        err.message
    );
    let roles = Api::<ClusterRole>::all(server.client())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(roles.items.len(), 1);
}

#[tokio::test]
async fn the_insecure_port_trusts_requests_without_credentials_only() {
    let server = rbac_server();
    let (addr, _task) = server
        .serve_insecure_port("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let token = server.service_account_token("ops", "robot");
    let get = |auth: Option<String>| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut req = "GET /api/v1/secrets HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_owned();
        if let Some(a) = auth {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        req.push_str("\r\n");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    // kubectl over plain HTTP sends no token: there, that is the administrator.
    assert!(get(None).await.starts_with("HTTP/1.1 200"));
    // A token still names its ServiceAccount, held to RBAC; a forged one is still refused.
    let robot = get(Some(format!("Bearer {token}"))).await;
    assert!(robot.starts_with("HTTP/1.1 403"), "{robot}");
    assert!(
        get(Some("Bearer forged".into()))
            .await
            .starts_with("HTTP/1.1 401")
    );
}
