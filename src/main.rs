//! The `internal-services` binary: parse flags, dispatch, map outcomes to
//! exit codes (0 success, 1 a negative answer, 2 an error, 21 and 124 for
//! the request commands).
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use internal_services::cli::{Cli, Command, PolicyCommand, RequestCommand, RunArgs};
use internal_services::leader::{self, Election, LeaseSettings};
use internal_services::metrics::{self, Metrics};
use internal_services::policy::LivePolicies;
use internal_services::policy_watch::{self, PolicySource, Reloader};
use internal_services::shutdown::Stop;
use internal_services::{clusters, commands, controller, crd, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);

    let outcome = match cli.command {
        Command::Run(args) => run_controller(args).map(|()| 0),
        Command::Crd(args) => crd::emit(args.output_dir.as_deref()).map(|()| 0),
        Command::Policy(command) => run_policy_command(command).map(|ok| u8::from(!ok)),
        Command::Request(command) => run_request_command(command),
    };

    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("internal-services: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs an offline command; `Ok(false)` is a negative answer (exit 1).
fn run_policy_command(command: PolicyCommand) -> anyhow::Result<bool> {
    let out = &mut std::io::stdout().lock();
    match command {
        PolicyCommand::Check(args) => commands::check::run(&args, out),
        PolicyCommand::DryRun(args) => commands::dry_run::run(&args, out),
        PolicyCommand::Test(args) => commands::suite::run(&args, out).map(|s| s.failed == 0),
        PolicyCommand::Bench(args) => commands::bench::run(&args, out).map(|_| true),
        PolicyCommand::Configmap(args) => commands::configmap::run(&args, out),
    }
}

fn run_request_command(command: RequestCommand) -> anyhow::Result<u8> {
    let out = &mut std::io::stdout().lock();
    let ending = match command {
        RequestCommand::Submit(args) => commands::request::submit(&args, out)?,
        RequestCommand::Wait(args) => commands::request::wait(&args, out)?,
    };
    Ok(ending.exit_code())
}

fn run_controller(args: RunArgs) -> anyhow::Result<()> {
    let remotes = args.remote_clusters().map_err(anyhow::Error::msg)?;
    // Policies are evaluated on blocking threads; a few are plenty (a
    // decision takes microseconds), and each thread more is one more
    // allocator arena holding memory.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(4)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stop = Stop::on_signals();
        // Whatever the controller waits on (a cluster that does not answer,
        // a lease), a stop ends the process within a bounded time.
        let overdue = async {
            stop.clone().wait().await;
            tokio::time::sleep(STOP_DEADLINE).await;
        };
        tokio::select! {
            result = serve(args, remotes, stop.clone()) => result,
            _ = overdue => {
                tracing::warn!(deadline = ?STOP_DEADLINE, "not stopped in time after the stop signal; exiting");
                Ok(())
            }
        }
    })
}

/// How long after SIGTERM the process exits at the latest: within the
/// Deployment's grace period, after reconciles in flight had their 15 s.
const STOP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

async fn serve(
    args: RunArgs,
    remotes: Vec<internal_services::cli::RemoteCluster>,
    stop: Stop,
) -> anyhow::Result<()> {
    let internal = clusters::internal_client().await?;
    let namespace = clusters::controller_namespace(args.namespace.as_deref())?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(leader::default_identity);
    let metrics = Metrics::new();
    let policies = Arc::new(LivePolicies::default());

    let source = policy_source(&args);
    tracing::info!(%source, "loading policies");
    let reloader = Reloader::new(policies.clone(), metrics.clone());
    policy_watch::start(source, reloader, internal.clone(), namespace.clone()).await?;

    let readiness = Arc::new(controller::Readiness::new(policies.clone()));
    serve_probes(&args, metrics.clone(), readiness.clone());

    let settings = controller::Settings {
        internal: internal.clone(),
        namespace: namespace.clone(),
        remotes,
        request_selector: args.request_selector.clone(),
        policies,
        metrics: metrics.clone(),
        concurrency: args.concurrency,
        cancel_grace: args.cancel_grace_period,
        events: args.events.then(|| identity.clone()),
    };
    if !args.leader_election {
        readiness.set_role("serving");
        metrics.leader.set(1);
        return controller::run(settings, stop).await;
    }

    let lease = LeaseSettings {
        namespace,
        name: args.lease_name.clone(),
        identity,
        duration: args.lease_duration,
    };
    lead_then_serve(internal, lease, settings, stop, &readiness, &metrics).await
}

/// Waits for the lease, serves while holding it, releases it on stop. A
/// leader that loses the lease stops at once with an error, so that its
/// restart makes it a standby.
async fn lead_then_serve(
    internal: kube::Client,
    lease: LeaseSettings,
    settings: controller::Settings,
    stop: Stop,
    readiness: &controller::Readiness,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let mut election = Election::join(internal, lease).await?;
    readiness.set_role("standby");
    tokio::select! {
        acquired = election.acquired() => acquired?,
        _ = stop.clone().wait() => {
            election.release().await;
            return Ok(());
        }
    }
    tracing::info!("leading; serving requests");
    readiness.set_role("serving");
    metrics.leader.set(1);

    let serving = controller::run(settings, stop);
    tokio::select! {
        result = serving => {
            election.release().await;
            result
        }
        _ = election.lost() => {
            metrics.leader.set(0);
            Err(anyhow::anyhow!("lost the leader lease; stopping so that only one replica serves"))
        }
    }
}

fn serve_probes(args: &RunArgs, metrics: Arc<Metrics>, readiness: Arc<controller::Readiness>) {
    let server = metrics::serve(args.metrics_addr, metrics, readiness);
    tokio::spawn(async move {
        if let Err(err) = server.await.context("metrics and probe server stopped") {
            tracing::error!(error = %format!("{err:#}"), "no metrics or probes");
        }
    });
}

fn policy_source(args: &RunArgs) -> PolicySource {
    if args.policy_configmaps.is_empty() && args.policy_selector.is_none() {
        return PolicySource::Directory(args.policies.clone());
    }
    PolicySource::ConfigMaps {
        names: args.policy_configmaps.clone(),
        selector: args.policy_selector.clone(),
    }
}
