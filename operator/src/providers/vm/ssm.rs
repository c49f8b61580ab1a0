//! SSM Parameter Store, where an AWS cluster's TLS files live (see [`super::secrets`]): one
//! parameter per file, `/rask/{cluster}/tls/{file}`, private keys as SecureString, every one
//! tagged with the cluster. `up` puts them, each VM gets its own at boot with its instance
//! profile, and `down`, `sweep` and a failed `up` delete them with the cluster's other resources.

use std::time::Duration;

use aws_sdk_ssm::Client;
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::types::{ParameterStringFilter, ParameterType, Tag};

use super::aws_sdk::{AwsOptions, api_error};
use super::secrets::ssm_prefix;
use super::{Resource, TAG_CLUSTER, TAG_CREATED};
use crate::providers::ProviderError;

/// The kind of [`Resource`] a parameter is.
pub const PARAMETER: &str = "parameter";

/// GetParameters and DeleteParameters take at most this many names per call.
const BATCH: usize = 10;

/// A Parameter Store client for one region.
pub struct Parameters {
    client: Client,
    region: String,
    endpoint: String,
}

/// The cluster a parameter of ours belongs to: `/rask/{cluster}/tls/{file}`.
fn cluster_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("/rask/")?;
    let (cluster, rest) = rest.split_once('/')?;
    let file = rest.strip_prefix("tls/")?;
    (!cluster.is_empty() && !file.is_empty() && !file.contains('/')).then_some(cluster)
}

impl Parameters {
    /// A client from the SDK config the EC2 client uses, at `opts.ssm_endpoint_url` (else
    /// `opts.endpoint_url`, else the SDK's: `AWS_ENDPOINT_URL` or AWS's own for `region`).
    pub fn new(config: &aws_config::SdkConfig, region: &str, opts: &AwsOptions) -> Parameters {
        let mut builder = aws_sdk_ssm::config::Builder::from(config);
        let url = opts
            .ssm_endpoint_url
            .as_ref()
            .or(opts.endpoint_url.as_ref());
        if let Some(url) = url {
            builder = builder.endpoint_url(url);
        }
        Parameters {
            client: Client::from_conf(builder.build()),
            region: region.to_owned(),
            // What errors name: also an endpoint from the environment (`AWS_ENDPOINT_URL`).
            endpoint: url
                .map(String::as_str)
                .or(config.endpoint_url())
                .map(str::to_owned)
                .unwrap_or_else(|| format!("https://ssm.{region}.amazonaws.com")),
        }
    }

    /// A client on its own (on a VM, with the instance profile's credentials).
    pub async fn connect(region: &str, opts: &AwsOptions) -> Parameters {
        let config = super::aws_sdk::sdk_config(region, opts).await;
        Parameters::new(&config, region, opts)
    }

    fn err<E, R>(&self, action: &str, e: SdkError<E, R>) -> ProviderError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        api_error(
            &format!("{action} (SSM Parameter Store, {})", self.region),
            e,
            &self.endpoint,
        )
    }

    /// Puts one file of `cluster`; `secure` ones (private keys) as SecureString. Never
    /// overwrites: `up` refuses a cluster that still has parameters.
    pub async fn put(
        &self,
        cluster: &str,
        file: &str,
        value: &str,
        secure: bool,
    ) -> Result<Resource, ProviderError> {
        let name = format!("{}/{file}", ssm_prefix(cluster));
        let now = crate::clock::now() as u64;
        self.client
            .put_parameter()
            .name(&name)
            .value(value)
            .description(format!("rask cluster {cluster}: TLS {file}"))
            .r#type(if secure {
                ParameterType::SecureString
            } else {
                ParameterType::String
            })
            .overwrite(false)
            .tags(
                Tag::builder()
                    .key(TAG_CLUSTER)
                    .value(cluster)
                    .build()
                    .map_err(|e| ProviderError::Other(format!("tag of parameter {name}: {e}")))?,
            )
            .tags(
                Tag::builder()
                    .key(TAG_CREATED)
                    .value(now.to_string())
                    .build()
                    .map_err(|e| ProviderError::Other(format!("tag of parameter {name}: {e}")))?,
            )
            .send()
            .await
            .map_err(|e| self.err(&format!("PutParameter {name}"), e))?;
        Ok(Resource {
            kind: PARAMETER,
            id: name,
            cluster: cluster.to_owned(),
            created: Some(now),
        })
    }

    /// The values of the parameters named, decrypted, and the names that do not exist.
    pub async fn get(
        &self,
        names: &[String],
    ) -> Result<(Vec<(String, String)>, Vec<String>), ProviderError> {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for chunk in names.chunks(BATCH) {
            let out = self
                .client
                .get_parameters()
                .set_names(Some(chunk.to_vec()))
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| self.err(&format!("GetParameters {}", chunk.join(", ")), e))?;
            for p in out.parameters() {
                if let (Some(n), Some(v)) = (p.name(), p.value()) {
                    found.push((n.to_owned(), v.to_owned()));
                }
            }
            missing.extend(out.invalid_parameters().iter().cloned());
        }
        Ok((found, missing))
    }

    /// Our parameters: of `cluster`, or of every cluster.
    pub async fn list(&self, cluster: Option<&str>) -> Result<Vec<Resource>, ProviderError> {
        let path = match cluster {
            Some(c) => ssm_prefix(c),
            None => "/rask".to_owned(),
        };
        let filter = ParameterStringFilter::builder()
            .key("Path")
            .option("Recursive")
            .values(&path)
            .build()
            .map_err(|e| ProviderError::Other(format!("parameter filter {path}: {e}")))?;
        let mut pages = self
            .client
            .describe_parameters()
            .parameter_filters(filter)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err(&format!("DescribeParameters {path}/"), e))?;
            for p in page.parameters() {
                let Some(name) = p.name() else { continue };
                let Some(c) = cluster_of(name) else { continue };
                if cluster.is_some_and(|want| want != c) {
                    continue;
                }
                out.push(Resource {
                    kind: PARAMETER,
                    id: name.to_owned(),
                    cluster: c.to_owned(),
                    created: p.last_modified_date().map(|d| d.secs().max(0) as u64),
                });
            }
        }
        Ok(out)
    }

    /// Deletes the parameters named; those already gone count as deleted.
    pub async fn delete(&self, names: &[String]) -> Result<(), ProviderError> {
        for chunk in names.chunks(BATCH) {
            self.client
                .delete_parameters()
                .set_names(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| self.err(&format!("DeleteParameters {}", chunk.join(", ")), e))?;
        }
        Ok(())
    }

    /// The values of `names`, waiting up to `wait` for those not there yet (`up` stores the
    /// scheduler's once its VM runs). Polls every `poll`.
    pub async fn wait_for(
        &self,
        names: &[String],
        wait: Duration,
        poll: Duration,
    ) -> Result<Vec<(String, String)>, ProviderError> {
        let start = std::time::Instant::now();
        loop {
            let (found, missing) = self.get(names).await?;
            if missing.is_empty() {
                return Ok(found);
            }
            if wait.is_zero() {
                return Err(ProviderError::Other(format!(
                    "SSM Parameter Store ({}) has no parameters {}: is the cluster up, with \
                     TLS, and is the prefix /rask/CLUSTER/tls?",
                    self.region,
                    missing.join(", ")
                )));
            }
            if start.elapsed() >= wait {
                return Err(ProviderError::Timeout {
                    what: format!(
                        "parameters {} appearing in SSM Parameter Store ({})",
                        missing.join(", "),
                        self.region
                    ),
                    after: wait,
                    boot_log: None,
                });
            }
            tokio::time::sleep(poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_parameters_of_our_layout_belong_to_a_cluster() {
        assert_eq!(cluster_of("/rask/demo/tls/ca.pem"), Some("demo"));
        assert_eq!(cluster_of("/rask/demo/tls/worker-key.pem"), Some("demo"));
        for other in [
            "/rask/demo/other/ca.pem",
            "/rask/demo/tls/",
            "/rask//tls/ca.pem",
            "/rask/demo/tls/a/b",
            "/other/demo/tls/ca.pem",
            "rask/demo/tls/ca.pem",
        ] {
            assert_eq!(cluster_of(other), None, "{other}");
        }
    }
}
