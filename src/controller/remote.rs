//! Serving one remote cluster: its request watch, its run cache and its
//! work queue, and a fresh connection whenever its kubeconfig changes.
//!
//! The kubeconfig usually comes from a mounted Secret, which the kubelet
//! updates in place (an atomic `..data` symlink swap) when an operator
//! rotates the credentials. Its directory is watched; when the file's
//! content changes, the controller for this cluster stops gracefully
//! (in-flight reconciles finish) and starts again with a new client. A
//! kubeconfig that cannot be read or used is retried, and holds up no other
//! remote cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kube::api::ListParams;
use kube::runtime::controller::{Config as ControllerConfig, Error as ControllerError};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client};
use notify::{EventKind, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{Context, Settings, SharedCaches, reconcile};
use crate::api::tekton::{annotations, labels};
use crate::api::{InternalRequest, PipelineRun};
use crate::cli::RemoteCluster;
use crate::clusters;
use crate::metrics::ClusterLabels;
use crate::shutdown::Stop;

/// How long to wait before retrying a kubeconfig that could not be used.
const RETRY_CONNECT: Duration = Duration::from_secs(10);

/// How long reconciles in flight may take to finish once serving stops.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Serves `remote` until `stop` trips, reconnecting when its kubeconfig
/// changes.
pub(super) async fn serve(
    settings: Arc<Settings>,
    caches: SharedCaches,
    remote: RemoteCluster,
    stop: Stop,
) {
    let path = remote.kubeconfig.clone();
    loop {
        let watch = KubeconfigWatch::start(&path)
            .inspect_err(|err| {
                tracing::warn!(cluster = %remote.name, error = %err, "cannot watch the remote kubeconfig; changes need a restart")
            })
            .ok();
        let until = until_changed(stop.clone(), watch, fingerprint(&path));

        match clusters::remote_client(&path).await {
            Ok(client) => serve_with(&settings, &caches, &remote, client, until).await,
            Err(err) => {
                tracing::error!(cluster = %remote.name, error = %format!("{err:#}"), "cannot connect to the remote cluster; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_CONNECT) => {}
                    _ = until => {}
                }
            }
        }

        if stop.is_stopping() {
            return;
        }
        tracing::info!(cluster = %remote.name, kubeconfig = %path.display(), "connecting to the remote cluster again");
    }
}

/// Resolves when `stop` trips or the kubeconfig's content differs from
/// `fingerprint`.
async fn until_changed(stop: Stop, watch: Option<KubeconfigWatch>, fingerprint: Option<[u8; 32]>) {
    let changed = async move {
        let Some(mut watch) = watch else {
            return std::future::pending().await;
        };
        watch.changed_from(fingerprint).await
    };
    tokio::select! {
        _ = stop.wait() => {}
        _ = changed => {}
    }
}

/// Runs the controller of one remote cluster until `until` resolves.
async fn serve_with(
    settings: &Settings,
    caches: &SharedCaches,
    remote: &RemoteCluster,
    client: Client,
    until: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let until = until.shared();
    let ns = &settings.namespace;
    let (runs, runs_writer) = reflector::store::<PipelineRun>();
    let run_selector = format!(
        "{}={},{}={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_VALUE,
        labels::REMOTE_CLUSTER,
        crate::run::label_value(&remote.name)
    );
    let run_events = watcher(
        Api::<PipelineRun>::namespaced(settings.internal.clone(), ns),
        watcher::Config::default().labels(&run_selector),
    )
    .default_backoff()
    .modify(super::slim)
    .reflect(runs_writer)
    .touched_objects();
    settings.metrics.runs.track(&remote.name, runs.clone());

    let mut request_watch = watcher::Config::default();
    if let Some(selector) = &settings.request_selector {
        request_watch = request_watch.labels(selector);
    }
    let requests = Api::<InternalRequest>::all(client.clone());
    let checked = tokio::select! {
        checked = check_remote(&requests, settings.request_selector.as_deref()) => checked,
        _ = until.clone() => return,
    };
    if let Err(err) = checked {
        tracing::error!(cluster = %remote.name, error = %format!("{err:#}"), "not serving this remote cluster");
        until.await;
        return;
    }

    let context = Arc::new(Context::new(settings, caches, &remote.name, client, runs));
    tracing::info!(namespace = %ns, cluster = %remote.name, policies = %settings.policies.current().hash(), "serving remote cluster");

    // The Controller stops gracefully on `until`, finishing reconciles in
    // flight. It cannot notice the trigger while it waits for a first list
    // of requests (a remote cluster that is down, a revoked token), so once
    // no reconcile of this cluster is in flight (or the grace period is
    // over) it is dropped instead: what it had not started yet is listed
    // again by the next connection.
    let in_flight = settings
        .metrics
        .reconciles_in_flight
        .get_or_create(&ClusterLabels {
            cluster: remote.name.clone(),
        })
        .clone();
    let cluster = remote.name.clone();
    let (reader, writer) = reflector::store::<InternalRequest>();
    let request_events = watcher(requests, request_watch)
        .default_backoff()
        .modify(super::slim_request)
        .reflect(writer)
        .applied_objects();
    let serving = Controller::for_stream(request_events, reader)
        .with_config(ControllerConfig::default().concurrency(settings.concurrency))
        .watches_stream(run_events, request_of_run)
        .graceful_shutdown_on(until.clone())
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| {
            let cluster = cluster.clone();
            async move {
                match result {
                    Err(ControllerError::QueueError(err)) => {
                        tracing::warn!(%cluster, error = %err, "watch of InternalRequests failed; retrying")
                    }
                    Err(err) => tracing::debug!(%cluster, error = %err, "reconcile did not complete"),
                    Ok(_) => {}
                }
            }
        });
    let idle = async {
        until.await;
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        while in_flight.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        _ = serving => {}
        _ = idle => {}
    }
    tracing::info!(cluster = %remote.name, "stopped serving remote cluster");
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
                "the remote cluster refused the request selector '{}': {}",
                selector.unwrap_or_default(),
                e.message
            )
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {
            tracing::error!(
                "the remote cluster does not serve InternalRequests (appstudio.redhat.com/v1alpha1): \
                 is the CRD from deploy/crds/remote installed there? Retrying"
            );
            Ok(())
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot list InternalRequests yet; will keep trying");
            Ok(())
        }
    }
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

/// A hash of the file's content, or `None` when it cannot be read.
fn fingerprint(path: &Path) -> Option<[u8; 32]> {
    let bytes = std::fs::read(path).ok()?;
    Some(Sha256::digest(&bytes).into())
}

/// File-system events in the kubeconfig's directory.
struct KubeconfigWatch {
    path: PathBuf,
    events: mpsc::UnboundedReceiver<()>,
    _watcher: notify::RecommendedWatcher,
}

impl KubeconfigWatch {
    fn start(path: &Path) -> notify::Result<Self> {
        let (sender, events) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let access = matches!(&event, Ok(e) if matches!(e.kind, EventKind::Access(_)));
                if !access {
                    let _ = sender.send(());
                }
            })?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(Self {
            path: path.to_owned(),
            events,
            _watcher: watcher,
        })
    }

    /// Resolves once the file's content differs from `fingerprint`.
    async fn changed_from(&mut self, fingerprint: Option<[u8; 32]>) {
        while self.events.recv().await.is_some() {
            // Let a burst of events (a symlink swap is several) settle.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while self.events.try_recv().is_ok() {}
            if self::fingerprint(&self.path) != fingerprint {
                tracing::info!(kubeconfig = %self.path.display(), "remote kubeconfig changed; reconnecting");
                return;
            }
        }
        std::future::pending::<()>().await
    }
}
