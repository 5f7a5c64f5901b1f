//! Running the controller as operators do: the manifests in `deploy/`
//! applied server-side with the controller signed in only through their
//! roles, two replicas with leader election, metrics scraped during a run,
//! several remote clusters with one of them down, a rotated remote
//! kubeconfig, and `request submit`/`request wait` as release pipelines use
//! them.
//!
//! These tests stop and start API servers and controllers of their own, so
//! they live in a test binary of their own.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use internal_services::api::PipelineRun;
use internal_services::api::tekton::labels;
use support::controller::{ControllerOptions, ControllerProcess};
use support::fixtures::{CASE_LABEL, Case, message_of, run_of};
use support::{ControlPlane, tekton};

const BINARY: &str = env!("CARGO_BIN_EXE_internal-services");
const PIPELINE: &str = "internal-system-abc-pipeline";
const DIGEST: &str = "sha256:dd517544390c4c9636a555081205115a2fd3e83c326e64026f17f391e24bd2e5";
const WAIT: Duration = Duration::from_secs(30);

/// Tests here stop servers and hold leases; one at a time keeps them apart.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn world(plane: &ControlPlane, name: &str) -> (Case, String) {
    let case = Case::new(plane, name).await;
    let team = case.remote_namespace("team").await;
    case.create_config(&[&team], false).await;
    case.create_pipeline(PIPELINE).await;
    (case, team)
}

fn options<'a>(case: &'a Case) -> ControllerOptions<'a> {
    let mut options = ControllerOptions::new(Path::new(BINARY), &case.namespace);
    options.request_selector = Some(case.selector());
    options
}

/// Creates a request, waits until it runs; returns its run's name.
async fn start(case: &Case, team: &str, name: &str) -> String {
    case.start(team, name, PIPELINE, &[("bar", DIGEST)]).await
}

/// The value of the first sample of `name` whose labels contain `labels`.
fn sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| l.contains(labels))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_run_in_flight_and_the_outcome() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let plane = ControlPlane::shared();
    let (case, team) = world(plane, "metrics").await;
    let controller = ControllerProcess::start(plane, options(&case));

    let other = case.remote_namespace("other").await;
    case.create_request(&other, "rejected", PIPELINE, &[]).await;
    case.wait_for_reason(&other, "rejected", "Rejected").await;

    let run = start(&case, &team, "measured").await;
    let during = controller.metrics().await;
    let in_flight = r#"cluster="remote""#;
    assert_eq!(
        sample(&during, "internal_services_runs_in_flight", in_flight),
        Some(1.0),
        "{during}"
    );
    assert_eq!(sample(&during, "internal_services_leader", ""), Some(1.0));
    let rejected = sample(
        &during,
        "internal_services_requests_total",
        r#"outcome="Rejected""#,
    );
    assert_eq!(rejected, Some(1.0), "{during}");
    let decided = sample(
        &during,
        "internal_services_admission_duration_seconds_count",
        "",
    )
    .unwrap();
    assert!(decided >= 2.0, "admission decisions counted: {decided}");

    tekton::finish_run(&case.runs(), &run, true, "done", json!({ "out": "1" })).await;
    case.wait_for_reason(&team, "measured", "Succeeded").await;
    let deadline = Instant::now() + WAIT;
    let after = loop {
        let text = controller.metrics().await;
        if sample(&text, "internal_services_runs_in_flight", in_flight) == Some(0.0) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "runs in flight never went back to 0:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let succeeded = sample(
        &after,
        "internal_services_requests_total",
        r#"outcome="Succeeded""#,
    );
    assert_eq!(succeeded, Some(1.0), "{after}");
    let relayed = sample(
        &after,
        "internal_services_relay_duration_seconds_count",
        in_flight,
    );
    assert_eq!(relayed, Some(1.0), "{after}");
    assert_eq!(
        sample(&after, "internal_services_reconciles_in_flight", in_flight),
        Some(0.0)
    );

    let reasons = event_reasons(&case, &team, "measured").await;
    assert!(reasons.contains(&"Admitted".to_owned()), "{reasons:?}");
    assert!(reasons.contains(&"Succeeded".to_owned()), "{reasons:?}");
    let reasons = event_reasons(&case, &other, "rejected").await;
    assert_eq!(reasons, ["Rejected"]);
}

/// The reasons of the Events on the remote request `namespace/name`, once
/// the controller's queue has published them.
async fn event_reasons(case: &Case, namespace: &str, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(case.remote.clone(), namespace);
    let deadline = Instant::now() + WAIT;
    loop {
        let reasons: Vec<String> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter_map(|e| e.reason)
            .collect();
        if reasons.len() >= 2
            || (reasons.len() == 1 && reasons[0] == "Rejected")
            || Instant::now() > deadline
        {
            return reasons;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_within_15_seconds_and_a_stopped_leader_hands_over_at_once() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let plane = ControlPlane::shared();
    let (case, team) = world(plane, "leader").await;
    let replica = |n: usize| {
        let mut o = options(&case);
        o.identity = format!("replica-{n}");
        o.log_suffix = format!("-{n}");
        ControllerProcess::start(plane, o)
    };
    let mut first = replica(1);
    first.wait_for_log("leading; serving requests", WAIT).await;
    let second = replica(2);
    second.wait_for_log("joined leader election", WAIT).await;

    let run = start(&case, &team, "before").await;
    tekton::finish_run(&case.runs(), &run, true, "done", json!({})).await;
    case.wait_for_reason(&team, "before", "Succeeded").await;

    first.kill_hard();
    let killed = Instant::now();
    case.create_request(&team, "during", PIPELINE, &[("bar", DIGEST)])
        .await;
    second
        .wait_for_log("leading; serving requests", Duration::from_secs(20))
        .await;
    let takeover = killed.elapsed();
    let running = case.wait_for_reason(&team, "during", "Running").await;
    eprintln!(
        "standby led {:.1}s after the leader was killed",
        takeover.as_secs_f64()
    );
    assert!(
        takeover < Duration::from_secs(15),
        "takeover took {takeover:?}"
    );

    tekton::finish_run(&case.runs(), &run_of(&running), true, "done", json!({})).await;
    case.wait_for_reason(&team, "during", "Succeeded").await;

    let mut second = second;
    let third = replica(3);
    third.wait_for_log("joined leader election", WAIT).await;
    let stopped = Instant::now();
    second.terminate();
    third.wait_for_log("leading; serving requests", WAIT).await;
    let handover = stopped.elapsed();
    eprintln!(
        "a leader stopped with SIGTERM handed over in {:.1}s",
        handover.as_secs_f64()
    );
    assert!(
        handover < Duration::from_secs(5),
        "the lease was not released: {handover:?}"
    );
    assert!(
        second.log_tail(20).contains("lease released"),
        "{}",
        second.log_tail(20)
    );

    case.create_request(&team, "after", PIPELINE, &[("bar", DIGEST)])
        .await;
    case.wait_for_reason(&team, "after", "Running").await;

    let runs = case
        .runs()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let mut per_request: std::collections::BTreeMap<String, usize> = Default::default();
    for run in &runs {
        *per_request
            .entry(run.labels()[labels::REQUEST_UID].clone())
            .or_default() += 1;
    }
    assert!(
        per_request.values().all(|n| *n == 1),
        "duplicate runs: {per_request:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_remote_clusters_one_down_the_other_is_served() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let plane = ControlPlane::shared();
    let (case, east_team) = world(plane, "two-remotes").await;
    let west = plane.start_extra_remote("west").await;
    let west_client = west.client().await;
    let west_team = format!("{}-team", case.id);
    create_namespace(&west_client, &west_team).await;

    let mut o = options(&case);
    o.remotes = vec![
        ("east".to_owned(), plane.remote.kubeconfig.clone()),
        ("west".to_owned(), west.kubeconfig.clone()),
    ];
    let _controller = ControllerProcess::start(plane, o);

    let west_case = Case {
        id: case.id.clone(),
        remote: west_client.clone(),
        internal: case.internal.clone(),
        namespace: case.namespace.clone(),
    };
    let west_run = start(&west_case, &west_team, "from-west").await;
    let created = case.runs().get(&west_run).await.unwrap();
    assert_eq!(created.labels()[labels::REMOTE_CLUSTER], "west");

    plane.stop_server("west");
    let east_run = start(&case, &east_team, "from-east").await;
    assert_eq!(
        case.runs().get(&east_run).await.unwrap().labels()[labels::REMOTE_CLUSTER],
        "east"
    );
    tekton::finish_run(
        &case.runs(),
        &east_run,
        true,
        "done",
        json!({ "side": "east" }),
    )
    .await;
    let done = case
        .wait_for_reason(&east_team, "from-east", "Succeeded")
        .await;
    assert_eq!(done.status.unwrap().results["side"], "east");

    tekton::finish_run(
        &case.runs(),
        &west_run,
        true,
        "done",
        json!({ "side": "west" }),
    )
    .await;
    plane.restart_server(&west).await;
    let done = west_case
        .wait_for_reason(&west_team, "from-west", "Succeeded")
        .await;
    assert_eq!(done.status.unwrap().results["side"], "west");
    plane.stop_server("west");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_remote_kubeconfig_is_used_without_a_restart() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let plane = ControlPlane::shared();
    let (case, team) = world(plane, "rotation").await;

    // A mounted Secret as the kubelet writes it: files behind `..data`,
    // swapped atomically. The first version holds a token nobody knows.
    let mount = plane.dir.join(format!("{}-secret", case.id));
    let good = std::fs::read_to_string(&plane.remote.kubeconfig).unwrap();
    let stale = good.replace("token: ", "token: revoked-");
    mount_like_kubelet(&mount, 1, &stale);

    let mut o = options(&case);
    o.remotes = vec![("remote".to_owned(), mount.join("kubeconfig"))];
    let controller = ControllerProcess::start(plane, o);
    case.create_request(&team, "waiting", PIPELINE, &[("bar", DIGEST)])
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let untouched = case.requests(&team).get("waiting").await.unwrap();
    assert!(untouched.status.is_none(), "served with a revoked token?");

    mount_like_kubelet(&mount, 2, &good);
    case.wait_for_reason(&team, "waiting", "Running").await;
    assert!(
        controller
            .log_tail(200)
            .contains("remote kubeconfig changed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_manifests_apply_server_side_and_their_roles_are_enough() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let plane = ControlPlane::shared();
    let (case, team) = world(plane, "deployed").await;
    let root = support::control_plane::repo_root();

    let overlay = plane.dir.join(format!("{}-overlay", case.id));
    std::fs::create_dir_all(&overlay).unwrap();
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {}\nresources:\n  - {}\n",
            case.namespace,
            relative_to(&overlay, &root.join("deploy/internal")).display()
        ),
    )
    .unwrap();
    kubectl_apply(plane, &plane.internal.kubeconfig, &overlay);
    kubectl_apply(
        plane,
        &plane.remote.kubeconfig,
        &root.join("deploy/remote-ttl"),
    );

    let allow = json!({ "spec": { "allowList": [team], "completedRequestTTL": "2s" } });
    case.configs()
        .patch("config", &PatchParams::default(), &Patch::Merge(&allow))
        .await
        .unwrap();

    let internal_token = token(&case.internal, &case.namespace, "internal-services").await;
    let remote_token = token(
        &case.remote,
        "internal-services-remote",
        "internal-services",
    )
    .await;
    let internal_kubeconfig = plane.kubeconfig_with_token(
        &plane.internal,
        &format!("{}-internal-sa.kubeconfig", case.id),
        &internal_token,
    );
    let remote_kubeconfig = plane.kubeconfig_with_token(
        &plane.remote,
        &format!("{}-remote-sa.kubeconfig", case.id),
        &remote_token,
    );

    let mut o = options(&case);
    o.internal_kubeconfig = Some(internal_kubeconfig.clone());
    o.remotes = vec![("remote".to_owned(), remote_kubeconfig.clone())];
    o.extra_args = vec![
        "--policy-configmap".into(),
        "internal-services-policies".into(),
    ];
    let controller = ControllerProcess::start(plane, o);

    let run = start(&case, &team, "through-rbac").await;
    tekton::finish_run(&case.runs(), &run, true, "done", json!({ "ok": "yes" })).await;
    let done = case
        .wait_for_reason(&team, "through-rbac", "Succeeded")
        .await;
    assert_eq!(done.status.unwrap().results["ok"], "yes");
    case.wait_until_deleted(&team, "through-rbac", WAIT).await;

    let other = case.remote_namespace("other").await;
    case.create_request(&other, "refused", PIPELINE, &[]).await;
    let refused = case.wait_for_reason(&other, "refused", "Rejected").await;
    assert!(message_of(&refused).contains("allow-list"));
    assert!(
        !controller
            .log_tail(400)
            .to_lowercase()
            .contains("forbidden"),
        "the roles lack a permission:\n{}",
        controller.log_tail(60)
    );

    // Nothing beyond the roles: no Secrets on either side, no requests
    // created on the remote one, nothing outside the controller's namespace.
    let internal_sa = support::control_plane::client_from(&internal_kubeconfig).await;
    let remote_sa = support::control_plane::client_from(&remote_kubeconfig).await;
    let secrets: Api<Secret> = Api::namespaced(internal_sa.clone(), &case.namespace);
    assert_forbidden(secrets.list(&ListParams::default()).await);
    let elsewhere: Api<PipelineRun> = Api::namespaced(internal_sa, "default");
    assert_forbidden(elsewhere.list(&ListParams::default()).await);
    let remote_secrets: Api<Secret> = Api::namespaced(remote_sa.clone(), &team);
    assert_forbidden(remote_secrets.list(&ListParams::default()).await);
    let remote_requests =
        Api::<internal_services::api::InternalRequest>::namespaced(remote_sa, &team);
    let request = internal_services::api::InternalRequest::new("forged", Default::default());
    assert_forbidden(
        remote_requests
            .create(&PostParams::default(), &request)
            .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_submit_waits_and_exits_0_21_or_124() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let plane = ControlPlane::shared();
    let (case, team) = world(plane, "submit").await;
    let _controller = ControllerProcess::start(plane, options(&case));
    let label = format!("{CASE_LABEL}={}", case.id);
    let submit = |name: &str, namespace: &str, timeout: &str| {
        let mut command = tokio::process::Command::new(BINARY);
        command
            .args(["request", "submit", "--wait", "--pipeline", PIPELINE])
            .args(["--param", &format!("bar={DIGEST}"), "--label", &label])
            .args(["--name", name, "--timeout", timeout, "-n", namespace])
            .arg("--kubeconfig")
            .arg(&plane.remote.kubeconfig);
        command.output()
    };

    let succeeding = tokio::spawn(submit("ok", &team, "60s"));
    let run = tekton::wait_for_run(&case.runs(), &run_name(&case, &team, "ok").await, WAIT).await;
    tekton::finish_run(
        &case.runs(),
        &run.name_any(),
        true,
        "done",
        json!({ "url": "https://x" }),
    )
    .await;
    let output = succeeding.await.unwrap().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["reason"], "Succeeded");
    assert_eq!(printed["results"]["url"], "https://x");

    let failing = tokio::spawn(submit("bad", &team, "60s"));
    let run = tekton::wait_for_run(&case.runs(), &run_name(&case, &team, "bad").await, WAIT).await;
    tekton::finish_run(
        &case.runs(),
        &run.name_any(),
        false,
        "task x failed",
        json!({}),
    )
    .await;
    let output = failing.await.unwrap().unwrap();
    assert_eq!(output.status.code(), Some(21));
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["message"], "task x failed");

    let other = case.remote_namespace("other").await;
    let rejected = submit("refused", &other, "60s").await.unwrap();
    assert_eq!(rejected.status.code(), Some(21));

    let slow = submit("slow", &team, "2s").await.unwrap();
    assert_eq!(
        slow.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&slow.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&slow.stdout).unwrap();
    assert_eq!(printed["reason"], "Running");

    let waited = Command::new(BINARY)
        .args([
            "request",
            "wait",
            "--selector",
            &label,
            "--timeout",
            "5s",
            "-n",
            &other,
        ])
        .arg("--kubeconfig")
        .arg(&plane.remote.kubeconfig)
        .output()
        .unwrap();
    assert_eq!(waited.status.code(), Some(21));
    let printed: serde_json::Value = serde_json::from_slice(&waited.stdout).unwrap();
    assert_eq!(printed[0]["reason"], "Rejected");

    let missing = Command::new(BINARY)
        .args([
            "request",
            "wait",
            "not-there-yet",
            "--timeout",
            "2s",
            "-n",
            &team,
        ])
        .arg("--kubeconfig")
        .arg(&plane.remote.kubeconfig)
        .output()
        .unwrap();
    assert_eq!(
        missing.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("waiting for one"));
}

/// The run name the controller derives for the request `name`, once it exists.
async fn run_name(case: &Case, namespace: &str, name: &str) -> String {
    run_of(&case.wait_for_reason(namespace, name, "Running").await)
}

/// `target` as a path relative to `dir` (kustomize takes no absolute paths).
fn relative_to(dir: &Path, target: &Path) -> PathBuf {
    let mut path = PathBuf::new();
    for _ in dir.components().skip(1) {
        path.push("..");
    }
    path.join(target.strip_prefix("/").expect("an absolute path"))
}

fn kubectl_apply(plane: &ControlPlane, kubeconfig: &Path, dir: &Path) {
    let output = Command::new(plane.kubectl())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["apply", "--server-side", "--force-conflicts", "-k"])
        .arg(dir)
        .output()
        .expect("run kubectl");
    assert!(
        output.status.success(),
        "kubectl apply -k {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A bound token for a ServiceAccount, from the TokenRequest API.
async fn token(client: &Client, namespace: &str, name: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let issued = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|err| panic!("token for {namespace}/{name}: {err}"));
    issued.status.and_then(|s| s.token).expect("a token")
}

fn assert_forbidden<T: std::fmt::Debug>(result: kube::Result<T>) {
    match result {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
}

async fn create_namespace(client: &Client, name: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let namespace = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    api.create(&PostParams::default(), &namespace)
        .await
        .unwrap();
}

/// Writes `kubeconfig` into `dir` the way the kubelet updates a mounted
/// Secret: a new timestamped directory, then an atomic swap of `..data`.
fn mount_like_kubelet(dir: &Path, version: u32, kubeconfig: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let versioned = format!("..v{version}");
    let data: PathBuf = dir.join(&versioned);
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("kubeconfig"), kubeconfig).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&versioned, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("kubeconfig");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/kubeconfig", &link).unwrap();
    }
}
