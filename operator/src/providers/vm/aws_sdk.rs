//! What the AWS providers share of the SDK: how to reach AWS ([`AwsOptions`], [`sdk_config`])
//! and how a failed call reads ([`api_error`]), for EC2 ([`super::aws`]) and SSM Parameter
//! Store ([`super::ssm`]) alike.

use std::time::Duration;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

use crate::providers::ProviderError;
use crate::providers::error::summary;

pub(super) const PROVIDER: &str = "aws";

/// How to reach EC2 besides the config: tests point it at an emulator with static credentials.
#[derive(Clone, Debug, Default)]
pub struct AwsOptions {
    pub endpoint_url: Option<String>,
    /// (access key id, secret access key); default: the SDK's credential chain.
    pub static_credentials: Option<(String, String)>,
    /// Attempts per call, throttling retries included (default 3, the SDK's standard mode).
    pub max_attempts: Option<u32>,
    /// SSM Parameter Store's endpoint, when not `endpoint_url`'s.
    pub ssm_endpoint_url: Option<String>,
}

pub(super) fn api_error<E, R>(action: &str, e: SdkError<E, R>, endpoint: &str) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let Some(code) = e.code().map(str::to_owned) else {
        tracing::debug!(action, error = ?e, "EC2 call failed before EC2 answered");
        let reason = summary(&e);
        if reason.contains("credentials") {
            return no_credentials(&reason);
        }
        return ProviderError::Unreachable {
            provider: PROVIDER,
            action: action.to_owned(),
            endpoint: endpoint.to_owned(),
            reason,
        };
    };
    let message = e.message().unwrap_or_default().to_owned();
    let action = action.to_owned();
    match code.as_str() {
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" => ProviderError::Throttled {
            provider: PROVIDER,
            action,
            code,
            message,
        },
        "InsufficientInstanceCapacity"
        | "InsufficientCapacity"
        | "InsufficientHostCapacity"
        | "InsufficientReservedInstanceCapacity"
        | "InstanceLimitExceeded"
        | "VcpuLimitExceeded"
        | "MaxSpotInstanceCountExceeded"
        | "SpotMaxPriceTooLow"
        | "InsufficientFreeAddressesInSubnet" => ProviderError::Capacity {
            provider: PROVIDER,
            what: String::new(),
            action,
            code,
            message,
        },
        "UnauthorizedOperation"
        | "AuthFailure"
        | "InvalidClientTokenId"
        | "Blocked"
        | "AccessDeniedException" => ProviderError::Unauthorized {
            provider: PROVIDER,
            action,
            code,
            message,
        },
        _ => ProviderError::Api {
            provider: PROVIDER,
            action,
            code,
            message,
        },
    }
}

/// The SDK's default chain found nothing: say where it looked, what the last source said, and
/// what to set.
fn no_credentials(reason: &str) -> ProviderError {
    let last = reason.rsplit(": ").next().unwrap_or(reason);
    ProviderError::NoCredentials {
        provider: PROVIDER,
        tried: vec![
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY".into(),
            "the profile AWS_PROFILE (or `default`) in ~/.aws/config and ~/.aws/credentials, \
             SSO included"
                .into(),
            "a web identity token (AWS_WEB_IDENTITY_TOKEN_FILE)".into(),
            "container credentials (ECS)".into(),
            format!("the EC2 instance metadata service ({last})"),
        ],
        hint: "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE naming a profile \
               (`aws configure`, `aws sso login`); on an EC2 VM give it an instance profile. \
               RUST_LOG=debug shows the SDK's full error"
            .into(),
    }
}

/// The SDK's settings for `region`: its credential chain (or the static credentials of `opts`),
/// bounded retries and timeouts, and `opts.endpoint_url` when set.
pub(super) async fn sdk_config(region: &str, opts: &AwsOptions) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_owned()))
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(opts.max_attempts.unwrap_or(3)),
        )
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        );
    if let Some(url) = &opts.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some((id, secret)) = &opts.static_credentials {
        loader = loader.credentials_provider(aws_sdk_ec2::config::Credentials::new(
            id,
            secret,
            None,
            None,
            "rask-static",
        ));
    }
    loader.load().await
}
