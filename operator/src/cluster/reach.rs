//! How the operator reaches a cluster's scheduler API: plain HTTP, or, for a cluster whose rask
//! scheduler uses its certificates (`rask-operator run --cluster-tls`), HTTPS with the operator's
//! certificate from the cluster's Secret `{cluster}-tls` (the scheduler's mutating routes, such as
//! `retire_workers`, admit nothing else).

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use super::certs::secret_name;
use crate::context::Context;
use crate::crd::DaskCluster;
use crate::error::Error;
use crate::local::plan::is_rask;
use crate::scheduler_api::{SchedulerApi, SchedulerApiError};
use crate::tls::{CA_FILE, Role, wanted};

/// Whether the cluster's scheduler uses its certificates: the operator's `--cluster-tls` is on
/// (`on`), the cluster has certificates (not opted out) and its scheduler runs rask's image.
/// Its rask workers and job runner then connect over TLS, and its HTTP API is HTTPS.
pub fn uses_tls(on: bool, c: &DaskCluster) -> bool {
    on && wanted(c.annotations()).unwrap_or(true)
        && c.spec
            .scheduler
            .spec
            .containers
            .first()
            .is_some_and(is_rask)
}

/// `https://...` for an `http://...` scheduler URL (others are kept as given: a template
/// pointing elsewhere, such as the API server's proxy, decides its own scheme).
pub fn https(url: &str) -> String {
    match url.strip_prefix("http://") {
        Some(rest) => format!("https://{rest}"),
        None => url.to_owned(),
    }
}

/// The client and base URL for `cluster`'s scheduler API. Plain: the context's client and URL.
/// TLS: a client trusting only the cluster's CA and presenting the operator's certificate, read
/// from the Secret (kept per Secret version, so its connections are reused), and the URL over
/// HTTPS. A missing or unusable Secret is an error naming it.
pub async fn scheduler(
    ctx: &Context,
    cluster: &DaskCluster,
) -> Result<(SchedulerApi, String), Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let base = (ctx.scheduler_url)(&name, &namespace);
    if !uses_tls(ctx.cluster_tls, cluster) {
        return Ok((ctx.scheduler_api.clone(), base));
    }
    let secret = secret_name(&name);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let url = https(&base);
    let found = secrets.get_opt(&secret).await?;
    let version = found
        .as_ref()
        .and_then(|s| s.resource_version())
        .unwrap_or_default();
    let key = (namespace.clone(), secret.clone());
    if found.is_some()
        && let Some((v, api)) = ctx.tls_apis().get(&key)
        && *v == version
    {
        return Ok((api.clone(), url));
    }
    let api = client_for(found.as_ref(), &secret, &url, ctx.scheduler_api.timeout())?;
    ctx.tls_apis().insert(key, (version, api.clone()));
    Ok((api, url))
}

/// The operator's HTTPS client from a cluster's Secret. A missing Secret is not made yet (the
/// cluster's reconcile makes it): an unreachable scheduler, retried soon; a Secret without the
/// operator's files is refused until it changes.
fn client_for(
    s: Option<&Secret>,
    secret: &str,
    url: &str,
    timeout: Duration,
) -> Result<SchedulerApi, Error> {
    let Some(s) = s else {
        return Err(Error::SchedulerApi(SchedulerApiError::Unreachable {
            url: url.to_owned(),
            reason: format!(
                "the cluster uses TLS and its Secret {secret} does not exist (yet): the \
                 operator has no certificate to reach it with"
            ),
        }));
    };
    let data = s.data.clone().unwrap_or_default();
    let get = |file: &str| -> Result<String, Error> {
        data.get(file)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| Error::Other(format!("Secret {secret} has no {file}")))
    };
    SchedulerApi::with_tls(
        &get(CA_FILE)?,
        &get(&Role::Operator.cert_file())?,
        &get(&Role::Operator.key_file())?,
        timeout,
    )
    .map_err(|e| Error::Other(format!("Secret {secret}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn fixture(file: &str) -> DaskCluster {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(file);
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn only_a_rask_scheduler_with_certificates_and_the_switch_on_uses_tls() {
        let rask = fixture("rask-cluster.yaml");
        assert!(uses_tls(true, &rask));
        assert!(!uses_tls(false, &rask), "the switch is off");
        let mut opted_out = rask.clone();
        opted_out.metadata.annotations = Some(BTreeMap::from([(
            crate::tls::ANNOTATION_TLS.to_owned(),
            "false".to_owned(),
        )]));
        assert!(!uses_tls(true, &opted_out));
        assert!(
            !uses_tls(true, &fixture("daskcluster.yaml")),
            "a Dask image's scheduler decides for itself"
        );
    }

    #[test]
    fn http_urls_become_https_and_others_are_kept() {
        assert_eq!(
            https("http://foo-scheduler.ns.svc.cluster.local:8787"),
            "https://foo-scheduler.ns.svc.cluster.local:8787"
        );
        assert_eq!(https("https://a:1"), "https://a:1");
        assert_eq!(https("unix:/x"), "unix:/x");
    }

    #[test]
    fn a_secret_without_the_operators_key_or_with_garbage_is_an_error_naming_it() {
        let certs = crate::tls::ClusterCerts::generate(
            "foo",
            &crate::tls::kubernetes_scheduler_names("foo", "ns"),
            1_796_428_800,
        )
        .unwrap();
        let mut data: BTreeMap<String, k8s_openapi::ByteString> = certs
            .files()
            .into_iter()
            .map(|(n, t)| (n, k8s_openapi::ByteString(t.into_bytes())))
            .collect();
        let secret = |data: &BTreeMap<String, k8s_openapi::ByteString>| Secret {
            data: Some(data.clone()),
            ..Secret::default()
        };
        let t = Duration::from_secs(1);
        let url = "https://foo-scheduler.ns.svc.cluster.local:8787";
        assert!(client_for(Some(&secret(&data)), "foo-tls", url, t).is_ok());
        let missing = client_for(None, "foo-tls", url, t).err().unwrap();
        assert_eq!(
            missing.to_string(),
            "scheduler API at https://foo-scheduler.ns.svc.cluster.local:8787 is unreachable: \
             the cluster uses TLS and its Secret foo-tls does not exist (yet): the operator has \
             no certificate to reach it with"
        );
        assert_eq!(missing.retry(), crate::error::Retry::Transient);
        data.insert(
            "ca.pem".into(),
            k8s_openapi::ByteString(b"not a certificate".to_vec()),
        );
        let err = client_for(Some(&secret(&data)), "foo-tls", url, t)
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "Secret foo-tls: the cluster's CA certificate cannot be used: no certificate in it"
        );
        assert_eq!(err.retry(), crate::error::Retry::Refused);
        data.remove("operator-key.pem");
        let err = client_for(Some(&secret(&data)), "foo-tls", url, t)
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "Secret foo-tls has no operator-key.pem");
    }
}
