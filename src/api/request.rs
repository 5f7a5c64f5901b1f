//! `InternalRequest`: what a remote pipeline asks the private cluster to run.
//!
//! The status is wire-compatible with the clients that already wait on
//! requests: one condition of type `Succeeded` whose reason is one of
//! [`reasons`], `status.pipelineRun` as `namespace/name`, and string
//! `status.results`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition type carried by every request that has been looked at.
pub const CONDITION_SUCCEEDED: &str = "Succeeded";

/// Reasons of the `Succeeded` condition, as existing clients read them.
pub mod reasons {
    /// The PipelineRun exists and has not finished.
    pub const RUNNING: &str = "Running";
    /// The PipelineRun finished successfully.
    pub const SUCCEEDED: &str = "Succeeded";
    /// The PipelineRun finished unsuccessfully, or vanished before finishing.
    pub const FAILED: &str = "Failed";
    /// The request was never run: admission said no.
    pub const REJECTED: &str = "Rejected";
}

/// What a remote pipeline asks for.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "appstudio.redhat.com",
    version = "v1alpha1",
    kind = "InternalRequest",
    namespaced,
    status = "InternalRequestStatus",
    shortname = "ir",
    printcolumn = r#"{"name":"Succeeded","type":"string","jsonPath":".status.conditions[?(@.type==\"Succeeded\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Succeeded\")].reason"}"#,
    printcolumn = r#"{"name":"PipelineRun","type":"string","jsonPath":".status.pipelineRun","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct InternalRequestSpec {
    /// Name of the Tekton Pipeline to run; it must exist in the controller's namespace.
    #[serde(default)]
    pub request: String,

    /// String parameters handed to the Pipeline, one per entry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,

    /// Timeouts copied to the PipelineRun (Go duration strings such as `1h30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,

    /// Service account the PipelineRun's tasks run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// Tekton's three PipelineRun timeouts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finally: Option<String>,
}

/// Progress and outcome, written only by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InternalRequestStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// The PipelineRun that serves this request, as `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_run: Option<String>,

    /// The PipelineRun's results; values that are not strings are JSON-encoded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub results: BTreeMap<String, String>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl InternalRequestStatus {
    /// The `Succeeded` condition, if any has been written.
    pub fn succeeded(&self) -> Option<&Condition> {
        self.conditions
            .iter()
            .find(|c| c.type_ == CONDITION_SUCCEEDED)
    }

    /// True once the request has an outcome that will never change.
    pub fn is_terminal(&self) -> bool {
        self.succeeded()
            .is_some_and(|c| c.reason != reasons::RUNNING)
    }
}

impl InternalRequest {
    /// The request's status, or an empty one when none was written yet.
    pub fn status_or_default(&self) -> InternalRequestStatus {
        self.status.clone().unwrap_or_default()
    }
}
