//! The parts of Tekton's `tekton.dev/v1` API this controller uses.
//!
//! Only the fields we write or read are typed; everything else Tekton adds is
//! ignored when reading. Result values may be strings, arrays or objects.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Tekton Pipeline; only its existence matters to us.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(group = "tekton.dev", version = "v1", kind = "Pipeline", namespaced)]
pub struct PipelineSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A Tekton PipelineRun as this controller creates and watches it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "tekton.dev",
    version = "v1",
    kind = "PipelineRun",
    namespaced,
    status = "PipelineRunStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRunSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_ref: Option<PipelineRef>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<serde_json::Value>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_run_template: Option<TaskRunTemplate>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<crate::api::request::Timeouts>,

    /// `Cancelled` (and its variants) asks Tekton to stop the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PipelineRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Param {
    pub name: String,
    pub value: serde_json::Value,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskRunTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRunStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<RunCondition>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<RunResult>,
}

/// Knative-style condition as Tekton writes it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct RunResult {
    pub name: String,
    pub value: serde_json::Value,
}

/// The labels linking a run back to its remote request.
pub mod labels {
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const MANAGED_BY_VALUE: &str = "internal-services";
    pub const REQUEST_NAME: &str = "internal-services.appstudio.openshift.io/request-name";
    pub const REQUEST_NAMESPACE: &str =
        "internal-services.appstudio.openshift.io/request-namespace";
    pub const REQUEST_UID: &str = "internal-services.appstudio.openshift.io/request-uid";
    pub const REMOTE_CLUSTER: &str = "internal-services.appstudio.openshift.io/remote-cluster";
}

/// Annotations carrying values that may not fit in a label.
pub mod annotations {
    pub const REQUEST: &str = "internal-services.appstudio.openshift.io/request";
    /// A hash of what the run was created to run (its pipelineRef and
    /// params), to notice when someone else changes them.
    pub const SPEC_HASH: &str = "internal-services.appstudio.openshift.io/spec-hash";
}

impl PipelineRun {
    /// Convenience accessor for the labels map.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(key))
            .map(String::as_str)
    }
}
