//! The controller: watches requests on each remote cluster and runs on the
//! internal one, and turns each change into a reconcile of one request.
//!
//! Requests are the controller's main objects. PipelineRuns, the config and
//! Pipelines are each kept in a watch-fed cache on the internal cluster, so
//! a reconcile reads them without an API call; a run's change is mapped back
//! to its request through the annotation the controller put on it. The
//! config and Pipeline caches are shared by every remote cluster; each
//! remote has its own request watch, run cache and work queue, so one
//! remote that is slow or down holds up no other.

mod context;
mod finalizer;
mod memory;
mod reconcile;
mod remote;
mod teardown;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

pub use context::Context;
pub use finalizer::NAME as FINALIZER;
pub use reconcile::Error;

use crate::api::{CONFIG_NAME, InternalRequest, InternalServicesConfig, Pipeline};
use crate::cli::RemoteCluster;
use crate::metrics::Metrics;
use crate::policy::LivePolicies;
use crate::shutdown::Stop;

/// What the controller needs to start.
pub struct Settings {
    pub internal: Client,
    /// The controller's namespace on the internal cluster.
    pub namespace: String,
    /// The remote clusters to serve, by name.
    pub remotes: Vec<RemoteCluster>,
    /// Only requests matching this label selector are served.
    pub request_selector: Option<String>,
    pub policies: Arc<LivePolicies>,
    pub metrics: Arc<Metrics>,
    /// Reconciles at the same time, per remote cluster.
    pub concurrency: u16,
    /// How long a deleted request waits for Tekton to stop its cancelled run
    /// before the run is deleted outright.
    pub cancel_grace: Duration,
    /// Record Events on remote requests, as this instance.
    pub events: Option<String>,
}

/// The caches every remote cluster's controller reads.
#[derive(Clone)]
pub(crate) struct SharedCaches {
    configs: Store<InternalServicesConfig>,
    pipelines: Store<Pipeline>,
    /// Whether both hold a full list.
    filling: tokio::sync::watch::Receiver<context::Filling>,
}

/// Readiness for `/readyz`: policies loaded, and this replica either
/// serving or standing by for the lease. A standby is ready: it is healthy
/// and takes over on its own; marking it unready would stall every rollout
/// that waits for new pods to be ready before old ones go.
pub struct Readiness {
    policies: Arc<LivePolicies>,
    role: Mutex<&'static str>,
}

impl Readiness {
    pub fn new(policies: Arc<LivePolicies>) -> Self {
        Self {
            policies,
            role: Mutex::new("starting"),
        }
    }

    /// Records what this replica does now: `standby` or `serving`.
    pub fn set_role(&self, role: &'static str) {
        *self.role.lock().unwrap_or_else(|p| p.into_inner()) = role;
    }
}

impl crate::metrics::Health for Readiness {
    fn readiness(&self) -> (bool, String) {
        let role = *self.role.lock().unwrap_or_else(|p| p.into_inner());
        match self.policies.is_loaded() {
            true => (role != "starting", role.to_owned()),
            false => (false, "policies not loaded yet".to_owned()),
        }
    }
}

/// Serves every remote cluster until `stop` trips; in-flight reconciles
/// finish first.
pub async fn run(settings: Settings, stop: Stop) -> anyhow::Result<()> {
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
    let (c, p) = (configs.clone(), pipelines.clone());
    let filling = context::publish_filling(async move {
        match (c.wait_until_ready().await, p.wait_until_ready().await) {
            (Ok(()), Ok(())) => context::Filling::Ready,
            _ => context::Filling::Gone,
        }
    });
    let caches = SharedCaches {
        configs,
        pipelines,
        filling,
    };

    let settings = Arc::new(settings);
    let servers = settings.remotes.iter().map(|remote| {
        remote::serve(
            settings.clone(),
            caches.clone(),
            remote.clone(),
            stop.clone(),
        )
    });
    futures::future::join_all(servers).await;
    tracing::info!("controller stopped");
    Ok(())
}

/// Drops what the controller never reads from a cached object: the managed
/// fields, and the copy of the object `kubectl apply` leaves in an
/// annotation. Most of a small object's size is there, and ten thousand
/// cached requests are ten thousand copies of it.
fn slim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Slims a cached request further once it is done: a completed request
/// without our finalizer is only ever looked at again to see that it is
/// done, to expire it, or to clean up a run kept after it. Its parameters,
/// results, labels, annotations, audit record and message are dropped from
/// the cache (never from the cluster), which keeps thousands of completed
/// requests cheap to track.
fn slim_request(request: &mut InternalRequest) {
    slim(request);
    let done = request.status.as_ref().is_some_and(|s| s.is_terminal());
    if !done || finalizer::held(request) {
        return;
    }
    request.metadata.labels = None;
    request.metadata.annotations = None;
    request.spec.params.clear();
    request.spec.timeouts = None;
    if let Some(status) = request.status.as_mut() {
        status.results.clear();
        status.admission = None;
        for condition in &mut status.conditions {
            condition.message.clear();
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
    let stream = watcher(api, config)
        .default_backoff()
        .modify(slim)
        .reflect(writer);
    tokio::spawn(async move {
        stream
            .for_each(|event| async move {
                if let Err(err) = event {
                    tracing::warn!(kind = %K::kind(&()), error = %err, "watch failed; retrying");
                }
            })
            .await;
    });
    reader
}
