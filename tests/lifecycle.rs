//! A request's whole life on the real control plane: the finalizer, deletion
//! during a run, re-created requests, runs changed by someone else, the
//! config going away mid-flight, names of maximum length, and the
//! time-to-live of completed requests.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube::{Api, ResourceExt};
use serde_json::json;

use internal_services::api::{InternalRequest, PipelineRun};
use internal_services::controller::FINALIZER;
use support::controller::{ControllerOptions, ControllerProcess};
use support::fixtures::{Case, message_of, run_of};
use support::{ControlPlane, tekton};

const BINARY: &str = env!("CARGO_BIN_EXE_internal-services");
const PIPELINE: &str = "internal-system-abc-pipeline";
const DIGEST: &str = "sha256:dd517544390c4c9636a555081205115a2fd3e83c326e64026f17f391e24bd2e5";
const WAIT: Duration = Duration::from_secs(30);

/// A case whose config allows one remote namespace, with the Pipeline and a
/// controller; returns the case and that namespace.
async fn world(name: &str, extra_args: &[&str]) -> (Case, String, ControllerProcess) {
    let plane = ControlPlane::shared();
    let case = Case::new(plane, name).await;
    let team = case.remote_namespace("team").await;
    case.create_config(&[&team], false).await;
    case.create_pipeline(PIPELINE).await;

    let mut options = ControllerOptions::new(Path::new(BINARY), &case.namespace);
    options.request_selector = Some(case.selector());
    options.extra_args = extra_args.iter().map(|a| a.to_string()).collect();
    let controller = ControllerProcess::start(plane, options);
    (case, team, controller)
}

/// Creates a request and waits until it runs; returns the run's name.
async fn start(case: &Case, team: &str, name: &str) -> String {
    case.start(team, name, PIPELINE, &[("bar", DIGEST)]).await
}

async fn wait_run_deleted(case: &Case, name: &str) {
    let gone = |run: Option<&PipelineRun>| run.is_none();
    tokio::time::timeout(WAIT, await_condition(case.runs(), name, gone))
        .await
        .unwrap_or_else(|_| panic!("run {name} still exists"))
        .unwrap();
}

async fn wait_finalizers(api: &Api<InternalRequest>, name: &str, held: bool) -> InternalRequest {
    let matches = move |r: Option<&InternalRequest>| {
        r.is_some_and(|r| r.finalizers().iter().any(|f| f == FINALIZER) == held)
    };
    let found = tokio::time::timeout(WAIT, await_condition(api.clone(), name, matches))
        .await
        .unwrap_or_else(|_| panic!("finalizer on {name} did not become held={held}"))
        .unwrap();
    found.unwrap()
}

#[tokio::test]
async fn a_request_holds_the_finalizer_only_while_its_run_exists() {
    let (case, team, _controller) = world("finalizer-span", &[]).await;

    let run = start(&case, &team, "release").await;
    wait_finalizers(&case.requests(&team), "release", true).await;

    tekton::finish_run(&case.runs(), &run, true, "done", json!({})).await;
    case.wait_for_reason(&team, "release", "Succeeded").await;
    wait_run_deleted(&case, &run).await;
    wait_finalizers(&case.requests(&team), "release", false).await;

    let other = case.remote_namespace("other").await;
    case.create_request(&other, "rejected", PIPELINE, &[]).await;
    let rejected = case.wait_for_reason(&other, "rejected", "Rejected").await;
    assert!(
        rejected.finalizers().is_empty(),
        "{:?}",
        rejected.finalizers()
    );
}

#[tokio::test]
async fn deleting_a_running_request_cancels_its_run_then_lets_the_deletion_finish() {
    let (case, team, _controller) = world("delete-running", &[]).await;
    let run = start(&case, &team, "release").await;
    wait_finalizers(&case.requests(&team), "release", true).await;

    case.requests(&team)
        .delete("release", &DeleteParams::default())
        .await
        .unwrap();
    let cancelled =
        |r: Option<&PipelineRun>| r.is_some_and(|r| r.spec.status.as_deref() == Some("Cancelled"));
    tokio::time::timeout(WAIT, await_condition(case.runs(), &run, cancelled))
        .await
        .expect("run cancelled")
        .unwrap();
    assert!(
        case.requests(&team)
            .get_opt("release")
            .await
            .unwrap()
            .is_some(),
        "the request must stay until its run stopped"
    );

    tekton::finish_run(
        &case.runs(),
        &run,
        false,
        "PipelineRun cancelled",
        json!({}),
    )
    .await;
    case.wait_until_deleted(&team, "release", WAIT).await;
    wait_run_deleted(&case, &run).await;
}

#[tokio::test]
async fn a_cancelled_run_that_never_stops_is_deleted_after_the_grace_period() {
    let (case, team, _controller) = world("cancel-grace", &["--cancel-grace-period", "2s"]).await;
    let run = start(&case, &team, "release").await;
    wait_finalizers(&case.requests(&team), "release", true).await;

    case.requests(&team)
        .delete("release", &DeleteParams::default())
        .await
        .unwrap();
    case.wait_until_deleted(&team, "release", WAIT).await;
    wait_run_deleted(&case, &run).await;
}

#[tokio::test]
async fn a_recreated_request_gets_a_new_run_and_none_of_the_old_results() {
    let (case, team, _controller) = world("recreated", &[]).await;
    let first = start(&case, &team, "release").await;
    tekton::finish_run(
        &case.runs(),
        &first,
        true,
        "done",
        json!({ "version": "1" }),
    )
    .await;
    case.wait_for_reason(&team, "release", "Succeeded").await;
    wait_finalizers(&case.requests(&team), "release", false).await;

    case.requests(&team)
        .delete("release", &DeleteParams::default())
        .await
        .unwrap();
    case.wait_until_deleted(&team, "release", WAIT).await;

    let second = start(&case, &team, "release").await;
    assert_ne!(first, second, "a new request must get a new run");
    let running = case.requests(&team).get("release").await.unwrap();
    assert!(running.status.unwrap().results.is_empty());

    tekton::finish_run(
        &case.runs(),
        &second,
        true,
        "done",
        json!({ "version": "2" }),
    )
    .await;
    let done = case.wait_for_reason(&team, "release", "Succeeded").await;
    assert_eq!(done.status.unwrap().results["version"], "2");
}

#[tokio::test]
async fn a_run_changed_by_someone_else_fails_the_request() {
    let (case, team, _controller) = world("altered-run", &[]).await;
    let run = start(&case, &team, "release").await;

    let patch = json!({ "spec": { "params": [{ "name": "bar", "value": "sha256:other" }] } });
    case.runs()
        .patch(&run, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();

    let failed = case.wait_for_reason(&team, "release", "Failed").await;
    let message = message_of(&failed);
    assert!(message.contains("changed by someone else"), "{message}");
    assert!(message.contains("params"), "{message}");
}

#[tokio::test]
async fn the_spec_of_a_request_cannot_change_once_created() {
    let (case, team, _controller) = world("immutable", &[]).await;
    let run = start(&case, &team, "release").await;

    let patch = json!({ "spec": { "request": "other-pipeline", "params": { "bar": "x" } } });
    let refused = case
        .requests(&team)
        .patch("release", &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    match refused {
        Err(kube::Error::Api(e)) => assert!(e.message.contains("immutable"), "{}", e.message),
        other => panic!("the spec edit was not refused: {other:?}"),
    }

    tekton::finish_run(&case.runs(), &run, true, "done", json!({ "out": "real" })).await;
    let done = case.wait_for_reason(&team, "release", "Succeeded").await;
    assert_eq!(done.status.unwrap().results["out"], "real");
}

#[tokio::test]
async fn deleting_the_config_mid_flight_strands_nothing() {
    let (case, team, _controller) = world("config-deleted", &[]).await;
    let run = start(&case, &team, "in-flight").await;

    case.configs()
        .delete("config", &DeleteParams::default())
        .await
        .unwrap();
    let deleted = |c: Option<&internal_services::api::InternalServicesConfig>| c.is_none();
    await_condition(case.configs(), "config", deleted)
        .await
        .unwrap();

    tekton::finish_run(&case.runs(), &run, true, "done", json!({ "out": "x" })).await;
    let done = case.wait_for_reason(&team, "in-flight", "Succeeded").await;
    assert_eq!(done.status.unwrap().results["out"], "x");
    wait_run_deleted(&case, &run).await;

    case.create_request(&team, "after", PIPELINE, &[("bar", DIGEST)])
        .await;
    let rejected = case.wait_for_reason(&team, "after", "Rejected").await;
    let message = message_of(&rejected);
    assert!(message.contains("InternalServicesConfig"), "{message}");
    assert!(message.contains("config"), "{message}");
}

#[tokio::test]
async fn a_request_name_of_253_characters_runs_and_completes() {
    let (case, team, _controller) = world("longest-name", &[]).await;
    let segment = "a".repeat(62);
    let name = format!("{segment}.{segment}.{segment}.{segment}.b");
    assert_eq!(name.len(), 253);

    let run = start(&case, &team, &name).await;
    assert!(run.len() <= 63, "{run}");
    let created = case.runs().get(&run).await.unwrap();
    for value in created.labels().values() {
        assert!(value.len() <= 63, "label value {value}");
    }

    tekton::finish_run(&case.runs(), &run, true, "done", json!({})).await;
    case.wait_for_reason(&team, &name, "Succeeded").await;
    wait_run_deleted(&case, &run).await;
}

#[tokio::test]
async fn completed_requests_are_deleted_when_their_time_to_live_is_up() {
    let (case, team, _controller) = world("ttl", &[]).await;
    let patch = json!({ "spec": { "completedRequestTTL": "3s" } });
    case.configs()
        .patch("config", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();

    let run = start(&case, &team, "release").await;
    tekton::finish_run(&case.runs(), &run, true, "done", json!({})).await;
    case.wait_for_reason(&team, "release", "Succeeded").await;
    let completed = std::time::Instant::now();

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        case.requests(&team)
            .get_opt("release")
            .await
            .unwrap()
            .is_some(),
        "deleted before its time-to-live"
    );
    case.wait_until_deleted(&team, "release", WAIT).await;
    assert!(completed.elapsed() >= Duration::from_secs(2));

    let bad = json!({ "spec": { "completedRequestTTL": "soon" } });
    let refused = case
        .configs()
        .patch("config", &PatchParams::default(), &Patch::Merge(&bad))
        .await;
    assert!(
        refused.is_err(),
        "the CRD must refuse a TTL that is not a duration"
    );
}

#[tokio::test]
async fn malformed_requests_get_a_clear_status_and_the_watch_keeps_serving() {
    let (case, team, _controller) = world("malformed", &[]).await;

    let wrong_type = json!({
        "apiVersion": "appstudio.redhat.com/v1alpha1",
        "kind": "InternalRequest",
        "metadata": { "name": "wrong-type", "labels": { support::fixtures::CASE_LABEL: case.id } },
        "spec": { "request": PIPELINE, "params": { "bar": 5 } },
    });
    let resource = kube::discovery::ApiResource::erase::<InternalRequest>(&());
    let dynamic: Api<kube::api::DynamicObject> =
        Api::namespaced_with(case.remote.clone(), &team, &resource);
    let object: kube::api::DynamicObject = serde_json::from_value(wrong_type).unwrap();
    let refused = dynamic.create(&Default::default(), &object).await;
    assert!(
        refused.is_err(),
        "the CRD schema must refuse a number where a string belongs"
    );

    case.create_request(&team, "bad-name", "Not A Pipeline!", &[])
        .await;
    let oversize = "x".repeat(300 * 1024);
    case.create_request(
        &team,
        "oversize",
        PIPELINE,
        &[("bar", DIGEST), ("blob", oversize.as_str())],
    )
    .await;

    let bad_name = case.wait_for_reason(&team, "bad-name", "Rejected").await;
    assert!(
        message_of(&bad_name).contains("spec.request"),
        "{}",
        message_of(&bad_name)
    );
    let too_big = case.wait_for_reason(&team, "oversize", "Rejected").await;
    assert!(
        message_of(&too_big).contains("value of 'blob' has 307200 bytes"),
        "{}",
        message_of(&too_big)
    );

    let run = start(&case, &team, "good").await;
    tekton::finish_run(&case.runs(), &run, true, "done", json!({})).await;
    case.wait_for_reason(&team, "good", "Succeeded").await;
}

/// Counts the writes that change `name` as a watch reports them, until
/// `stop` is set: every create, update, patch and delete is one event.
fn count_writes<K>(
    api: Api<K>,
    name: &str,
) -> (tokio::task::JoinHandle<Vec<String>>, Arc<AtomicBool>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let params = kube::api::WatchParams::default().fields(&format!("metadata.name={name}"));
    let done = stop.clone();
    let task = tokio::spawn(async move {
        let mut kinds = Vec::new();
        let events = api.watch(&params, "0").await.expect("watch");
        futures::pin_mut!(events);
        loop {
            let next = tokio::time::timeout(Duration::from_millis(200), events.next()).await;
            match next {
                Ok(Some(Ok(kube::api::WatchEvent::Added(_)))) => kinds.push("added".to_owned()),
                Ok(Some(Ok(kube::api::WatchEvent::Modified(_)))) => {
                    kinds.push("modified".to_owned())
                }
                Ok(Some(Ok(kube::api::WatchEvent::Deleted(_)))) => kinds.push("deleted".to_owned()),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) if done.load(Ordering::Relaxed) => break,
                Err(_) => {}
            }
        }
        kinds
    });
    (task, stop)
}

#[tokio::test]
async fn a_request_lifecycle_costs_six_writes() {
    let (case, team, _controller) = world("writes", &[]).await;
    let (request_writes, stop_requests) = count_writes(case.requests(&team), "counted");

    case.create_request(&team, "counted", PIPELINE, &[("bar", DIGEST)])
        .await;
    let run = run_of(&case.wait_for_reason(&team, "counted", "Running").await);
    let (run_writes, stop_runs) = count_writes(case.runs(), &run);
    tokio::time::sleep(Duration::from_millis(300)).await;

    tekton::finish_run(&case.runs(), &run, true, "done", json!({})).await;
    wait_run_deleted(&case, &run).await;
    wait_finalizers(&case.requests(&team), "counted", false).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_requests.store(true, Ordering::Relaxed);
    stop_runs.store(true, Ordering::Relaxed);

    // On the request: our create, then the controller's finalizer, Running,
    // outcome and finalizer release.
    let request_writes = request_writes.await.unwrap();
    assert_eq!(
        request_writes,
        ["added", "modified", "modified", "modified", "modified"]
    );
    // On the run (watched from after its creation, so its create shows as
    // the initial "added"): Tekton's status, then the controller's delete.
    let run_writes = run_writes.await.unwrap();
    assert_eq!(run_writes, ["added", "modified", "deleted"]);
    eprintln!("controller writes per request: 4 on the request, 2 on the run (create, delete)");
}
