//! Shared state of every reconcile of one remote cluster: clients, caches,
//! the policy set, metrics and the Event recorder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};
use tokio::sync::{mpsc, watch};

use super::memory::Memory;
use super::reconcile::Error;
use super::{Settings, SharedCaches};
use crate::api::{
    CONFIG_NAME, InternalRequest, InternalServicesConfig, InternalServicesConfigSpec, Pipeline,
    PipelineRun,
};
use crate::metrics::{ClassLabels, ClusterLabels, Metrics, OutcomeLabels};
use crate::policy::LivePolicies;

/// How long a run missing from the cache after this process created it
/// is put down to cache lag before the API server is asked.
const CACHE_LAG_LIMIT: Duration = Duration::from_secs(2);

fn numeric(version: &str) -> Option<u64> {
    version.parse().ok()
}

/// Events waiting to be published, at most.
const EVENT_QUEUE: usize = 4096;

/// Events published at the same time, at most: a burst of requests must
/// not open a connection per Event.
const EVENT_CONCURRENCY: usize = 4;

/// Publishes queued Events in the background. Each request's Events
/// differ, so there is nothing to aggregate: a recorder per Event keeps no
/// cache that would grow with every request.
fn publish_events(client: Client, reporter: Reporter) -> mpsc::Sender<(Event, ObjectReference)> {
    let (sender, receiver) = mpsc::channel::<(Event, ObjectReference)>(EVENT_QUEUE);
    let queued = tokio_stream_from(receiver);
    tokio::spawn(
        queued.for_each_concurrent(EVENT_CONCURRENCY, move |(event, reference)| {
            let recorder = Recorder::new(client.clone(), reporter.clone());
            async move {
                if let Err(err) = recorder.publish(&event, &reference).await {
                    tracing::debug!(error = %err, "could not record an Event on the request");
                }
            }
        }),
    );
    sender
}

/// The receiver as a stream.
fn tokio_stream_from<T>(mut receiver: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// Longest a reconcile waits for the caches to fill.
const CACHE_WAIT: Duration = Duration::from_secs(10);

/// Everything a reconcile reads or writes through.
pub struct Context {
    pub remote: Client,
    pub internal: Client,
    pub namespace: String,
    pub cluster: String,
    pub policies: Arc<LivePolicies>,
    pub metrics: Arc<Metrics>,
    configs: Store<InternalServicesConfig>,
    pipelines: Store<Pipeline>,
    pub runs: Store<PipelineRun>,
    pub backoff: Backoff,
    pub cancel_grace: Duration,
    events: Option<mpsc::Sender<(Event, ObjectReference)>>,
    /// The resource version each request got from this controller's last
    /// write to it, to tell a cached copy older than that write.
    written: Memory<u64>,
    /// Runs this controller deleted, which a lagging run cache may still
    /// hold; run names are never reused.
    deleted: Memory<()>,
    /// Runs this process created, and when, which a lagging run cache may
    /// not hold yet.
    created: Memory<Instant>,
    /// Whether the caches hold a full list, as one task found out.
    ready: watch::Receiver<Filling>,
}

/// Where the caches stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Filling {
    Waiting,
    Ready,
    /// A cache's writer went away before it was filled.
    Gone,
}

/// Waits for `fill` in one task and publishes the result to many.
///
/// A store's own wait wakes only the last of several waiters, so a burst of
/// reconciles waiting on it directly would sit until their timeout; one
/// waiter per store, and a watch channel for everyone else, avoids that.
pub(super) fn publish_filling(
    fill: impl Future<Output = Filling> + Send + 'static,
) -> watch::Receiver<Filling> {
    let (sender, receiver) = watch::channel(Filling::Waiting);
    tokio::spawn(async move {
        let _ = sender.send(fill.await);
    });
    receiver
}

/// Resolves once `filling` is no longer waiting.
pub(super) async fn filled(mut filling: watch::Receiver<Filling>) -> Filling {
    match filling.wait_for(|state| *state != Filling::Waiting).await {
        Ok(state) => *state,
        Err(_) => Filling::Gone,
    }
}

/// Failures in a row per request, for the retry delay.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(300);

    /// Counts a failure and returns how long to wait before retrying.
    pub fn next_delay(&self, request: &InternalRequest) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(key(request)).or_default();
        let delay = Self::FIRST
            .saturating_mul(2u32.saturating_pow(*count))
            .min(Self::MAX);
        *count = count.saturating_add(1);
        delay
    }

    /// Forgets the failures of a request that reconciled cleanly.
    pub fn forget(&self, request: &InternalRequest) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if !failures.is_empty() {
            failures.remove(&key(request));
        }
    }
}

fn key(request: &InternalRequest) -> String {
    request.metadata.uid.clone().unwrap_or_default()
}

impl Context {
    pub(super) fn new(
        settings: &Settings,
        caches: &SharedCaches,
        cluster: &str,
        remote: Client,
        runs: Store<PipelineRun>,
    ) -> Self {
        let events = settings.events.as_ref().map(|instance| {
            let reporter = Reporter {
                controller: "internal-services".into(),
                instance: Some(instance.clone()),
            };
            publish_events(remote.clone(), reporter)
        });
        let (shared, own, policies) = (
            caches.filling.clone(),
            runs.clone(),
            settings.policies.clone(),
        );
        let ready = publish_filling(async move {
            if filled(shared).await != Filling::Ready || own.wait_until_ready().await.is_err() {
                return Filling::Gone;
            }
            policies.wait_loaded().await;
            Filling::Ready
        });
        Self {
            ready,
            remote,
            internal: settings.internal.clone(),
            namespace: settings.namespace.clone(),
            cluster: cluster.to_owned(),
            policies: settings.policies.clone(),
            metrics: settings.metrics.clone(),
            configs: caches.configs.clone(),
            pipelines: caches.pipelines.clone(),
            runs,
            backoff: Backoff::default(),
            cancel_grace: settings.cancel_grace,
            events,
            written: Memory::default(),
            deleted: Memory::default(),
            created: Memory::default(),
        }
    }

    /// Waits until every cache holds a full list, so that an empty cache is
    /// never mistaken for a missing config or Pipeline.
    ///
    /// Bounded, so that a reconcile never outlives a shutdown because a watch
    /// keeps failing: it gives up and is retried instead.
    pub async fn caches_ready(&self) -> Result<(), Error> {
        let mut ready = self.ready.clone();
        let wait = ready.wait_for(|state| *state != Filling::Waiting);
        match tokio::time::timeout(CACHE_WAIT, wait).await {
            Ok(Ok(state)) if *state == Filling::Ready => Ok(()),
            Ok(_) => Err(Error::CacheGone),
            Err(_) => Err(Error::CacheNotReady(CACHE_WAIT)),
        }
    }

    /// The config, if it exists.
    pub fn config(&self) -> Option<Arc<InternalServicesConfig>> {
        self.configs
            .get(&ObjectRef::new(CONFIG_NAME).within(&self.namespace))
    }

    /// The config's spec, or `None` when there is no config.
    pub fn config_spec(&self) -> Option<InternalServicesConfigSpec> {
        self.config().map(|c| c.spec.clone())
    }

    pub fn pipeline_exists(&self, name: &str) -> bool {
        self.pipelines
            .get(&ObjectRef::new(name).within(&self.namespace))
            .is_some()
    }

    /// The run, from the cache, unless this controller deleted it already.
    pub fn cached_run(&self, name: &str) -> Option<Arc<PipelineRun>> {
        if self.deleted.get(name).is_some() {
            return None;
        }
        self.runs.get(&ObjectRef::new(name).within(&self.namespace))
    }

    /// Notes that this process created the run `name`.
    pub fn created_run(&self, name: &str) {
        self.created.note(name, Instant::now());
    }

    /// Whether this process created the run `name` so recently that a
    /// cache without it only lags: no need to ask the API server yet.
    pub fn just_created(&self, name: &str) -> bool {
        self.created
            .get(name)
            .is_some_and(|at| at.elapsed() < CACHE_LAG_LIMIT)
    }

    /// Notes that the run `name` is gone.
    pub fn deleted_run(&self, name: &str) {
        self.deleted.note(name, ());
    }

    pub fn runs_api(&self) -> Api<PipelineRun> {
        Api::namespaced(self.internal.clone(), &self.namespace)
    }

    pub fn requests_api(&self, namespace: &str) -> Api<InternalRequest> {
        Api::namespaced(self.remote.clone(), namespace)
    }

    /// Counts the failures policies met while deciding.
    pub fn count_policy_failures(&self, decided: &crate::admission::Decided) {
        for class in decided.report.iter().flat_map(|r| &r.failures) {
            self.count_failure(*class);
        }
    }

    pub fn count_failure(&self, class: crate::policy::FailureClass) {
        let labels = ClassLabels {
            class: class.as_str(),
        };
        self.metrics.policy_failures.get_or_create(&labels).inc();
    }

    /// Counts a request reaching an outcome, by the rule or reason behind it.
    pub fn count_request(&self, outcome: &'static str, reason: &str) {
        let labels = OutcomeLabels {
            cluster: self.cluster.clone(),
            outcome,
            reason: reason.to_owned(),
        };
        self.metrics.requests.get_or_create(&labels).inc();
    }

    /// Labels of this remote cluster's metrics.
    pub fn cluster_labels(&self) -> ClusterLabels {
        ClusterLabels {
            cluster: self.cluster.clone(),
        }
    }

    /// Records an Event on the remote request, in the background: an Event
    /// is for people reading `kubectl describe`, so it never delays or
    /// fails a reconcile, and when the queue is full it is dropped.
    pub fn record(&self, request: &InternalRequest, warning: bool, reason: &str, note: String) {
        let Some(queue) = &self.events else {
            return;
        };
        let reference = request.object_ref(&());
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(crate::status::truncate(note, 1024)),
            action: reason.to_owned(),
            secondary: None,
        };
        if queue.try_send((event, reference)).is_err() {
            tracing::debug!("Event queue full; Event dropped");
        }
    }

    /// Notes the resource version a write of this controller gave `request`.
    pub fn wrote(&self, request: &InternalRequest, version: Option<&str>) {
        let (Some(uid), Some(version)) = (request.metadata.uid.as_ref(), version.and_then(numeric))
        else {
            return;
        };
        self.written.note(uid, version);
    }

    /// Whether this cached copy of `request` predates this controller's own
    /// last write to it, so that acting on it would repeat or undo work;
    /// the watch brings the newer copy. Resource versions are compared as
    /// the numbers the API server gives; where one is not a number the copy
    /// counts as current.
    pub fn is_stale(&self, request: &InternalRequest) -> bool {
        let (Some(uid), Some(seen)) = (
            request.metadata.uid.as_ref(),
            request
                .metadata
                .resource_version
                .as_deref()
                .and_then(numeric),
        ) else {
            return false;
        };
        self.written.get(uid).is_some_and(|last| seen < last)
    }

    /// Forgets a request this controller will not write again.
    pub fn forget_writes(&self, request: &InternalRequest) {
        if let Some(uid) = &request.metadata.uid {
            self.written.forget(uid);
        }
    }

    /// Whether completed runs are kept; without a config they are not.
    pub fn keep_runs(&self) -> bool {
        self.config().is_some_and(|c| c.spec.debug)
    }
}
