//! Restarts that must lose nothing: the controller killed with SIGKILL
//! again and again during a burst of requests, and the remote API server
//! stopped and started in the middle of a run.
//!
//! These tests stop processes of their own control plane, so they live in
//! a test binary of their own and run one after the other.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;

use internal_services::api::PipelineRun;
use internal_services::api::tekton::annotations;
use internal_services::controller::FINALIZER;
use internal_services::relay::{self, RunState};
use support::controller::{ControllerOptions, ControllerProcess};
use support::fixtures::{Case, reason_of, run_of};
use support::{ControlPlane, tekton};

const BINARY: &str = env!("CARGO_BIN_EXE_internal-services");
const PIPELINE: &str = "internal-system-abc-pipeline";
const DIGEST: &str = "sha256:dd517544390c4c9636a555081205115a2fd3e83c326e64026f17f391e24bd2e5";

/// Held by each test for its whole run: stopping the remote API server
/// must not disturb the other test.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs seen per request (`namespace/name`), as Tekton would see them.
type Seen = Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>;

fn controller(plane: &ControlPlane, case: &Case) -> ControllerProcess {
    let mut options = ControllerOptions::new(Path::new(BINARY), &case.namespace);
    options.request_selector = Some(case.selector());
    ControllerProcess::start(plane, options)
}

/// Whether the request named `name` is one whose run this Tekton fails.
fn should_fail(name: &str) -> bool {
    name.ends_with('0') || name.ends_with('7')
}

/// Plays Tekton for every run: records it, then finishes it a moment later,
/// failed or succeeded by its request's name, with the request's name as a
/// result.
async fn play_tekton(runs: Api<PipelineRun>, seen: Seen) {
    let finishing = Arc::new(Mutex::new(BTreeSet::new()));
    let events = watcher(runs.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        let Ok(run) = event else { continue };
        let Some(key) = run.annotations().get(annotations::REQUEST).cloned() else {
            continue;
        };
        let name = run.name_any();
        seen.lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .insert(name.clone());
        if relay::state(&run) != RunState::Running
            || !finishing.lock().unwrap().insert(name.clone())
        {
            continue;
        }

        let runs = runs.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let request = key.split_once('/').unwrap().1.to_owned();
            let succeeded = !should_fail(&request);
            let message = if succeeded { "done" } else { "a task failed" };
            tekton::finish_run(&runs, &name, succeeded, message, json!({ "echo": request })).await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_a_burst_loses_nothing_and_duplicates_nothing() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let plane = ControlPlane::shared();
    let case = Case::new(plane, "sigkill").await;
    let teams = [
        case.remote_namespace("a").await,
        case.remote_namespace("b").await,
    ];
    case.create_config(&[&teams[0], &teams[1]], false).await;
    case.create_pipeline(PIPELINE).await;

    let seen = Seen::default();
    let player = tokio::spawn(play_tekton(case.runs(), seen.clone()));
    let started = Instant::now();
    let mut current = controller(plane, &case);

    let requests: Vec<(String, String)> = (0..200)
        .map(|i| (teams[i % 2].clone(), format!("burst-{i:03}")))
        .collect();
    let creating = futures::stream::iter(requests.clone()).for_each_concurrent(16, |(ns, name)| {
        let case = &case;
        async move {
            case.create_request(&ns, &name, PIPELINE, &[("bar", DIGEST)])
                .await;
        }
    });
    let killing = async {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            current.kill_hard();
            current = controller(plane, &case);
        }
    };
    tokio::join!(creating, killing);

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut terminal = 0;
        for team in &teams {
            let list = case
                .requests(team)
                .list(&ListParams::default())
                .await
                .unwrap();
            terminal += list
                .items
                .iter()
                .filter(|r| matches!(reason_of(Some(r)).as_deref(), Some("Succeeded" | "Failed")))
                .count();
        }
        if terminal == requests.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {terminal} of 200 requests terminal after 180s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "200 requests terminal {:.1}s after the first was created, through 5 SIGKILLs",
        started.elapsed().as_secs_f64()
    );

    for (team, name) in &requests {
        let request = case.requests(team).get(name).await.unwrap();
        let expected = if should_fail(name) {
            "Failed"
        } else {
            "Succeeded"
        };
        assert_eq!(
            reason_of(Some(&request)).as_deref(),
            Some(expected),
            "{team}/{name}"
        );
        assert_eq!(
            request.status.as_ref().unwrap().results["echo"],
            *name,
            "{team}/{name}"
        );
    }

    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 200, "requests with a run");
        let duplicated: Vec<_> = seen.iter().filter(|(_, runs)| runs.len() > 1).collect();
        assert!(
            duplicated.is_empty(),
            "requests with more than one run: {duplicated:?}"
        );
    }

    // The shipped retention policy keeps failed runs for a day and deletes
    // successful ones at once; a request holds the finalizer while its run
    // is kept. So exactly the failed requests may have a run left.
    let failed: BTreeSet<String> = requests
        .iter()
        .filter(|(_, name)| should_fail(name))
        .map(|(team, name)| format!("{team}/{name}"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs: BTreeSet<String> = case
            .runs()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter_map(|r| r.annotations().get(annotations::REQUEST).cloned())
            .collect();
        let mut held = BTreeSet::new();
        for team in &teams {
            let list = case
                .requests(team)
                .list(&ListParams::default())
                .await
                .unwrap();
            held.extend(
                list.items
                    .iter()
                    .filter(|r| r.finalizers().iter().any(|f| f == FINALIZER))
                    .map(|r| format!("{team}/{}", r.name_any())),
            );
        }
        if runs == failed && held == failed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 60s, runs left for {} requests and finalizers on {}, expected {} failed ones; \
             unexpected runs: {:?}",
            runs.len(),
            held.len(),
            failed.len(),
            runs.difference(&failed).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "runs kept by retention: {} (the failed requests'), no other run left",
        failed.len()
    );
    player.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_resumes_by_itself_after_the_remote_api_server_restarts() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let plane = ControlPlane::shared();
    let case = Case::new(plane, "remote-restart").await;
    let team = case.remote_namespace("team").await;
    case.create_config(&[&team], false).await;
    case.create_pipeline(PIPELINE).await;
    let _controller = controller(plane, &case);

    case.create_request(&team, "before", PIPELINE, &[("bar", DIGEST)])
        .await;
    let running = case.wait_for_reason(&team, "before", "Running").await;
    let run = run_of(&running);

    plane.stop_remote();
    tekton::finish_run(&case.runs(), &run, true, "done", json!({ "out": "kept" })).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    plane.start_remote().await;

    let done = case.wait_for_reason(&team, "before", "Succeeded").await;
    assert_eq!(done.status.unwrap().results["out"], "kept");

    case.create_request(&team, "after", PIPELINE, &[("bar", DIGEST)])
        .await;
    let running = case.wait_for_reason(&team, "after", "Running").await;
    let run = run_of(&running);
    tekton::finish_run(&case.runs(), &run, true, "done", json!({})).await;
    case.wait_for_reason(&team, "after", "Succeeded").await;
}
