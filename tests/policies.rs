//! Policies from a ConfigMap on the real control plane: edits take effect
//! without a restart, a broken edit keeps the previous version and is
//! reported, removing a file removes its rule, and hostile scripts are
//! bounded and fail closed while the controller keeps serving.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use internal_services::api::InternalRequest;
use support::controller::{ControllerOptions, ControllerProcess};
use support::fixtures::{Case, message_of, reason_of, run_of};
use support::{ControlPlane, control_plane::repo_root};

const BINARY: &str = env!("CARGO_BIN_EXE_internal-services");
const PIPELINE: &str = "internal-system-abc-pipeline";
const CONFIGMAP: &str = "policies";

const NO_GOLD: &str = r#"
fn admit(request, config) {
    if "tier" in request.params && request.params["tier"] == "gold" {
        return deny("gold tier is closed");
    }
    allow()
}
"#;

fn allow_list() -> String {
    std::fs::read_to_string(repo_root().join("policies/10-allow-list.rhai")).unwrap()
}

/// A case whose controller reads policies from the `policies` ConfigMap,
/// created with `files` before the controller starts.
async fn world(name: &str, files: &[(&str, &str)]) -> (Case, String, ControllerProcess) {
    let plane = ControlPlane::shared();
    let case = Case::new(plane, name).await;
    let team = case.remote_namespace("team").await;
    case.create_config(&[&team], false).await;
    case.create_pipeline(PIPELINE).await;
    case.apply_policies(CONFIGMAP, files).await;

    let mut options = ControllerOptions::new(Path::new(BINARY), &case.namespace);
    options.request_selector = Some(case.selector());
    options.extra_args = vec!["--policy-configmap".into(), CONFIGMAP.into()];
    let controller = ControllerProcess::start(plane, options);
    (case, team, controller)
}

/// Creates a request with `tier` and waits until it is Running or Rejected.
async fn decide(case: &Case, team: &str, name: &str, tier: &str) -> InternalRequest {
    case.create_request(team, name, PIPELINE, &[("tier", tier)])
        .await;
    let api = case.requests(team);
    let decided = |r: Option<&InternalRequest>| {
        matches!(reason_of(r).as_deref(), Some("Running" | "Rejected"))
    };
    tokio::time::timeout(
        Duration::from_secs(30),
        kube::runtime::wait::await_condition(api, name, decided),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} was not decided within 30s"))
    .unwrap()
    .unwrap()
}

/// Submits gold requests until one gets `reason`; returns it and the time
/// from `since`.
async fn until_gold_is(
    case: &Case,
    team: &str,
    prefix: &str,
    reason: &str,
    since: Instant,
) -> (InternalRequest, Duration) {
    until_gold(case, team, prefix, since, |r| {
        reason_of(Some(r)).as_deref() == Some(reason)
    })
    .await
}

/// Submits gold requests until one satisfies `wanted` (the reload may take a
/// moment); returns it and the time from `since`.
async fn until_gold(
    case: &Case,
    team: &str,
    prefix: &str,
    since: Instant,
    wanted: impl Fn(&InternalRequest) -> bool,
) -> (InternalRequest, Duration) {
    for attempt in 0..100 {
        let request = decide(case, team, &format!("{prefix}-{attempt}"), "gold").await;
        if wanted(&request) {
            return (request, since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gold requests never reached the expected decision");
}

fn admission_of(request: &InternalRequest) -> (String, String) {
    let record = request
        .status
        .as_ref()
        .and_then(|s| s.admission.clone())
        .expect("status.admission");
    (record.policy_set, record.decided_by)
}

#[tokio::test]
async fn configmap_edits_change_decisions_without_restart() {
    let allow_list = allow_list();
    let (case, team, _controller) = world("reload", &[("10-allow-list.rhai", &allow_list)]).await;

    let before = decide(&case, &team, "before", "gold").await;
    assert_eq!(reason_of(Some(&before)).as_deref(), Some("Running"));
    let (hash_before, decided_before) = admission_of(&before);
    assert_eq!(decided_before, "all policies");

    let edited = Instant::now();
    case.apply_policies(
        CONFIGMAP,
        &[
            ("10-allow-list.rhai", &allow_list),
            ("30-no-gold.rhai", NO_GOLD),
        ],
    )
    .await;
    let (rejected, latency) = until_gold_is(&case, &team, "after", "Rejected", edited).await;
    eprintln!(
        "reload latency (ConfigMap update to first new decision, request round trip included): {} ms",
        latency.as_millis()
    );

    assert!(
        message_of(&rejected).contains("denied by policy 30-no-gold.rhai: gold tier is closed")
    );
    let (hash_after, decided_after) = admission_of(&rejected);
    assert_eq!(decided_after, "30-no-gold.rhai");
    assert_ne!(
        hash_after, hash_before,
        "the policy set hash must change with its content"
    );

    let silver = decide(&case, &team, "silver", "silver").await;
    assert_eq!(reason_of(Some(&silver)).as_deref(), Some("Running"));
}

#[tokio::test]
async fn broken_edit_keeps_the_previous_version_and_removing_a_file_removes_its_rule() {
    let allow_list = allow_list();
    let files = [
        ("10-allow-list.rhai", allow_list.as_str()),
        ("30-no-gold.rhai", NO_GOLD),
    ];
    let (case, team, _controller) = world("broken-edit", &files).await;
    let first = decide(&case, &team, "first", "gold").await;
    assert_eq!(reason_of(Some(&first)).as_deref(), Some("Rejected"));

    let broken = "fn admit(request, config) { allow( }";
    case.apply_policies(
        CONFIGMAP,
        &[
            ("10-allow-list.rhai", &allow_list),
            ("30-no-gold.rhai", broken),
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let event = loop {
        let warnings = case.warnings_about(CONFIGMAP).await;
        if let Some(event) = warnings
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("PolicyCompileFailed"))
        {
            break event;
        }
        assert!(
            Instant::now() < deadline,
            "no PolicyCompileFailed Event on the ConfigMap"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let note = event.note.unwrap_or_default();
    assert!(note.starts_with("30-no-gold.rhai:1:"), "{note}");
    assert!(note.contains("previous version stays in effect"), "{note}");

    let still = decide(&case, &team, "still", "gold").await;
    assert_eq!(
        reason_of(Some(&still)).as_deref(),
        Some("Rejected"),
        "the last good version must stay in effect"
    );
    assert_eq!(admission_of(&still).1, "30-no-gold.rhai");

    case.apply_policies(CONFIGMAP, &[("10-allow-list.rhai", &allow_list)])
        .await;
    let (admitted, _) = until_gold_is(&case, &team, "removed", "Running", Instant::now()).await;
    assert_eq!(admission_of(&admitted).1, "all policies");
}

#[tokio::test]
async fn a_file_that_never_compiled_denies_every_request() {
    let allow_list = allow_list();
    let files = [
        ("10-allow-list.rhai", allow_list.as_str()),
        ("20-typo.rhai", "fn admit(request, config) { allow( }"),
    ];
    let (case, team, _controller) = world("never-compiled", &files).await;

    let request = decide(&case, &team, "any", "silver").await;
    assert_eq!(reason_of(Some(&request)).as_deref(), Some("Rejected"));
    let message = message_of(&request);
    assert!(
        message.contains("20-typo.rhai (compile error)"),
        "{message}"
    );
}

#[tokio::test]
async fn hostile_scripts_fail_closed_and_the_controller_keeps_serving() {
    let allow_list = allow_list();
    let hostile = [
        (
            "loop",
            "fn admit(request, config) { loop { } }",
            "operation limit",
        ),
        (
            "recursion",
            "fn f(n) { f(n + 1) } fn admit(request, config) { f(0) }",
            "depth limit",
        ),
        (
            "growth",
            r#"fn admit(request, config) { let s = "x"; loop { s += s; } }"#,
            "size limit",
        ),
        (
            "throw",
            r#"fn admit(request, config) { throw "nope" }"#,
            "thrown by script",
        ),
        (
            "number",
            "fn admit(request, config) { 42 }",
            "invalid return type",
        ),
        (
            "sleep",
            "fn admit(request, config) { sleep(5); allow() }",
            "runtime error",
        ),
        (
            "eval",
            r#"fn admit(request, config) { eval("allow()") }"#,
            "compile error",
        ),
    ];
    let (case, team, controller) = world("hostile", &[("10-allow-list.rhai", &allow_list)]).await;

    for (name, script, class) in hostile {
        // A new file name each time, so no last good version stands in.
        let file = format!("50-{name}.rhai");
        case.apply_policies(
            CONFIGMAP,
            &[("10-allow-list.rhai", &allow_list), (&file, script)],
        )
        .await;
        let expected = format!("denied by policy {file} ({class})");
        let started = Instant::now();
        let (rejected, took) = until_gold(&case, &team, name, started, |r| {
            message_of(r).contains(&expected)
        })
        .await;
        assert_eq!(reason_of(Some(&rejected)).as_deref(), Some("Rejected"));
        assert!(took < Duration::from_secs(20), "{name} took {took:?}");
    }

    case.apply_policies(CONFIGMAP, &[("10-allow-list.rhai", &allow_list)])
        .await;
    let (admitted, _) = until_gold_is(&case, &team, "healthy", "Running", Instant::now()).await;
    assert_eq!(admission_of(&admitted).1, "all policies");
    assert!(
        !controller.log_tail(200).contains("panicked"),
        "controller panicked"
    );
}

/// Lays out `files` the way the kubelet mounts a ConfigMap: the data in a
/// hidden timestamped directory, `..data` pointing at it, and one link per
/// key through `..data`. Calling it again swaps `..data` atomically.
fn mount_like_kubelet(dir: &Path, version: u32, files: &[(&str, &str)]) {
    use std::os::unix::fs::symlink;
    let data = dir.join(format!("..2026_12_03_v{version}"));
    std::fs::create_dir(&data).unwrap();
    for (name, text) in files {
        std::fs::write(data.join(name), text).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    symlink(data.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            symlink(Path::new("..data").join(name), link).unwrap();
        }
    }
}

#[tokio::test]
async fn a_mounted_policy_directory_is_reloaded_when_its_data_is_swapped() {
    let allow_list = allow_list();
    let dir = tempfile::tempdir().unwrap();
    mount_like_kubelet(dir.path(), 1, &[("10-allow-list.rhai", &allow_list)]);

    let plane = ControlPlane::shared();
    let case = Case::new(plane, "mounted-dir").await;
    let team = case.remote_namespace("team").await;
    case.create_config(&[&team], false).await;
    case.create_pipeline(PIPELINE).await;
    let mut options = ControllerOptions::new(Path::new(BINARY), &case.namespace);
    options.request_selector = Some(case.selector());
    options.policies = dir.path().to_owned();
    let _controller = ControllerProcess::start(plane, options);

    let before = decide(&case, &team, "before", "gold").await;
    assert_eq!(reason_of(Some(&before)).as_deref(), Some("Running"));

    let swapped = Instant::now();
    mount_like_kubelet(
        dir.path(),
        2,
        &[
            ("10-allow-list.rhai", &allow_list),
            ("30-no-gold.rhai", NO_GOLD),
        ],
    );
    let (rejected, latency) = until_gold_is(&case, &team, "after", "Rejected", swapped).await;
    eprintln!(
        "reload latency from a directory swap: {} ms",
        latency.as_millis()
    );
    assert_eq!(admission_of(&rejected).1, "30-no-gold.rhai");
}

#[tokio::test]
async fn retention_keeps_a_failed_run_for_its_time_then_deletes_it() {
    let allow_list = allow_list();
    let retention = r#"fn retain(run, config) { if run.outcome == "Failed" { keep_for("3s") } else { delete() } }"#;
    let files = [
        ("10-allow-list.rhai", allow_list.as_str()),
        ("60-retention.rhai", retention),
    ];
    let (case, team, _controller) = world("retention", &files).await;

    let running = decide(&case, &team, "fails", "silver").await;
    let run_name = run_of(&running);
    let run = support::tekton::wait_for_run(&case.runs(), &run_name, Duration::from_secs(30)).await;
    support::tekton::finish_run(
        &case.runs(),
        &run_name,
        false,
        "step failed",
        serde_json::json!({}),
    )
    .await;
    case.wait_for_reason(&team, "fails", "Failed").await;

    let finished = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        case.runs().get_opt(&run_name).await.unwrap().is_some(),
        "deleted before its retention ended"
    );

    let uid = run.metadata.uid.unwrap();
    let deleted = kube::runtime::wait::await_condition(
        case.runs(),
        &run_name,
        kube::runtime::wait::conditions::is_deleted(&uid),
    );
    tokio::time::timeout(Duration::from_secs(30), deleted)
        .await
        .expect("run deleted after retention")
        .unwrap();
    // Kept for 3 s from Tekton's completion time, which has whole seconds
    // only: up to a second of it may have passed before the test saw it.
    assert!(
        finished.elapsed() >= Duration::from_millis(1500),
        "deleted after {:?}",
        finished.elapsed()
    );
}

#[tokio::test]
async fn dry_run_against_a_live_remote_cluster_decides_every_request() {
    let plane = ControlPlane::shared();
    let case = Case::new(plane, "what-if").await;
    let team = case.remote_namespace("team").await;
    case.create_request(&team, "live-one", PIPELINE, &[("bar", "sha256:abc")])
        .await;

    let config = tempfile::NamedTempFile::new().unwrap();
    let text = format!(
        "apiVersion: appstudio.redhat.com/v1alpha1\nkind: InternalServicesConfig\nmetadata: {{ name: config }}\nspec: {{ allowList: [{team}] }}\n"
    );
    std::fs::write(config.path(), text).unwrap();
    let output = std::process::Command::new(BINARY)
        .args([
            "policy",
            "dry-run",
            "--policies",
            repo_root().join("policies").to_str().unwrap(),
        ])
        .args([
            "--config",
            config.path().to_str().unwrap(),
            "--output",
            "json",
            "--remote-kubeconfig",
        ])
        .arg(&plane.remote.kubeconfig)
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["request"] == format!("{team}/live-one"))
        .expect("the live request is in the report");
    assert_eq!(row["decision"], "deny");
    assert_eq!(row["decidedBy"], "20-digest-params.rhai");
}
