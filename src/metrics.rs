//! Prometheus metrics, and the HTTP endpoint serving them with the probes.
//!
//! One registry per process. Counters are labelled by low-cardinality
//! values only (outcome, reason, failure class), never by request name.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
    pub outcome: &'static str,
    pub reason: String,
}

/// Every metric the controller exports.
#[derive(Default)]
pub struct Metrics {
    registry: Registry,
    /// Policy reloads by result (`success`, `error`).
    pub policy_reloads: Family<ResultLabels, Counter>,
    /// Policy files currently not compiling.
    pub policy_broken_files: Gauge,
    /// Script failures by class.
    pub policy_failures: Family<ClassLabels, Counter>,
    /// Requests by outcome and deciding rule or reason.
    pub requests: Family<OutcomeLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut metrics = Metrics::default();
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
            "Requests by outcome and reason",
            metrics.requests.clone(),
        );
        Arc::new(metrics)
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// What the probes ask.
pub trait Health: Send + Sync + 'static {
    fn ready(&self) -> bool;
}

struct Shared<H> {
    metrics: Arc<Metrics>,
    health: Arc<H>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the process stops.
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
    match shared.health.ready() {
        true => (StatusCode::OK, "ready"),
        false => (StatusCode::SERVICE_UNAVAILABLE, "not ready"),
    }
}
