//! The local demo: the controller on a real local control plane, serving the
//! example requests from `examples/`.
//!
//! Builds what is needed, starts etcd and the "remote" and "internal"
//! kube-apiservers, installs the CRDs, the config, the sample Pipeline and
//! the policies, runs the controller as its own process, submits the three
//! example requests, plays Tekton for the admitted run, and prints each
//! request's final status. Exits non-zero if any outcome is not the expected
//! one. `--keep` leaves everything running until Ctrl-C.
//!
//!     cargo run --example demo [-- --keep]

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DynamicObject, ObjectMeta, PostParams};
use kube::discovery::ApiResource;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use serde::Deserialize;
use serde_json::json;

use internal_services::api::{InternalRequest, InternalServicesConfig, PipelineRun};
use support::control_plane::repo_root;
use support::controller::{ControllerOptions, ControllerProcess};
use support::fixtures::{message_of, reason_of};
use support::{ControlPlane, tekton};

const NAMESPACE: &str = "internal-services";
const WAIT: Duration = Duration::from_secs(60);
const POLICY_CONFIGMAP: &str = "internal-services-policies";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let keep = std::env::args().any(|a| a == "--keep");
    let binary = build_controller()?;

    step("starting etcd and the remote and internal kube-apiservers");
    let plane = ControlPlane::start().await;
    let (remote, internal) = (plane.remote.client().await, plane.internal.client().await);

    step("installing config and sample Pipeline on the internal cluster");
    create_namespace(&internal, NAMESPACE).await?;
    let config: InternalServicesConfig = read_yaml(&repo_root().join("examples/config.yaml"))?;
    Api::<InternalServicesConfig>::namespaced(internal.clone(), NAMESPACE)
        .create(&PostParams::default(), &config)
        .await?;
    create_pipeline(&internal, &repo_root().join("examples/pipeline.yaml")).await?;

    step("installing the policies in policies/ as the ConfigMap internal-services-policies");
    install_policies(&internal).await?;

    step("starting the controller");
    let mut options = ControllerOptions::new(&binary, NAMESPACE);
    options.extra_args = vec!["--policy-configmap".into(), POLICY_CONFIGMAP.into()];
    let controller = ControllerProcess::start(&plane, options);

    step("submitting the example requests on the remote cluster");
    let requests = submit_examples(&remote).await?;

    play_tekton(&plane, &internal, &requests).await?;

    step("final status of each request");
    let finals = wait_all_terminal(&remote, &requests).await?;
    for request in &finals {
        print_request(request);
    }
    show_with_kubectl(&plane);
    let verdict = check_outcomes(&finals, &internal).await;

    if keep {
        println!(
            "\nEverything keeps running. kubectl is at {}",
            plane.bin.join("kubectl").display()
        );
        println!(
            "  remote:   KUBECONFIG={}",
            plane.remote.kubeconfig.display()
        );
        println!(
            "  internal: KUBECONFIG={}",
            plane.internal.kubeconfig.display()
        );
        println!(
            "  controller log: {}\nPress Ctrl-C to stop.",
            controller.log.display()
        );
        tokio::signal::ctrl_c().await?;
    }
    drop(controller);
    plane.stop();
    verdict
}

fn step(text: &str) {
    println!("\n== {text}");
}

/// Builds the controller binary next to this example and returns its path.
fn build_controller() -> anyhow::Result<PathBuf> {
    step(
        "building the controller (cargo build --bin internal-services; the first time takes minutes)",
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    // `cargo run` sets package variables for this example; passed on, they
    // make build scripts (ring's) run again and rebuild half the tree.
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_") && !matches!(key.as_str(), "CARGO_HOME" | "CARGO_TARGET_DIR") {
            build.env_remove(key);
        }
    }
    let status = build
        .args(["build", "--bin", "internal-services"])
        .current_dir(repo_root())
        .status()
        .context("run cargo build")?;
    if !status.success() {
        bail!("cargo build --bin internal-services failed");
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("example is not in target/<profile>/examples")?;
    Ok(profile_dir.join("internal-services"))
}

fn read_yaml<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_yaml_ng::from_str(&text).with_context(|| format!("parse {}", path.display()))
}

async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err).with_context(|| format!("create namespace {name}")),
    }
}

/// Creates the Pipeline with its whole spec (the typed API keeps only a part).
async fn create_pipeline(client: &Client, path: &Path) -> anyhow::Result<()> {
    let pipeline: DynamicObject = read_yaml(path)?;
    let resource = ApiResource {
        group: "tekton.dev".into(),
        version: "v1".into(),
        api_version: "tekton.dev/v1".into(),
        kind: "Pipeline".into(),
        plural: "pipelines".into(),
    };
    Api::<DynamicObject>::namespaced_with(client.clone(), NAMESPACE, &resource)
        .create(&PostParams::default(), &pipeline)
        .await
        .context("create Pipeline")?;
    println!("Pipeline {NAMESPACE}/{}", pipeline.name_any());
    Ok(())
}

/// One ConfigMap key per policy file, as `deploy/` generates it.
async fn install_policies(internal: &Client) -> anyhow::Result<()> {
    let mut data = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(repo_root().join("policies"))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if internal_services::policy::is_policy_name(&name) {
            data.insert(name, std::fs::read_to_string(&path)?);
        }
    }
    println!(
        "{} policy files: {}",
        data.len(),
        data.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    let configmap = ConfigMap {
        metadata: ObjectMeta {
            name: Some(POLICY_CONFIGMAP.into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(internal.clone(), NAMESPACE)
        .create(&PostParams::default(), &configmap)
        .await
        .context("create policy ConfigMap")?;
    Ok(())
}

async fn submit_examples(remote: &Client) -> anyhow::Result<Vec<InternalRequest>> {
    let mut submitted = Vec::new();
    for file in ["admitted.yaml", "not-allowed.yaml", "bad-digest.yaml"] {
        let request: InternalRequest =
            read_yaml(&repo_root().join("examples/requests").join(file))?;
        let namespace = request
            .namespace()
            .context("example request without namespace")?;
        create_namespace(remote, &namespace).await?;
        let created = Api::<InternalRequest>::namespaced(remote.clone(), &namespace)
            .create(&PostParams::default(), &request)
            .await
            .with_context(|| format!("create request from {file}"))?;
        println!(
            "InternalRequest {namespace}/{} (examples/requests/{file})",
            created.name_any()
        );
        submitted.push(created);
    }
    Ok(submitted)
}

/// Stands in for Tekton: no Tekton controller runs here, so the demo finishes
/// the admitted request's PipelineRun by writing its status as Tekton would.
async fn play_tekton(
    plane: &ControlPlane,
    internal: &Client,
    requests: &[InternalRequest],
) -> anyhow::Result<()> {
    step("Tekton stand-in (demo only; not part of the controller): finishing the admitted run");
    let admitted = &requests[0];
    let api = Api::<InternalRequest>::namespaced(
        plane.remote.client().await,
        &admitted.namespace().unwrap(),
    );
    let running = tokio::time::timeout(
        WAIT,
        await_condition(api, &admitted.name_any(), |r: Option<&InternalRequest>| {
            r.and_then(|r| r.status.as_ref())
                .and_then(|s| s.pipeline_run.clone())
                .is_some()
        }),
    )
    .await
    .context("admitted request never got a PipelineRun")??
    .context("admitted request disappeared")?;

    let run_ref = running
        .status
        .and_then(|s| s.pipeline_run)
        .unwrap_or_default();
    let run_name = run_ref
        .split_once('/')
        .map(|(_, n)| n.to_owned())
        .unwrap_or_default();
    let runs: Api<PipelineRun> = Api::namespaced(internal.clone(), NAMESPACE);
    tekton::wait_for_run(&runs, &run_name, WAIT).await;
    println!("tekton stand-in: PipelineRun {run_ref} started");
    tekton::start_run(&runs, &run_name).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let results =
        json!({ "result": "checked quay.io/redhat-isv/operator-pipelines-images:released" });
    tekton::finish_run(
        &runs,
        &run_name,
        true,
        "Tasks Completed: 1 (Failed: 0, Cancelled 0), Skipped: 0",
        results,
    )
    .await;
    println!("tekton stand-in: PipelineRun {run_ref} succeeded with result 'result'");
    Ok(())
}

async fn wait_all_terminal(
    remote: &Client,
    requests: &[InternalRequest],
) -> anyhow::Result<Vec<InternalRequest>> {
    let mut finals = Vec::new();
    for request in requests {
        let api = Api::<InternalRequest>::namespaced(remote.clone(), &request.namespace().unwrap());
        let terminal = |r: Option<&InternalRequest>| {
            r.and_then(|r| r.status.as_ref())
                .is_some_and(|s| s.is_terminal())
        };
        let done = tokio::time::timeout(WAIT, await_condition(api, &request.name_any(), terminal))
            .await
            .with_context(|| format!("{} did not finish", request.name_any()))??
            .context("request disappeared")?;
        finals.push(done);
    }
    Ok(finals)
}

fn print_request(request: &InternalRequest) {
    let status = request.status.clone().unwrap_or_default();
    println!(
        "\n{}/{}: {}",
        request.namespace().unwrap_or_default(),
        request.name_any(),
        reason_of(Some(request)).unwrap_or_default()
    );
    println!("  message:     {}", message_of(request));
    if let Some(run) = &status.pipeline_run {
        println!("  pipelineRun: {run}");
    }
    for (name, value) in &status.results {
        println!("  result {name}: {value}");
    }
}

/// The same, as `kubectl get` shows it through the CRD's printer columns.
fn show_with_kubectl(plane: &ControlPlane) {
    println!("\n$ kubectl get internalrequests --all-namespaces -o wide   # remote cluster");
    let _ = Command::new(plane.bin.join("kubectl"))
        .args(["get", "internalrequests", "--all-namespaces", "-o", "wide"])
        .env("KUBECONFIG", &plane.remote.kubeconfig)
        .status();
}

/// Checks the outcomes the README promises.
async fn check_outcomes(finals: &[InternalRequest], internal: &Client) -> anyhow::Result<()> {
    step("checking outcomes");
    let reasons: Vec<String> = finals
        .iter()
        .map(|r| reason_of(Some(r)).unwrap_or_default())
        .collect();
    let expected = ["Succeeded", "Rejected", "Rejected"];
    if reasons != expected {
        bail!("expected outcomes {expected:?}, got {reasons:?}");
    }
    if !finals[0]
        .status
        .as_ref()
        .is_some_and(|s| s.results.contains_key("result"))
    {
        bail!("the admitted request's result was not relayed");
    }

    let run_ref = finals[0]
        .status
        .as_ref()
        .and_then(|s| s.pipeline_run.clone())
        .unwrap_or_default();
    let run_name = run_ref.split_once('/').map(|(_, n)| n).unwrap_or_default();
    let runs: Api<PipelineRun> = Api::namespaced(internal.clone(), NAMESPACE);
    if let Some(run) = runs.get_opt(run_name).await? {
        let uid = run.uid().unwrap_or_default();
        tokio::time::timeout(
            WAIT,
            await_condition(runs, run_name, conditions::is_deleted(&uid)),
        )
        .await
        .context("finished PipelineRun was not deleted")??;
    }
    println!("ok: Succeeded with result relayed, two Rejected, PipelineRun {run_ref} deleted");
    Ok(())
}
