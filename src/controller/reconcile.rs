//! One reconcile of one request: admit and start it, follow its run, clean
//! up after it, or let it go when it is deleted.
//!
//! Guarantees: a request is admitted at most once (a run or a terminal
//! status exists afterwards, and either stops re-admission); the run's name
//! is derived from the request, so a retried reconcile finds the run instead
//! of making a second one; the outcome is written to the request before the
//! run is deleted, so a crash in between leaves a run to clean up, never a
//! lost outcome; the request holds a finalizer exactly while its run exists,
//! so deleting a request never strands a run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::teardown::{self, remaining};
use super::{Context, finalizer};
use crate::admission::{self, Admission, Facts};
use crate::api::{InternalRequest, PipelineRun, reasons};
use crate::policy::{Capture, Retention, RunView};
use crate::relay::{self, RunState};
use crate::{run, status};

/// Why a reconcile stopped early; it is retried after a pause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a watch cache stopped before it was filled")]
    CacheGone,
    #[error(
        "the internal cluster's caches are not filled after {0:?}; is the internal cluster reachable?"
    )]
    CacheNotReady(Duration),
    #[error("cannot create PipelineRun {name}: {source}")]
    CreateRun { name: String, source: kube::Error },
    #[error("cannot read PipelineRun {name}: {source}")]
    ReadRun { name: String, source: kube::Error },
    #[error("cannot delete PipelineRun {name}: {source}")]
    DeleteRun { name: String, source: kube::Error },
    #[error("cannot cancel PipelineRun {name}: {source}")]
    CancelRun { name: String, source: kube::Error },
    #[error("cannot write status of request {request}: {source}")]
    WriteStatus {
        request: String,
        source: kube::Error,
    },
    #[error("cannot update the finalizer of request {request}: {source}")]
    Finalizer {
        request: String,
        source: kube::Error,
    },
    #[error("cannot delete expired request {request}: {source}")]
    DeleteRequest {
        request: String,
        source: kube::Error,
    },
    #[error(
        "request {request} changed after this reconcile read it; its newer version is reconciled next"
    )]
    Stale { request: String },
    #[error("policy evaluation did not finish: {0}")]
    PolicyTask(#[from] tokio::task::JoinError),
}

/// How soon a reconcile that read a stale request is retried. The watch
/// brings the newer version within moments; this only bounds the wait.
const STALE_RETRY: Duration = Duration::from_millis(200);

/// When a copy older than our own write is skipped, when to look again if
/// the watch has not brought the newer one by then.
const STALE_FALLBACK: Duration = Duration::from_secs(2);

/// When a run this process just created is not cached yet, when to look
/// again (its watch event usually comes first).
const CACHE_LAG: Duration = Duration::from_millis(500);

/// Reconciles one request.
#[tracing::instrument(skip_all, fields(cluster = %ctx.cluster, namespace = %request.namespace().unwrap_or_default(), name = %request.name_any(), uid = %request.uid().unwrap_or_default()))]
pub async fn reconcile(request: Arc<InternalRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let in_flight = ctx
        .metrics
        .reconciles_in_flight
        .get_or_create(&ctx.cluster_labels())
        .clone();
    in_flight.inc();
    let result = reconcile_request(&request, &ctx).await;
    in_flight.dec();

    let action = result?;
    ctx.backoff.forget(&request);
    Ok(action)
}

async fn reconcile_request(
    request: &Arc<InternalRequest>,
    ctx: &Arc<Context>,
) -> Result<Action, Error> {
    ctx.caches_ready().await?;
    if ctx.is_stale(request) {
        // Older than our own last write: its watch event brings the newer
        // copy, and this one would only repeat or undo that write.
        return Ok(Action::requeue(STALE_FALLBACK));
    }

    let run_name = run::name_for(&ctx.cluster, request);
    if request.metadata.deletion_timestamp.is_some() {
        return teardown::on_deletion(request, &run_name, ctx).await;
    }

    let status = request.status_or_default();
    let cached = ctx.cached_run(&run_name);
    if status.is_terminal() {
        return settle(ctx, request, cached.as_deref()).await;
    }

    match cached {
        Some(run) => follow(request, &run, ctx).await,
        None if status.pipeline_run.is_some() => confirm_lost(request, &run_name, ctx).await,
        None if finalizer::held(request) => resume(request, &run_name, ctx).await,
        None => admit_and_start(request, &run_name, ctx).await,
    }
}

/// Retries a failed reconcile after a pause that doubles with each failure
/// in a row, from one second up to five minutes.
pub fn error_policy(request: Arc<InternalRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    if matches!(error, Error::Stale { .. }) {
        tracing::debug!(%error, "retrying with the newer version");
        return Action::requeue(STALE_RETRY);
    }
    let delay = ctx.backoff.next_delay(&request);
    tracing::warn!(
        namespace = %request.namespace().unwrap_or_default(),
        name = %request.name_any(),
        %error,
        retry_in = ?delay,
        "reconcile failed; retrying"
    );
    Action::requeue(delay)
}

async fn admit_and_start(
    request: &Arc<InternalRequest>,
    run_name: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    let config = ctx.config_spec();
    let pipeline_exists = ctx.pipeline_exists(&request.spec.request);
    let policies = ctx.policies.current();
    let (namespace, req, cfg) = (ctx.namespace.clone(), request.clone(), config.clone());

    let started = Instant::now();
    let decided = tokio::task::spawn_blocking(move || {
        let facts = Facts {
            namespace: &namespace,
            config: cfg.as_ref(),
            pipeline_exists: Some(pipeline_exists),
        };
        admission::decide(&req, facts, &policies, Capture::default())
    })
    .await?;
    ctx.metrics
        .admission_seconds
        .observe(started.elapsed().as_secs_f64());
    ctx.count_policy_failures(&decided);

    let (Admission::Admit, Some(config)) = (&decided.admission, config) else {
        let message = match &decided.admission {
            Admission::Reject { message, .. } => message.clone(),
            Admission::Admit => "config disappeared during admission".to_owned(),
        };
        tracing::info!(rule = %decided.record.decided_by, %message, policies = %decided.record.policy_set, "request rejected");
        write_status(
            ctx,
            request,
            status::rejected(request, &message, &decided.record),
        )
        .await?;
        ctx.count_request(reasons::REJECTED, &decided.record.decided_by);
        ctx.record(request, true, reasons::REJECTED, message);
        return Ok(Action::await_change());
    };

    // The finalizer changes the request; later writes of this reconcile
    // must carry its new version.
    let namespace = request.namespace().unwrap_or_default();
    let version = match finalizer::add(&ctx.requests_api(&namespace), request).await {
        Ok(version) => version,
        Err(err) if finalizer::list_changed(&err) => {
            return Err(Error::Stale {
                request: run::request_key(request),
            });
        }
        Err(source) => {
            return Err(Error::Finalizer {
                request: run::request_key(request),
                source,
            });
        }
    };
    ctx.wrote(request, version.as_deref());
    let request = &with_version(request, version);

    let run = run::build(run_name, &ctx.namespace, &ctx.cluster, request, &config);
    match ctx.runs_api().create(&PostParams::default(), &run).await {
        Ok(_) => {
            ctx.created_run(run_name);
            tracing::info!(
                run = %run_name,
                pipeline = %request.spec.pipeline_description(),
                policies = %decided.record.policy_set,
                "request admitted; run created"
            )
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Created by an earlier reconcile that the caches have not
            // caught up with; its watch event brings the run to `follow`.
            tracing::debug!(run = %run_name, "run already exists");
            return Ok(Action::await_change());
        }
        Err(kube::Error::Api(e)) if e.code == 400 || e.code == 422 => {
            // Permanent: the API server or an admission webhook (Tekton's,
            // say) refused this run, and would refuse it again.
            let message = format!(
                "the internal cluster refused the PipelineRun: {}",
                e.message
            );
            tracing::info!(%message, "request rejected");
            let mut record = decided.record.clone();
            record.decided_by = "internal-cluster".to_owned();
            write_status(ctx, request, status::rejected(request, &message, &record)).await?;
            ctx.count_request(reasons::REJECTED, &record.decided_by);
            ctx.record(request, true, reasons::REJECTED, message);
            return Ok(Action::await_change());
        }
        Err(source) => {
            return Err(Error::CreateRun {
                name: run_name.to_owned(),
                source,
            });
        }
    }

    let run_ref = format!("{}/{run_name}", ctx.namespace);
    let patch = status::running(request, &run_ref, Some(&decided.record));
    write_status(ctx, request, patch).await?;
    ctx.record(
        request,
        false,
        "Admitted",
        format!(
            "admitted by {}; PipelineRun {run_ref} created",
            decided.record.decided_by
        ),
    );
    Ok(Action::await_change())
}

/// Relays the run's progress; once it finished, writes the outcome and then
/// removes the run unless runs are kept.
async fn follow(
    request: &InternalRequest,
    run: &PipelineRun,
    ctx: &Context,
) -> Result<Action, Error> {
    let run_ref = format!("{}/{}", ctx.namespace, run.name_any());

    if let Some(change) = run::altered(run, &ctx.cluster, request) {
        let message = format!(
            "PipelineRun {run_ref} was changed by someone else ({change}); its outcome would not be this request's"
        );
        tracing::warn!(%message, "run altered");
        write_status(ctx, request, status::lost(request, message.clone())).await?;
        ctx.count_request(reasons::FAILED, "RunAltered");
        ctx.record(request, true, reasons::FAILED, message);
        return Ok(Action::await_change());
    }

    match relay::state(run) {
        RunState::Running => {
            let status = request.status_or_default();
            if status.pipeline_run.as_deref() != Some(run_ref.as_str()) {
                write_status(ctx, request, status::running(request, &run_ref, None)).await?;
            }
            Ok(Action::await_change())
        }
        RunState::Finished(outcome) => {
            let started = Instant::now();
            write_status(ctx, request, status::finished(request, &outcome)).await?;
            ctx.metrics
                .relay_seconds
                .get_or_create(&ctx.cluster_labels())
                .observe(started.elapsed().as_secs_f64());
            tracing::info!(run = %run_ref, succeeded = outcome.succeeded, "run finished; outcome relayed");

            let reason = if outcome.succeeded {
                reasons::SUCCEEDED
            } else {
                reasons::FAILED
            };
            ctx.count_request(reason, reason);
            ctx.record(request, !outcome.succeeded, reason, outcome.message.clone());
            settle(ctx, request, Some(run)).await
        }
    }
}

/// The request holds the finalizer but records no run: an earlier reconcile
/// stopped between adding the finalizer and recording the run, or the cache
/// lags behind its create. Look once at the API server, so that a run that
/// exists is followed rather than admitted again under newer policies.
async fn resume(
    request: &Arc<InternalRequest>,
    run_name: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    if ctx.just_created(run_name) {
        return Ok(Action::requeue(CACHE_LAG));
    }
    match read_run(ctx, run_name).await? {
        Some(run) => follow(request, &run, ctx).await,
        None => admit_and_start(request, run_name, ctx).await,
    }
}

async fn read_run(ctx: &Context, run_name: &str) -> Result<Option<PipelineRun>, Error> {
    ctx.runs_api()
        .get_opt(run_name)
        .await
        .map_err(|source| Error::ReadRun {
            name: run_name.to_owned(),
            source,
        })
}

/// The request as it is after a write that gave it `version`.
fn with_version(request: &Arc<InternalRequest>, version: Option<String>) -> Arc<InternalRequest> {
    match version {
        None => request.clone(),
        Some(version) => {
            let mut updated = InternalRequest::clone(request);
            updated.metadata.resource_version = Some(version);
            Arc::new(updated)
        }
    }
}

/// The request says it is running but the cache has no run: look once at
/// the API server, since the cache may lag behind our own create.
async fn confirm_lost(
    request: &InternalRequest,
    run_name: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    if ctx.just_created(run_name) {
        return Ok(Action::requeue(CACHE_LAG));
    }
    if let Some(run) = read_run(ctx, run_name).await? {
        return follow(request, &run, ctx).await;
    }

    let message = format!(
        "PipelineRun {}/{run_name} was deleted before it finished",
        ctx.namespace
    );
    tracing::warn!(%message, "run lost");
    write_status(ctx, request, status::lost(request, message.clone())).await?;
    ctx.count_request(reasons::FAILED, "RunLost");
    ctx.record(request, true, reasons::FAILED, message);
    Ok(Action::await_change())
}

/// What became of a completed request's run.
enum Cleanup {
    /// Deleted now, or there was none.
    Gone,
    /// Kept for good (`debug`, or a policy said `keep()`).
    KeptForGood,
    /// Kept for this much longer.
    KeptFor(Duration),
    /// Not finished yet (a run someone else changed), so not ours to judge.
    Unfinished,
}

/// A completed request: clean up its run, release the finalizer once no run
/// needs it, and delete the request when its time-to-live is up.
async fn settle(
    ctx: &Context,
    request: &InternalRequest,
    run: Option<&PipelineRun>,
) -> Result<Action, Error> {
    let cleanup = match run {
        Some(run) => clean_up(ctx, request, run).await?,
        None => Cleanup::Gone,
    };
    let kept_for = match cleanup {
        Cleanup::Unfinished => return Ok(Action::await_change()),
        Cleanup::KeptFor(left) => Some(left),
        Cleanup::Gone | Cleanup::KeptForGood => {
            teardown::release(ctx, request).await?;
            None
        }
    };

    let expires_in = teardown::expire(request, ctx).await?;
    match [kept_for, expires_in].into_iter().flatten().min() {
        Some(next) => Ok(Action::requeue(next)),
        None => Ok(Action::await_change()),
    }
}

/// Deletes a finished run now, or later, or never: `debug` keeps every
/// run, otherwise the retention policies decide (default: now).
async fn clean_up(
    ctx: &Context,
    request: &InternalRequest,
    run: &PipelineRun,
) -> Result<Cleanup, Error> {
    let RunState::Finished(outcome) = relay::state(run) else {
        return Ok(Cleanup::Unfinished);
    };
    if ctx.keep_runs() {
        return Ok(Cleanup::KeptForGood);
    }

    let view = RunView {
        name: run.name_any(),
        outcome: if outcome.succeeded {
            reasons::SUCCEEDED
        } else {
            reasons::FAILED
        }
        .to_owned(),
        pipeline: request.spec.pipeline_description(),
        namespace: request.namespace().unwrap_or_default(),
        request: request.name_any(),
    };
    let (policies, config) = (
        ctx.policies.current(),
        ctx.config_spec().unwrap_or_default(),
    );
    let report =
        tokio::task::spawn_blocking(move || policies.retain(&view, &config, Capture::default()))
            .await?;
    for (policy, failure) in &report.failures {
        tracing::warn!(%policy, class = %failure.class, reason = %failure.message, "retention policy failed; its answer counts as delete()");
        ctx.count_failure(failure.class);
    }

    let left = match report.retention {
        Retention::Keep => return Ok(Cleanup::KeptForGood),
        Retention::Delete => Duration::ZERO,
        Retention::KeepFor(keep) => remaining(finished_at(request, &outcome), keep),
    };
    if !left.is_zero() {
        tracing::debug!(run = %run.name_any(), remaining = ?left, "keeping finished run");
        return Ok(Cleanup::KeptFor(left));
    }

    teardown::delete_run(ctx, &run.name_any()).await?;
    Ok(Cleanup::Gone)
}

/// When the run finished: Tekton's completion time, else the request's.
fn finished_at(request: &InternalRequest, outcome: &relay::Outcome) -> Option<jiff::Timestamp> {
    let request_time = request
        .status
        .as_ref()
        .and_then(|s| s.completion_time.clone());
    outcome
        .completion_time
        .clone()
        .or(request_time)
        .map(|t| t.0)
}

/// Writes a status patch, on the condition that the request is still the
/// version this reconcile read: a decision made on a stale copy (a lagging
/// cache, a restart) must never overwrite a newer status, such as an
/// outcome already relayed.
async fn write_status(
    ctx: &Context,
    request: &InternalRequest,
    mut patch: Value,
) -> Result<(), Error> {
    let namespace = request.namespace().unwrap_or_default();
    let name = request.name_any();
    patch["metadata"] = json!({ "resourceVersion": request.resource_version() });
    match ctx
        .requests_api(&namespace)
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(updated) => {
            ctx.wrote(request, updated.metadata.resource_version.as_deref());
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Stale {
            request: format!("{namespace}/{name}"),
        }),
        Err(source) => Err(Error::WriteStatus {
            request: format!("{namespace}/{name}"),
            source,
        }),
    }
}
