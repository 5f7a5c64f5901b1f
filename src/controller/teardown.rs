//! The end of a request's life: deleted by its owner, possibly while its run
//! is still going, or expired by the completed-request time-to-live.
//!
//! Deleting a request that holds the finalizer cancels its run the way
//! Tekton expects (`spec.status: Cancelled`) and waits for Tekton to report
//! the run finished, at most for the cancel grace period; then the run is
//! deleted (unless runs are kept) and the finalizer released, so the
//! deletion completes. A finished run kept by retention is deleted with its
//! request: nobody is left to come back for it.

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::reconcile::Error;
use super::{Context, finalizer};
use crate::api::{InternalRequest, PipelineRun};
use crate::relay::{self, RunState};

/// Handles a request whose deletion has started.
pub async fn on_deletion(
    request: &InternalRequest,
    run_name: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    if !finalizer::held(request) {
        return Ok(Action::await_change());
    }

    // Deletions are rare: ask the API server, so that a run the cache has
    // not seen yet is not left behind.
    let run = ctx
        .runs_api()
        .get_opt(run_name)
        .await
        .map_err(|source| Error::ReadRun {
            name: run_name.to_owned(),
            source,
        })?;
    if let Some(run) = run
        && let Some(wait) = stop_run(request, &run, ctx).await?
    {
        return Ok(Action::requeue(wait));
    }

    release(ctx, request).await?;
    ctx.forget_writes(request);
    tracing::info!("request deleted; finalizer released");
    Ok(Action::await_change())
}

/// Cancels a running run and says how long to wait for Tekton to stop it;
/// deletes a stopped one unless runs are kept.
async fn stop_run(
    request: &InternalRequest,
    run: &PipelineRun,
    ctx: &Context,
) -> Result<Option<Duration>, Error> {
    if matches!(relay::state(run), RunState::Running) {
        if run.spec.status.is_none() {
            cancel(ctx, run).await?;
        }
        let deleting_since = request.metadata.deletion_timestamp.as_ref().map(|t| t.0);
        let left = remaining(deleting_since, ctx.cancel_grace);
        if !left.is_zero() {
            return Ok(Some(left));
        }
        tracing::warn!(run = %run.name_any(), grace = ?ctx.cancel_grace, "run did not stop within the cancel grace period");
    }

    if !ctx.keep_runs() {
        delete_run(ctx, &run.name_any()).await?;
    }
    Ok(None)
}

/// Asks Tekton to cancel the run.
async fn cancel(ctx: &Context, run: &PipelineRun) -> Result<(), Error> {
    let name = run.name_any();
    let patch = json!({ "spec": { "status": "Cancelled" } });
    match ctx
        .runs_api()
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            tracing::info!(run = %name, "request deleted while running; run cancelled");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::CancelRun { name, source }),
    }
}

/// Deletes a run; one already gone is fine.
pub(super) async fn delete_run(ctx: &Context, name: &str) -> Result<(), Error> {
    match ctx
        .runs_api()
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => tracing::debug!(run = %name, "run deleted"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(source) => {
            return Err(Error::DeleteRun {
                name: name.to_owned(),
                source,
            });
        }
    }
    ctx.deleted_run(name);
    Ok(())
}

/// Releases the finalizer, if the request holds it.
pub(super) async fn release(ctx: &Context, request: &InternalRequest) -> Result<(), Error> {
    let namespace = request.namespace().unwrap_or_default();
    let key = format!("{namespace}/{}", request.name_any());
    match finalizer::remove(&ctx.requests_api(&namespace), request).await {
        Ok(version) => {
            ctx.wrote(request, version.as_deref());
            Ok(())
        }
        Err(err) if finalizer::list_changed(&err) => Err(Error::Stale { request: key }),
        Err(source) => Err(Error::Finalizer {
            request: key,
            source,
        }),
    }
}

/// Deletes a completed request once the config's time-to-live for
/// completed requests is up; before that, says how long is left.
pub(super) async fn expire(
    request: &InternalRequest,
    ctx: &Context,
) -> Result<Option<Duration>, Error> {
    let Some(ttl) = ctx.config_spec().and_then(|c| c.completed_request_ttl()) else {
        return Ok(None);
    };
    // A request whose outcome was written in this same reconcile does not
    // show its completion time yet; its own status change brings it back.
    let Some(completed) = request
        .status
        .as_ref()
        .and_then(|s| s.completion_time.as_ref())
        .map(|t| t.0)
    else {
        return Ok(Some(ttl));
    };
    let left = remaining(Some(completed), ttl);
    if !left.is_zero() {
        return Ok(Some(left));
    }

    let namespace = request.namespace().unwrap_or_default();
    let name = request.name_any();
    match ctx
        .requests_api(&namespace)
        .delete(&name, &DeleteParams::background())
        .await
    {
        Ok(_) => tracing::info!(?ttl, "completed request expired; deleted"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(source) => {
            return Err(Error::DeleteRequest {
                request: format!("{namespace}/{name}"),
                source,
            });
        }
    }
    Ok(None)
}

/// Time left of `span` after `since`; zero when `since` is unknown or past.
pub(super) fn remaining(since: Option<jiff::Timestamp>, span: Duration) -> Duration {
    let Some(since) = since else {
        return Duration::ZERO;
    };
    let elapsed = jiff::Timestamp::now().duration_since(since);
    let left = jiff::SignedDuration::try_from(span).unwrap_or(jiff::SignedDuration::MAX) - elapsed;
    Duration::try_from(left).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_time_counts_down_and_stops_at_zero() {
        let now = jiff::Timestamp::now();
        let minute = Duration::from_secs(60);
        let left = remaining(Some(now), minute);
        assert!(left > Duration::from_secs(58) && left <= minute, "{left:?}");

        let long_ago = now - jiff::SignedDuration::from_secs(3600);
        assert_eq!(remaining(Some(long_ago), minute), Duration::ZERO);
        assert_eq!(remaining(None, minute), Duration::ZERO);
    }
}
