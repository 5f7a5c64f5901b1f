//! Command-line interface: the controller and the offline tools.
//!
//! Exit codes: 0 success; 1 a dry run denied a request, `policy check`
//! found an error or `policy test` had a failing case; 2 the command could
//! not do its work (bad flags, unreadable files, no cluster).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "internal-services",
    version,
    about = "Runs Tekton Pipelines on a private cluster for InternalRequests made on a remote cluster",
    after_help = "Exit codes: 0 success; 1 a dry run denied a request, a check found an error, \
                  or a test failed; 2 the command could not do its work."
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
    #[arg(long, env = "REMOTE_CLUSTER_NAME", default_value = "remote", value_parser = dns_label)]
    pub remote_cluster_name: String,

    /// Namespace on the internal cluster for config, Pipelines, runs and policies
    /// (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", value_parser = dns_label)]
    pub namespace: Option<String>,

    /// Directory of `*.rhai` policies, watched for changes (used when no
    /// policy ConfigMap is given).
    #[arg(long, env = "POLICY_DIR", default_value = "policies")]
    pub policies: PathBuf,

    /// ConfigMap in the controller's namespace holding policies, one key per
    /// `*.rhai` file; repeat for several. Watched for changes.
    #[arg(
        long = "policy-configmap",
        env = "POLICY_CONFIGMAPS",
        value_delimiter = ','
    )]
    pub policy_configmaps: Vec<String>,

    /// Label selector of ConfigMaps holding policies, instead of or besides names.
    #[arg(long, env = "POLICY_SELECTOR")]
    pub policy_selector: Option<String>,

    /// Serve only remote requests that match this label selector.
    #[arg(long, env = "REQUEST_SELECTOR")]
    pub request_selector: Option<String>,

    /// Requests reconciled at the same time.
    #[arg(long, env = "CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// How long a deleted request's cancelled run may take to stop before it
    /// is deleted outright, such as `2m` or `90s`.
    #[arg(long, env = "CANCEL_GRACE_PERIOD", default_value = "2m", value_parser = duration)]
    pub cancel_grace_period: Duration,

    /// Address for `/metrics`, `/healthz` and `/readyz` (port 0 picks a free port).
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
}

#[derive(Debug, Args)]
pub struct CrdArgs {
    /// Write one file per CRD into this directory instead of printing them.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Compile and lint policies; report problems as file:line:column.
    Check(CheckArgs),
    /// Decide requests (from files or a live cluster) without running anything.
    DryRun(DryRunArgs),
    /// Run YAML test suites against policies; report rules never reached.
    Test(TestArgs),
    /// Measure decisions per second and latency percentiles.
    Bench(BenchArgs),
}

/// Where offline commands read policies from.
#[derive(Debug, Args)]
pub struct PolicyFiles {
    /// Directory of `*.rhai` policies.
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,

    /// YAML file with the policy ConfigMap(s), instead of a directory.
    #[arg(long)]
    pub configmap: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub files: PolicyFiles,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct DryRunArgs {
    #[command(flatten)]
    pub files: PolicyFiles,

    /// File holding the InternalServicesConfig (YAML or JSON).
    #[arg(long)]
    pub config: PathBuf,

    /// Namespace the controller would run in, named in messages.
    #[arg(long, default_value = "internal-services")]
    pub namespace: String,

    /// Decide every request on this remote cluster instead of files.
    #[arg(long, conflicts_with = "requests")]
    pub remote_kubeconfig: Option<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// Files holding InternalRequests; a file may hold several YAML documents.
    #[arg(required_unless_present = "remote_kubeconfig")]
    pub requests: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    #[command(flatten)]
    pub files: PolicyFiles,

    /// YAML test suites.
    #[arg(required = true)]
    pub suites: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub files: PolicyFiles,

    /// File holding the InternalServicesConfig.
    #[arg(long)]
    pub config: PathBuf,

    /// Decisions to time.
    #[arg(long, default_value_t = 200_000)]
    pub iterations: usize,

    /// Files holding the InternalRequests to decide, in turn.
    #[arg(required = true)]
    pub requests: Vec<PathBuf>,
}

/// A DNS-1123 label: lowercase letters, digits and '-', at most 63 characters.
fn dns_label(value: &str) -> Result<String, String> {
    match crate::admission::is_dns_label(value) {
        true => Ok(value.to_owned()),
        false => Err(
            "must be lowercase letters, digits and '-', start and end with a letter or digit, \
                      at most 63 characters"
                .to_owned(),
        ),
    }
}

/// A duration such as `90s`, `2m` or `1h30m`.
fn duration(value: &str) -> Result<Duration, String> {
    let span: jiff::Span = value
        .parse()
        .map_err(|err| format!("not a duration such as '90s' or '2m': {err}"))?;
    let duration = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|err| err.to_string())?;
    Duration::try_from(duration).map_err(|_| "must not be negative".to_owned())
}
