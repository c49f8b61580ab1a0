//! One validated autoscaler for every backend: a DaskAutoscaler on Kubernetes or in a manifest
//! `up` runs locally, and the `autoscaling:` section of a VM or batch cluster's file all become
//! an [`AutoscalerSpec`] here, with the same checks and the same messages.

use std::time::Duration;

use crate::autoscaler::policy::Settings;

/// The names the bounds go by where they were written: `spec.minimum` in a DaskAutoscaler,
/// `autoscaling.minimum` in a cluster file.
#[derive(Clone, Copy, Debug)]
pub struct Keys<'a> {
    pub minimum: &'a str,
    pub maximum: &'a str,
    pub stabilization: &'a str,
}

impl Keys<'static> {
    /// A DaskAutoscaler's fields.
    pub const RESOURCE: Keys<'static> = Keys {
        minimum: "spec.minimum",
        maximum: "spec.maximum",
        stabilization: "spec.scaleDownStabilizationSeconds",
    };
    /// The `autoscaling:` section of a cluster file.
    pub const FILE: Keys<'static> = Keys {
        minimum: "autoscaling.minimum",
        maximum: "autoscaling.maximum",
        stabilization: "autoscaling.scale_down_stabilization_seconds",
    };
}

/// A bound that cannot be: the key at fault and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub key: String,
    /// Names the key itself: `spec.minimum (3) must be at least 0 and at most spec.maximum (2)`.
    pub message: String,
}

/// The bounds and damping of one worker group's autoscaler, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoscalerSpec {
    /// The worker group it scales.
    pub group: String,
    pub settings: Settings,
}

impl AutoscalerSpec {
    /// Checks the bounds as written (signed, as the CRD has them) and settles the defaults.
    pub fn validate(
        group: impl Into<String>,
        minimum: i64,
        maximum: i64,
        scale_down_stabilization_seconds: Option<i64>,
        keys: Keys<'_>,
    ) -> Result<AutoscalerSpec, Invalid> {
        if minimum < 0 || maximum < minimum {
            return Err(Invalid {
                key: keys.minimum.to_owned(),
                message: format!(
                    "{} ({minimum}) must be at least 0 and at most {} ({maximum})",
                    keys.minimum, keys.maximum
                ),
            });
        }
        let to_usize = |n: i64| usize::try_from(n).unwrap_or(usize::MAX);
        let mut settings = Settings::new(to_usize(minimum), to_usize(maximum));
        match scale_down_stabilization_seconds {
            Some(s) if s < 0 => {
                return Err(Invalid {
                    key: keys.stabilization.to_owned(),
                    message: format!("{} ({s}) must be at least 0", keys.stabilization),
                });
            }
            Some(s) => settings.down_window = Duration::from_secs(s.unsigned_abs()),
            None => {}
        }
        Ok(AutoscalerSpec {
            group: group.into(),
            settings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_window_are_checked_with_the_callers_names() {
        let ok = AutoscalerSpec::validate("g", 1, 4, Some(60), Keys::FILE).unwrap();
        assert_eq!(ok.settings.minimum, 1);
        assert_eq!(ok.settings.maximum, 4);
        assert_eq!(ok.settings.down_window, Duration::from_secs(60));
        let default = AutoscalerSpec::validate("g", 0, 0, None, Keys::RESOURCE).unwrap();
        assert_eq!(default.settings.down_window, Duration::from_secs(30));

        let cases = [
            (
                3,
                2,
                None,
                Keys::RESOURCE,
                "spec.minimum",
                "spec.minimum (3) must be at least 0 and at most spec.maximum (2)",
            ),
            (
                -1,
                2,
                None,
                Keys::RESOURCE,
                "spec.minimum",
                "spec.minimum (-1) must be at least 0 and at most spec.maximum (2)",
            ),
            (
                5,
                2,
                None,
                Keys::FILE,
                "autoscaling.minimum",
                "autoscaling.minimum (5) must be at least 0 and at most autoscaling.maximum (2)",
            ),
            (
                1,
                2,
                Some(-5),
                Keys::RESOURCE,
                "spec.scaleDownStabilizationSeconds",
                "spec.scaleDownStabilizationSeconds (-5) must be at least 0",
            ),
        ];
        for (min, max, window, keys, key, message) in cases {
            let e = AutoscalerSpec::validate("g", min, max, window, keys).unwrap_err();
            assert_eq!((e.key.as_str(), e.message.as_str()), (key, message));
        }
    }
}
