//! Command-line interface: the controller and the offline tools.
//!
//! Exit codes: 0 success; 1 a dry run denied at least one request; 2 the
//! command could not do its work (bad flags, unreadable files, no cluster).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "internal-services",
    version,
    about = "Runs Tekton Pipelines on a private cluster for InternalRequests made on a remote cluster",
    after_help = "Exit codes: 0 success; 1 a dry run denied at least one request; 2 error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format.
    #[arg(long, global = true, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the CustomResourceDefinitions, or write them to a directory.
    Crd(CrdArgs),
    /// Work with admission policies offline.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kubeconfig of the remote cluster, where requests live (usually mounted from a Secret).
    #[arg(long, env = "REMOTE_KUBECONFIG", alias = "remote-cluster-config-file")]
    pub remote_kubeconfig: PathBuf,

    /// Name of the remote cluster; part of every run's identity and labels.
    #[arg(long, env = "REMOTE_CLUSTER_NAME", default_value = "remote")]
    pub remote_cluster_name: String,

    /// Namespace on the internal cluster for config, Pipelines and runs
    /// (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,

    /// Directory of `*.rhai` admission policies.
    #[arg(long, env = "POLICY_DIR", default_value = "policies")]
    pub policies: PathBuf,

    /// Serve only remote requests that match this label selector.
    #[arg(long, env = "REQUEST_SELECTOR")]
    pub request_selector: Option<String>,

    /// Requests reconciled at the same time.
    #[arg(long, env = "CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,
}

#[derive(Debug, Args)]
pub struct CrdArgs {
    /// Write one file per CRD into this directory instead of printing them.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Decide requests from files against a policy directory and a config, without a cluster.
    DryRun(DryRunArgs),
}

#[derive(Debug, Args)]
pub struct DryRunArgs {
    /// Directory of `*.rhai` admission policies.
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,

    /// File holding the InternalServicesConfig (YAML or JSON).
    #[arg(long)]
    pub config: PathBuf,

    /// Namespace the controller would run in, named in messages.
    #[arg(long, default_value = "internal-services")]
    pub namespace: String,

    /// Files holding InternalRequests; a file may hold several YAML documents.
    #[arg(required = true)]
    pub requests: Vec<PathBuf>,
}
