//! The `internal-services` binary: parse flags, dispatch, map errors to exit codes.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use internal_services::cli::{Cli, Command, PolicyCommand, RunArgs};
use internal_services::{clusters, controller, crd, dry_run, policy::PolicySet, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);

    let outcome = match cli.command {
        Command::Run(args) => run_controller(args).map(|()| ExitCode::SUCCESS),
        Command::Crd(args) => crd::emit(args.output_dir.as_deref()).map(|()| ExitCode::SUCCESS),
        Command::Policy(PolicyCommand::DryRun(args)) => {
            dry_run::run(&args, &mut std::io::stdout().lock()).map(
                |all_admitted| match all_admitted {
                    true => ExitCode::SUCCESS,
                    false => ExitCode::from(1),
                },
            )
        }
    };

    outcome.unwrap_or_else(|err| {
        eprintln!("internal-services: {err:#}");
        ExitCode::from(2)
    })
}

fn run_controller(args: RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let settings = controller::Settings {
            remote: clusters::remote_client(&args.remote_kubeconfig).await?,
            internal: clusters::internal_client().await?,
            namespace: clusters::controller_namespace(args.namespace.as_deref())?,
            cluster: args.remote_cluster_name,
            request_selector: args.request_selector,
            policies: PolicySet::load_dir(&args.policies)?,
            concurrency: args.concurrency,
        };
        controller::run(settings).await
    })
}
