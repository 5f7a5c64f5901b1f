//! Prometheus metrics, and the HTTP endpoint serving them with the probes.
//!
//! One registry per process. Counters are labelled by low-cardinality
//! values only (outcome, reason, failure class, cluster), never by request
//! name. The number of runs in flight is read from the controllers' run
//! caches at scrape time, so it is exact after any restart instead of a
//! counter that drifts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::PipelineRun;
use crate::relay::{self, RunState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub cluster: String,
    pub outcome: &'static str,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

/// Latency buckets from 1 ms to about 16 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    /// Policy reloads by result (`success`, `error`).
    pub policy_reloads: Family<ResultLabels, Counter>,
    /// Policy files currently not compiling.
    pub policy_broken_files: Gauge,
    /// Script failures by class.
    pub policy_failures: Family<ClassLabels, Counter>,
    /// Requests by cluster, outcome and deciding rule or reason.
    pub requests: Family<OutcomeLabels, Counter>,
    /// Time to decide admission (core checks and every policy).
    pub admission_seconds: Histogram,
    /// Time from seeing a finished run to its outcome written on the request.
    pub relay_seconds: Family<ClusterLabels, Histogram, fn() -> Histogram>,
    /// Reconciles running now, by cluster.
    pub reconciles_in_flight: Family<ClusterLabels, Gauge>,
    /// Whether this replica leads (1) or stands by (0).
    pub leader: Gauge,
    /// The run caches, for the runs-in-flight gauge.
    pub runs: Arc<RunsInFlight>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut metrics = Metrics {
            registry: Registry::default(),
            policy_reloads: Family::default(),
            policy_broken_files: Gauge::default(),
            policy_failures: Family::default(),
            requests: Family::default(),
            admission_seconds: latency(),
            relay_seconds: Family::new_with_constructor(latency),
            reconciles_in_flight: Family::default(),
            leader: Gauge::default(),
            runs: Arc::default(),
        };
        let registry = &mut metrics.registry;
        let prefix = &mut registry.sub_registry_with_prefix("internal_services");
        prefix.register(
            "policy_reloads",
            "Policy reloads by result",
            metrics.policy_reloads.clone(),
        );
        prefix.register(
            "policy_broken_files",
            "Policy files whose current text does not compile",
            metrics.policy_broken_files.clone(),
        );
        prefix.register(
            "policy_failures",
            "Policy script failures by class",
            metrics.policy_failures.clone(),
        );
        prefix.register(
            "requests",
            "Requests by cluster, outcome and reason",
            metrics.requests.clone(),
        );
        prefix.register(
            "admission_duration_seconds",
            "Time to decide admission: core checks and every policy",
            metrics.admission_seconds.clone(),
        );
        prefix.register(
            "relay_duration_seconds",
            "Time from seeing a finished PipelineRun to its outcome written on the request",
            metrics.relay_seconds.clone(),
        );
        prefix.register(
            "reconciles_in_flight",
            "Reconciles running now",
            metrics.reconciles_in_flight.clone(),
        );
        prefix.register(
            "leader",
            "1 when this replica holds the lease and serves, 0 on standby",
            metrics.leader.clone(),
        );
        prefix.register_collector(Box::new(metrics.runs.clone()));
        Arc::new(metrics)
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The number of PipelineRuns that have not finished, per remote cluster,
/// read from each controller's run cache when scraped.
#[derive(Debug, Default)]
pub struct RunsInFlight {
    stores: Mutex<BTreeMap<String, Store<PipelineRun>>>,
}

impl RunsInFlight {
    /// Counts `cluster`'s runs from `store` from now on (replacing an
    /// earlier store of the same cluster).
    pub fn track(&self, cluster: &str, store: Store<PipelineRun>) {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        stores.insert(cluster.to_owned(), store);
    }

    fn counts(&self) -> Vec<(String, i64)> {
        let stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        stores
            .iter()
            .map(|(cluster, store)| {
                let running = store
                    .state()
                    .iter()
                    .filter(|run| relay::state(run) == RunState::Running)
                    .count();
                (cluster.clone(), running as i64)
            })
            .collect()
    }
}

impl Collector for RunsInFlight {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "runs_in_flight",
            "PipelineRuns created for requests that have not finished yet",
            None,
            MetricType::Gauge,
        )?;
        for (cluster, running) in self.counts() {
            let labels = ClusterLabels { cluster };
            ConstGauge::new(running).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// What the probes ask.
pub trait Health: Send + Sync + 'static {
    /// Whether this process is ready, and a word on why (or why not).
    fn readiness(&self) -> (bool, String);
}

struct Shared<H> {
    metrics: Arc<Metrics>,
    health: Arc<H>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the process stops.
/// Logs the address it listens on, which tells the port when 0 was asked.
pub async fn serve<H: Health>(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<H>,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared { metrics, health });
    let app = Router::new()
        .route("/metrics", get(metrics_text::<H>))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<H>))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving metrics and probes");
    axum::serve(listener, app).await
}

async fn metrics_text<H: Health>(State(shared): State<Arc<Shared<H>>>) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
}

async fn readyz<H: Health>(State(shared): State<Arc<Shared<H>>>) -> impl IntoResponse {
    match shared.health.readiness() {
        (true, why) => (StatusCode::OK, why),
        (false, why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}
