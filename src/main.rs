//! The `internal-services` binary: parse flags, dispatch, map outcomes to
//! exit codes (0 success, 1 a negative answer, 2 an error).
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use internal_services::cli::{Cli, Command, PolicyCommand, RunArgs};
use internal_services::metrics::{self, Metrics};
use internal_services::policy::LivePolicies;
use internal_services::policy_watch::{self, PolicySource, Reloader};
use internal_services::{clusters, commands, controller, crd, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);

    let outcome = match cli.command {
        Command::Run(args) => run_controller(args).map(|()| true),
        Command::Crd(args) => crd::emit(args.output_dir.as_deref()).map(|()| true),
        Command::Policy(command) => run_policy_command(command),
    };

    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
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
    }
}

fn run_controller(args: RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let remote = clusters::remote_client(&args.remote_kubeconfig).await?;
        let internal = clusters::internal_client().await?;
        let namespace = clusters::controller_namespace(args.namespace.as_deref())?;
        let metrics = Metrics::new();
        let policies = Arc::new(LivePolicies::default());

        let source = policy_source(&args);
        tracing::info!(%source, "loading policies");
        let reloader = Reloader::new(policies.clone(), metrics.clone());
        policy_watch::start(source, reloader, internal.clone(), namespace.clone()).await?;

        let health = Arc::new(controller::Readiness::new(policies.clone()));
        let server = metrics::serve(args.metrics_addr, metrics.clone(), health);
        tokio::spawn(async move {
            if let Err(err) = server.await {
                tracing::error!(error = %err, "metrics and probe server stopped");
            }
        });

        let settings = controller::Settings {
            remote,
            internal,
            namespace,
            cluster: args.remote_cluster_name,
            request_selector: args.request_selector,
            policies,
            metrics,
            concurrency: args.concurrency,
            cancel_grace: args.cancel_grace_period,
        };
        controller::run(settings).await
    })
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
