//! The controller end to end, on a real etcd and two real kube-apiservers.
//!
//! Each test gets its own namespaces and its own controller process, which
//! serves only requests labelled for that test. Tekton is played by writing
//! PipelineRun status.

mod support;

use std::path::Path;
use std::time::Duration;

use kube::api::{DeleteParams, ListParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;

use internal_services::api::tekton::labels;
use support::controller::{ControllerOptions, ControllerProcess};
use support::fixtures::{Case, message_of, run_of};
use support::{ControlPlane, tekton};

const BINARY: &str = env!("CARGO_BIN_EXE_internal-services");
const PIPELINE: &str = "internal-system-abc-pipeline";
const DIGEST: &str = "sha256:dd517544390c4c9636a555081205115a2fd3e83c326e64026f17f391e24bd2e5";
const WAIT: Duration = Duration::from_secs(30);

/// A case with a config allowing `allowed` (unless `None`), the Pipeline, and
/// a running controller.
async fn world(
    name: &str,
    allowed: Option<&[&str]>,
    debug: bool,
) -> (Case, Vec<String>, ControllerProcess) {
    world_with_policies(name, allowed, debug, None).await
}

async fn world_with_policies(
    name: &str,
    allowed: Option<&[&str]>,
    debug: bool,
    policies: Option<&Path>,
) -> (Case, Vec<String>, ControllerProcess) {
    let plane = ControlPlane::shared();
    let case = Case::new(plane, name).await;

    let mut namespaces = Vec::new();
    for suffix in allowed.unwrap_or(&[]) {
        namespaces.push(case.remote_namespace(suffix).await);
    }
    if allowed.is_some() {
        let list: Vec<&str> = namespaces.iter().map(String::as_str).collect();
        case.create_config(&list, debug).await;
    }
    case.create_pipeline(PIPELINE).await;

    let mut options = ControllerOptions::new(Path::new(BINARY), &case.namespace);
    options.request_selector = Some(case.selector());
    if let Some(dir) = policies {
        options.policies = dir.to_owned();
    }
    let controller = ControllerProcess::start(plane, options);
    (case, namespaces, controller)
}

async fn assert_no_runs(case: &Case) {
    let runs = case
        .runs()
        .list(&ListParams::default())
        .await
        .expect("list runs");
    assert!(
        runs.items.is_empty(),
        "unexpected runs: {:?}",
        runs.items
            .iter()
            .map(|r| &r.metadata.name)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn admitted_request_runs_and_relays_success_with_results() {
    let (case, namespaces, _controller) = world("success", Some(&["team"]), false).await;
    let team = &namespaces[0];
    case.create_request(
        team,
        "release-1",
        PIPELINE,
        &[("foo", "quay.io/x:1"), ("bar", DIGEST)],
    )
    .await;

    let running = case.wait_for_reason(team, "release-1", "Running").await;
    let status = running.status.clone().unwrap();
    let run_ref = status.pipeline_run.clone().expect("status.pipelineRun");
    let (run_ns, run_name) = run_ref.split_once('/').unwrap();
    assert_eq!(run_ns, case.namespace);
    assert!(status.start_time.is_some());

    let run = tekton::wait_for_run(&case.runs(), run_name, WAIT).await;
    assert_eq!(
        run.spec.pipeline_ref.as_ref().unwrap().name.as_deref(),
        Some(PIPELINE)
    );
    let params: Vec<(&str, &serde_json::Value)> = run
        .spec
        .params
        .iter()
        .map(|p| (p.name.as_str(), &p.value))
        .collect();
    assert_eq!(
        params,
        vec![("bar", &json!(DIGEST)), ("foo", &json!("quay.io/x:1"))]
    );
    assert_eq!(run.label(labels::REQUEST_NAME), Some("release-1"));
    assert_eq!(run.label(labels::REQUEST_NAMESPACE), Some(team.as_str()));
    assert_eq!(run.spec.workspaces[0]["name"], "workspace");

    tekton::start_run(&case.runs(), run_name).await;
    let results = json!({ "result": "checked quay.io/x:1", "urls": ["a", "b"] });
    tekton::finish_run(
        &case.runs(),
        run_name,
        true,
        "All Tasks have completed executing",
        results,
    )
    .await;

    let done = case.wait_for_reason(team, "release-1", "Succeeded").await;
    let status = done.status.unwrap();
    assert_eq!(status.results["result"], "checked quay.io/x:1");
    assert_eq!(status.results["urls"], r#"["a","b"]"#);
    assert!(status.completion_time.is_some());
    assert_eq!(status.succeeded().unwrap().status, "True");

    let uid = run.metadata.uid.clone().unwrap();
    tokio::time::timeout(
        WAIT,
        await_condition(case.runs(), run_name, conditions::is_deleted(&uid)),
    )
    .await
    .expect("finished run deleted")
    .unwrap();
}

#[tokio::test]
async fn failed_run_relays_message_and_results() {
    let (case, namespaces, _controller) = world("failure", Some(&["team"]), false).await;
    let team = &namespaces[0];
    case.create_request(team, "release-2", PIPELINE, &[]).await;

    let running = case.wait_for_reason(team, "release-2", "Running").await;
    let run_ref = running.status.unwrap().pipeline_run.unwrap();
    let run_name = run_ref.split_once('/').unwrap().1;
    tekton::wait_for_run(&case.runs(), run_name, WAIT).await;
    let message = "Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 0";
    tekton::finish_run(
        &case.runs(),
        run_name,
        false,
        message,
        json!({ "error": "signing key expired" }),
    )
    .await;

    let done = case.wait_for_reason(team, "release-2", "Failed").await;
    assert_eq!(message_of(&done), message);
    assert_eq!(done.status.unwrap().results["error"], "signing key expired");
}

#[tokio::test]
async fn rejects_namespace_not_on_allow_list() {
    let (case, _namespaces, _controller) = world("not-allowed", Some(&["team"]), false).await;
    let stranger = case.remote_namespace("stranger").await;
    case.create_request(&stranger, "sneaky", PIPELINE, &[])
        .await;

    let rejected = case.wait_for_reason(&stranger, "sneaky", "Rejected").await;
    let message = message_of(&rejected);
    assert!(
        message.contains(&format!("namespace '{stranger}' is not on the allow-list")),
        "{message}"
    );
    assert_no_runs(&case).await;
}

#[tokio::test]
async fn rejects_every_request_when_config_is_missing() {
    let (case, _namespaces, _controller) = world("no-config", None, false).await;
    let team = case.remote_namespace("team").await;
    case.create_request(&team, "early", PIPELINE, &[]).await;

    let rejected = case.wait_for_reason(&team, "early", "Rejected").await;
    let message = message_of(&rejected);
    assert!(
        message.contains("no InternalServicesConfig named 'config'"),
        "{message}"
    );
    assert!(message.contains(&case.namespace), "{message}");
    assert_no_runs(&case).await;
}

#[tokio::test]
async fn rejects_request_for_pipeline_that_does_not_exist() {
    let (case, namespaces, _controller) = world("no-pipeline", Some(&["team"]), false).await;
    let team = &namespaces[0];
    case.create_request(team, "typo", "no-such-pipeline", &[])
        .await;

    let rejected = case.wait_for_reason(team, "typo", "Rejected").await;
    let message = message_of(&rejected);
    assert!(
        message.contains("Pipeline 'no-such-pipeline' does not exist"),
        "{message}"
    );
    assert_no_runs(&case).await;
}

#[tokio::test]
async fn parameter_policy_rejection_names_the_parameter() {
    let (case, namespaces, _controller) = world("bad-param", Some(&["team"]), false).await;
    let team = &namespaces[0];
    case.create_request(team, "short-digest", PIPELINE, &[("bar", "sha256:dd51")])
        .await;

    let rejected = case.wait_for_reason(team, "short-digest", "Rejected").await;
    let message = message_of(&rejected);
    assert!(message.contains("20-digest-params.rhai"), "{message}");
    assert!(message.contains("parameter 'bar'"), "{message}");
    assert_no_runs(&case).await;
}

#[tokio::test]
async fn debug_config_keeps_the_finished_run() {
    let (case, namespaces, _controller) = world("debug", Some(&["team"]), true).await;
    let team = &namespaces[0];
    case.create_request(team, "kept", PIPELINE, &[]).await;

    let running = case.wait_for_reason(team, "kept", "Running").await;
    let run_name = run_of(&running);
    tekton::wait_for_run(&case.runs(), &run_name, WAIT).await;
    tekton::finish_run(&case.runs(), &run_name, true, "done", json!({})).await;
    case.wait_for_reason(team, "kept", "Succeeded").await;

    // The run is deleted right after the outcome is written when debug is
    // off; give the controller ample time to (wrongly) do so.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        case.runs().get_opt(&run_name).await.unwrap().is_some(),
        "debug run was deleted"
    );
}

#[tokio::test]
async fn allowing_script_cannot_admit_a_namespace_off_the_allow_list() {
    let policies = tempfile::tempdir().unwrap();
    let script = "fn admit(request, config) { allow() }";
    std::fs::write(policies.path().join("00-allow-everything.rhai"), script).unwrap();

    let (case, _namespaces, _controller) = world_with_policies(
        "hostile-allow",
        Some(&["team"]),
        false,
        Some(policies.path()),
    )
    .await;
    let stranger = case.remote_namespace("stranger").await;
    case.create_request(&stranger, "sneaky", PIPELINE, &[])
        .await;

    let rejected = case.wait_for_reason(&stranger, "sneaky", "Rejected").await;
    assert!(message_of(&rejected).contains("is not on the allow-list"));
    assert_no_runs(&case).await;
}

#[tokio::test]
async fn run_deleted_by_someone_else_fails_the_request() {
    let (case, namespaces, _controller) = world("run-deleted", Some(&["team"]), false).await;
    let team = &namespaces[0];
    case.create_request(team, "orphan", PIPELINE, &[]).await;

    let running = case.wait_for_reason(team, "orphan", "Running").await;
    let run_name = run_of(&running);
    tekton::wait_for_run(&case.runs(), &run_name, WAIT).await;
    case.runs()
        .delete(&run_name, &DeleteParams::default())
        .await
        .unwrap();

    let failed = case.wait_for_reason(team, "orphan", "Failed").await;
    assert!(
        message_of(&failed).contains("was deleted before it finished"),
        "{}",
        message_of(&failed)
    );
}

#[tokio::test]
async fn a_run_the_internal_cluster_refuses_rejects_the_request() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    use kube::api::{Api, PostParams};

    let (case, namespaces, _controller) = world("refused", Some(&["team"]), false).await;
    let team = &namespaces[0];

    // Stands in for Tekton's admission webhook refusing a run.
    let policy_name = format!("{}-refuse", case.id);
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": { "name": policy_name },
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": { "resourceRules": [{
                "apiGroups": ["tekton.dev"], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["pipelineruns"],
            }]},
            "validations": [{
                "expression": "!has(object.spec.params) || !object.spec.params.exists(p, p.name == 'refuse')",
                "message": "parameter 'refuse' is not allowed by the webhook",
            }],
        },
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": { "name": policy_name },
        "spec": {
            "policyName": policy_name,
            "validationActions": ["Deny"],
            "matchResources": { "namespaceSelector": { "matchLabels": {
                "kubernetes.io/metadata.name": case.namespace,
            }}},
        },
    }))
    .unwrap();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(case.internal.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(case.internal.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    // The policy takes a moment to be enforced; retry with new requests.
    for attempt in 0..50 {
        let name = format!("refused-{attempt}");
        case.create_request(team, &name, PIPELINE, &[("refuse", "yes")])
            .await;
        let api = case.requests(team);
        let decided = |r: Option<&internal_services::api::InternalRequest>| {
            matches!(
                support::fixtures::reason_of(r).as_deref(),
                Some("Running" | "Rejected")
            )
        };
        let request = tokio::time::timeout(WAIT, await_condition(api, &name, decided))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let message = message_of(&request);
        if message.contains("refused the PipelineRun") {
            assert!(
                message.contains("parameter 'refuse' is not allowed by the webhook"),
                "{message}"
            );
            assert_eq!(
                request.status.unwrap().admission.unwrap().decided_by,
                "internal-cluster"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the refused run never rejected a request");
}
