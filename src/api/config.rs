//! `InternalServicesConfig`: the allow-list and run settings, one per
//! controller namespace, always named `config`.

use std::time::Duration;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The controller's settings.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "appstudio.redhat.com",
    version = "v1alpha1",
    kind = "InternalServicesConfig",
    namespaced,
    shortname = "isc",
    printcolumn = r#"{"name":"Debug","type":"boolean","jsonPath":".spec.debug"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct InternalServicesConfigSpec {
    /// Remote namespaces whose requests may run; exact names.
    #[serde(default)]
    pub allow_list: Vec<String>,

    /// Keep completed PipelineRuns instead of deleting them.
    #[serde(default)]
    pub debug: bool,

    /// The volume claim template backing each run's workspace.
    #[serde(default)]
    pub volume_claim: VolumeClaim,

    /// Repository URLs that resolver-form requests may load Pipelines from;
    /// read by the shipped git-resolver policy.
    #[serde(
        default,
        rename = "allowedGitResolverURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allowed_git_resolver_urls: Vec<String>,

    /// How long a completed request stays on the remote cluster before the
    /// controller deletes it, such as `24h` or `30m`; unset keeps requests.
    #[serde(
        default,
        rename = "completedRequestTTL",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h))+$"))]
    pub completed_request_ttl: Option<String>,
}

/// Workspace volume settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeClaim {
    /// Name of the Pipeline's workspace that the volume backs.
    #[serde(default = "default_volume_name")]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub name: String,

    /// Storage requested per run, such as `1Gi` or `500Mi`.
    #[serde(default = "default_volume_size")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub size: String,
}

impl Default for VolumeClaim {
    fn default() -> Self {
        Self {
            name: default_volume_name(),
            size: default_volume_size(),
        }
    }
}

fn default_volume_name() -> String {
    "workspace".to_owned()
}

fn default_volume_size() -> String {
    "1Gi".to_owned()
}

impl InternalServicesConfigSpec {
    /// Whether requests from `namespace` may run at all.
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.allow_list.iter().any(|allowed| allowed == namespace)
    }

    /// The time-to-live of completed requests, when one is set and valid.
    /// The CRD's pattern refuses invalid values, so `None` for one that
    /// slipped through only means requests are kept.
    pub fn completed_request_ttl(&self) -> Option<Duration> {
        crate::duration::parse(self.completed_request_ttl.as_deref()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_reads_go_style_durations() {
        let with = |ttl: &str| InternalServicesConfigSpec {
            completed_request_ttl: Some(ttl.to_owned()),
            ..Default::default()
        };
        assert_eq!(
            with("1h30m").completed_request_ttl(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(
            with("45s").completed_request_ttl(),
            Some(Duration::from_secs(45))
        );
        assert_eq!(with("soon").completed_request_ttl(), None);
        assert_eq!(
            InternalServicesConfigSpec::default().completed_request_ttl(),
            None
        );
    }
}
