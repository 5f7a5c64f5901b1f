//! A stand-in for Tekton, for tests and the demo only: no Tekton controller
//! runs here, so finishing a PipelineRun means writing its status exactly
//! as Tekton would (the `Succeeded` condition, completion time, results).

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use serde_json::{Value, json};

use internal_services::api::PipelineRun;

/// Waits until a run named `name` exists; returns it.
pub async fn wait_for_run(runs: &Api<PipelineRun>, name: &str, timeout: Duration) -> PipelineRun {
    let exists = |run: Option<&PipelineRun>| run.is_some();
    let found = tokio::time::timeout(timeout, await_condition(runs.clone(), name, exists))
        .await
        .unwrap_or_else(|_| panic!("PipelineRun {name} not created within {timeout:?}"))
        .expect("watch PipelineRun");
    found.expect("PipelineRun")
}

/// Writes a finished status on a run, as Tekton does when the run ends.
pub async fn finish_run(
    runs: &Api<PipelineRun>,
    name: &str,
    succeeded: bool,
    message: &str,
    results: Value,
) {
    let (status, reason) = match succeeded {
        true => ("True", "Succeeded"),
        false => ("False", "Failed"),
    };
    let results: Vec<Value> = results
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| json!({ "name": k, "value": v }))
                .collect()
        })
        .unwrap_or_default();
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let patch = json!({ "status": {
        "startTime": now,
        "completionTime": now,
        "conditions": [{
            "type": "Succeeded",
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now,
        }],
        "results": results,
    }});
    runs.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|err| panic!("play Tekton: finish {name}: {err}"));
}

/// Marks a run as started, as Tekton does when it picks a run up.
pub async fn start_run(runs: &Api<PipelineRun>, name: &str) {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let patch = json!({ "status": {
        "startTime": now,
        "conditions": [{
            "type": "Succeeded",
            "status": "Unknown",
            "reason": "Running",
            "message": "Tasks Completed: 0 (Failed: 0, Cancelled 0), Incomplete: 1, Skipped: 0",
            "lastTransitionTime": now,
        }],
    }});
    runs.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|err| panic!("play Tekton: start {name}: {err}"));
}
