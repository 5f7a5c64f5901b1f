//! One reconcile of one request: admit and start it, follow its run, or
//! clean up after it.
//!
//! Guarantees: a request is admitted at most once (a run or a terminal
//! status exists afterwards, and either stops re-admission); the run's name
//! is derived from the request, so a retried reconcile finds the run instead
//! of making a second one; the outcome is written to the request before the
//! run is deleted, so a crash in between leaves a run to clean up, never a
//! lost outcome.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{ResourceExt, api::PostParams};
use serde_json::Value;

use super::Context;
use crate::admission::{self, Admission, Facts};
use crate::api::{InternalRequest, PipelineRun};
use crate::relay::{self, RunState};
use crate::{run, status};

/// Why a reconcile stopped early; it is retried after a pause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a watch cache stopped before it was filled")]
    CacheGone,
    #[error("cannot create PipelineRun {name}: {source}")]
    CreateRun { name: String, source: kube::Error },
    #[error("cannot read PipelineRun {name}: {source}")]
    ReadRun { name: String, source: kube::Error },
    #[error("cannot delete PipelineRun {name}: {source}")]
    DeleteRun { name: String, source: kube::Error },
    #[error("cannot write status of request {request}: {source}")]
    WriteStatus {
        request: String,
        source: kube::Error,
    },
    #[error("policy evaluation did not finish: {0}")]
    PolicyTask(#[from] tokio::task::JoinError),
}

/// Reconciles one request.
#[tracing::instrument(skip_all, fields(namespace = %request.namespace().unwrap_or_default(), name = %request.name_any(), uid = %request.uid().unwrap_or_default()))]
pub async fn reconcile(request: Arc<InternalRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.caches_ready().await?;

    let status = request.status_or_default();
    let run_name = run::name_for(&ctx.cluster, &request);
    let cached = ctx.cached_run(&run_name);

    if status.is_terminal() {
        if let Some(run) = cached {
            clean_up(&ctx, &run).await?;
        }
        return Ok(Action::await_change());
    }

    match cached {
        Some(run) => follow(&request, &run, &ctx).await,
        None if status.pipeline_run.is_some() => confirm_lost(&request, &run_name, &ctx).await,
        None => admit_and_start(&request, &run_name, &ctx).await,
    }
}

/// Retries a failed reconcile after a pause.
pub fn error_policy(request: Arc<InternalRequest>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(
        namespace = %request.namespace().unwrap_or_default(),
        name = %request.name_any(),
        %error,
        "reconcile failed; retrying"
    );
    Action::requeue(Duration::from_secs(5))
}

async fn admit_and_start(
    request: &Arc<InternalRequest>,
    run_name: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    let config = ctx.config_spec();
    let pipeline_exists = ctx.pipeline_exists(&request.spec.request);
    let (policies, namespace, req) = (ctx.policies.clone(), ctx.namespace.clone(), request.clone());

    let admission = tokio::task::spawn_blocking(move || {
        let facts = Facts {
            namespace: &namespace,
            config: config.as_ref(),
            pipeline_exists: Some(pipeline_exists),
        };
        admission::decide(&req, facts, &policies)
    })
    .await?;

    if let Admission::Reject { rule, message } = admission {
        tracing::info!(%rule, %message, "request rejected");
        write_status(ctx, request, status::rejected(request, &message)).await?;
        return Ok(Action::await_change());
    }

    let Some(config) = ctx.config_spec() else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let run = run::build(run_name, &ctx.namespace, &ctx.cluster, request, &config);
    match ctx.runs_api().create(&PostParams::default(), &run).await {
        Ok(_) => {
            tracing::info!(run = %run_name, pipeline = %request.spec.request, "request admitted; run created")
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::debug!(run = %run_name, "run already exists")
        }
        Err(source) => {
            return Err(Error::CreateRun {
                name: run_name.to_owned(),
                source,
            });
        }
    }

    let run_ref = format!("{}/{run_name}", ctx.namespace);
    write_status(ctx, request, status::running(request, &run_ref)).await?;
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

    match relay::state(run) {
        RunState::Running => {
            let status = request.status_or_default();
            if status.pipeline_run.as_deref() != Some(run_ref.as_str()) {
                write_status(ctx, request, status::running(request, &run_ref)).await?;
            }
            Ok(Action::await_change())
        }
        RunState::Finished(outcome) => {
            tracing::info!(run = %run_ref, succeeded = outcome.succeeded, "run finished; relaying outcome");
            write_status(ctx, request, status::finished(request, &outcome)).await?;
            clean_up(ctx, run).await?;
            Ok(Action::await_change())
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
    let found = ctx
        .runs_api()
        .get_opt(run_name)
        .await
        .map_err(|source| Error::ReadRun {
            name: run_name.to_owned(),
            source,
        })?;
    if let Some(run) = found {
        return follow(request, &run, ctx).await;
    }

    let message = format!(
        "PipelineRun {}/{run_name} was deleted before it finished",
        ctx.namespace
    );
    tracing::warn!(%message, "run lost");
    write_status(ctx, request, status::lost(request, message)).await?;
    Ok(Action::await_change())
}

/// Deletes a finished run unless the config keeps runs.
async fn clean_up(ctx: &Context, run: &PipelineRun) -> Result<(), Error> {
    if ctx.keep_runs() || relay::state(run) == RunState::Running {
        return Ok(());
    }

    let name = run.name_any();
    match ctx
        .runs_api()
        .delete(&name, &DeleteParams::background())
        .await
    {
        Ok(_) => tracing::debug!(run = %name, "run deleted"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(source) => return Err(Error::DeleteRun { name, source }),
    }
    Ok(())
}

async fn write_status(ctx: &Context, request: &InternalRequest, patch: Value) -> Result<(), Error> {
    let namespace = request.namespace().unwrap_or_default();
    let name = request.name_any();
    ctx.requests_api(&namespace)
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::WriteStatus {
            request: format!("{namespace}/{name}"),
            source,
        })?;
    Ok(())
}
