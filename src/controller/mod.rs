//! The controller: watches requests on the remote cluster and runs on the
//! internal one, and turns each change into a reconcile of one request.
//!
//! Requests are the controller's main objects. PipelineRuns, the config and
//! Pipelines are each kept in a watch-fed cache on the internal cluster, so
//! a reconcile reads them without an API call; a run's change is mapped back
//! to its request through the annotation the controller put on it.

mod context;
mod finalizer;
mod reconcile;
mod teardown;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::ListParams;
use kube::runtime::controller::Error as ControllerError;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

pub use context::Context;
pub use finalizer::NAME as FINALIZER;
pub use reconcile::Error;

use crate::api::tekton::{annotations, labels};
use crate::api::{CONFIG_NAME, InternalRequest, InternalServicesConfig, Pipeline, PipelineRun};
use crate::metrics::Metrics;
use crate::policy::LivePolicies;

/// What the controller needs to start.
pub struct Settings {
    pub remote: Client,
    pub internal: Client,
    /// The controller's namespace on the internal cluster.
    pub namespace: String,
    /// Name of the remote cluster, part of every run's identity.
    pub cluster: String,
    /// Only requests matching this label selector are served.
    pub request_selector: Option<String>,
    pub policies: Arc<LivePolicies>,
    pub metrics: Arc<Metrics>,
    pub concurrency: u16,
    /// How long a deleted request waits for Tekton to stop its cancelled run
    /// before the run is deleted outright.
    pub cancel_grace: Duration,
}

/// Readiness for `/readyz`: policies loaded. (The caches fill within the
/// controller; a reconcile waits for them.)
pub struct Readiness {
    policies: Arc<LivePolicies>,
}

impl Readiness {
    pub fn new(policies: Arc<LivePolicies>) -> Self {
        Self { policies }
    }
}

impl crate::metrics::Health for Readiness {
    fn ready(&self) -> bool {
        self.policies.is_loaded()
    }
}

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let ns = settings.namespace.clone();
    let internal = settings.internal.clone();

    let configs = spawn_cache::<InternalServicesConfig>(
        Api::namespaced(internal.clone(), &ns),
        watcher::Config::default().fields(&format!("metadata.name={CONFIG_NAME}")),
    );
    let pipelines = spawn_cache::<Pipeline>(
        Api::namespaced(internal.clone(), &ns),
        watcher::Config::default(),
    );

    let (runs, runs_writer) = reflector::store::<PipelineRun>();
    let run_selector = format!(
        "{}={},{}={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_VALUE,
        labels::REMOTE_CLUSTER,
        crate::run::label_value(&settings.cluster)
    );
    let run_events = watcher(
        Api::<PipelineRun>::namespaced(internal.clone(), &ns),
        watcher::Config::default().labels(&run_selector),
    )
    .default_backoff()
    .reflect(runs_writer)
    .touched_objects();

    let mut request_watch = watcher::Config::default();
    if let Some(selector) = &settings.request_selector {
        request_watch = request_watch.labels(selector);
    }
    let requests = Api::<InternalRequest>::all(settings.remote.clone());
    check_remote(&requests, settings.request_selector.as_deref()).await?;

    let context = Arc::new(Context::new(&settings, configs, pipelines, runs));
    tracing::info!(namespace = %ns, cluster = %settings.cluster, policies = %settings.policies.current().hash(), "controller starting");

    Controller::new(requests, request_watch)
        .with_config(kube::runtime::controller::Config::default().concurrency(settings.concurrency))
        .watches_stream(run_events, request_of_run)
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| async move {
            match result {
                Err(ControllerError::QueueError(err)) => {
                    tracing::warn!(cluster = "remote", error = %err, "watch of InternalRequests failed; retrying")
                }
                Err(err) => tracing::debug!(error = %err, "reconcile did not complete"),
                Ok(_) => {}
            }
        })
        .await;

    tracing::info!("controller stopped");
    Ok(())
}

/// Lists one request to check the selector and the remote cluster before
/// serving: a selector the API server refuses is an error now rather than a
/// silent failure of every watch later; an unreachable cluster is only a
/// warning, since the watch keeps retrying.
async fn check_remote(
    requests: &Api<InternalRequest>,
    selector: Option<&str>,
) -> anyhow::Result<()> {
    let params = ListParams::default()
        .labels(selector.unwrap_or_default())
        .limit(1);
    match requests.list_metadata(&params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 400 => {
            anyhow::bail!(
                "the remote cluster refused the request selector {selector:?}: {}",
                e.message
            )
        }
        Err(err) => {
            tracing::warn!(cluster = "remote", error = %err, "cannot list InternalRequests yet; will keep trying");
            Ok(())
        }
    }
}

/// Starts a watch-fed cache of `K` and returns its reader.
fn spawn_cache<K>(api: Api<K>, config: watcher::Config) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config).default_backoff().reflect(writer);
    tokio::spawn(async move {
        stream
            .for_each(|event| async move {
                if let Err(err) = event {
                    tracing::warn!(kind = %K::kind(&()), error = %err, "watch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await;
    });
    reader
}

/// Maps a run back to the request it serves.
fn request_of_run(run: PipelineRun) -> Option<ObjectRef<InternalRequest>> {
    let key = run
        .metadata
        .annotations
        .as_ref()?
        .get(annotations::REQUEST)?;
    let (namespace, name) = key.split_once('/')?;
    Some(ObjectRef::new(name).within(namespace))
}
