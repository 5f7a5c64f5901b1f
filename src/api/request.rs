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
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self == oldSelf",
    "message": "spec is immutable: create a new InternalRequest instead"
}]))]
pub struct InternalRequestSpec {
    /// Name of the Tekton Pipeline to run; it must exist in the controller's namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request: String,

    /// Upstream's resolver form, instead of `request`: a Tekton resolver
    /// reference. Admitted only when a policy defines `admit_resolver`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineSource>,

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

/// Where a resolver-form request's Pipeline comes from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSource {
    pub pipeline_ref: ResolverRef,
}

/// A Tekton resolver reference, such as the git resolver with `url`,
/// `revision` and `pathInRepo` parameters.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ResolverRef {
    pub resolver: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ResolverParam>,
}

/// One resolver parameter.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ResolverParam {
    pub name: String,
    pub value: String,
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

    /// Which policies decided admission, so an auditor can tell which rules
    /// admitted or rejected the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<AdmissionRecord>,

    /// The request's generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The policy set and rule behind an admission decision.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRecord {
    /// Content hash of the policy set that was in effect (`sha256:...`).
    pub policy_set: String,
    /// The deciding rule: a core rule, a policy file, or `all policies`.
    pub decided_by: String,
    /// Warnings from policies, including denials of policies in audit mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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

impl InternalRequestSpec {
    /// The resolver reference, when the request uses the resolver form.
    pub fn resolver(&self) -> Option<&ResolverRef> {
        self.pipeline.as_ref().map(|p| &p.pipeline_ref)
    }

    /// What the request asks to run, for messages and logs.
    pub fn pipeline_description(&self) -> String {
        match self.resolver() {
            Some(r) => {
                let url = r
                    .params
                    .iter()
                    .find(|p| p.name == "url")
                    .map(|p| p.value.as_str());
                format!("{} resolver {}", r.resolver, url.unwrap_or("(no url)"))
            }
            None => self.request.clone(),
        }
    }
}

impl InternalRequest {
    /// The request's status, or an empty one when none was written yet.
    pub fn status_or_default(&self) -> InternalRequestStatus {
        self.status.clone().unwrap_or_default()
    }
}
