//! Command-line interface: the controller and the offline tools.
//!
//! Exit codes: 0 success; 1 a dry run denied a request, `policy check`
//! found an error or `policy test` had a failing case; 2 the command could
//! not do its work (bad flags, unreadable files, no cluster); for `request
//! submit --wait` and `request wait`, 21 a request failed or was rejected
//! and 124 the wait timed out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "internal-services",
    version,
    about = "Runs Tekton Pipelines on a private cluster for InternalRequests made on a remote cluster",
    after_help = "Exit codes: 0 success; 1 a dry run denied a request, a check found an error, \
                  or a test failed; 2 the command could not do its work; 21 a waited-for request \
                  failed or was rejected; 124 a wait timed out."
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
    /// Submit InternalRequests and wait for them, as a remote pipeline does.
    #[command(subcommand)]
    Request(RequestCommand),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kubeconfig of the remote cluster, where requests live (usually mounted
    /// from a Secret). Re-read when the file changes.
    #[arg(long, env = "REMOTE_KUBECONFIG", alias = "remote-cluster-config-file")]
    pub remote_kubeconfig: Option<PathBuf>,

    /// Name of that remote cluster; part of every run's identity and labels.
    #[arg(long, env = "REMOTE_CLUSTER_NAME", default_value = "remote", value_parser = dns_label)]
    pub remote_cluster_name: String,

    /// A further remote cluster to serve, as NAME=KUBECONFIG; repeat for
    /// several. Each is watched on its own, so one that is down does not
    /// hold up the others.
    #[arg(long = "remote", env = "REMOTE_CLUSTERS", value_delimiter = ',', value_parser = remote_cluster)]
    pub remotes: Vec<RemoteCluster>,

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
    #[arg(long, env = "POLICY_SELECTOR", value_parser = crate::selector::check)]
    pub policy_selector: Option<String>,

    /// Serve only remote requests that match this label selector.
    #[arg(long, env = "REQUEST_SELECTOR", value_parser = crate::selector::check)]
    pub request_selector: Option<String>,

    /// Requests reconciled at the same time, per remote cluster.
    #[arg(long, env = "CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// How long a deleted request's cancelled run may take to stop before it
    /// is deleted outright, such as `2m` or `90s`.
    #[arg(long, env = "CANCEL_GRACE_PERIOD", default_value = "2m", value_parser = duration)]
    pub cancel_grace_period: Duration,

    /// Elect a leader through a Lease in the controller's namespace, so that
    /// only one replica serves at a time.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,

    /// Name of that Lease; controllers serving different remote clusters from
    /// one namespace need different names.
    #[arg(long, env = "LEASE_NAME", default_value = "internal-services", value_parser = dns_label)]
    pub lease_name: String,

    /// How long a leader's Lease lasts without renewal; a standby takes over
    /// at most this long after the leader died.
    #[arg(long, env = "LEASE_DURATION", default_value = "10s", value_parser = lease_duration)]
    pub lease_duration: Duration,

    /// This replica's identity in the Lease (default: the pod's name, else
    /// the host name with a random suffix).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Record Kubernetes Events on remote requests (admitted, rejected,
    /// completed). Each is one more write to the remote cluster.
    #[arg(long, env = "EVENTS", default_value_t = true, action = ArgAction::Set)]
    pub events: bool,

    /// Address for `/metrics`, `/healthz` and `/readyz` (port 0 picks a free port).
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
}

/// One remote cluster to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteCluster {
    pub name: String,
    pub kubeconfig: PathBuf,
}

impl RunArgs {
    /// Every remote cluster to serve; at least one, names unique.
    pub fn remote_clusters(&self) -> Result<Vec<RemoteCluster>, String> {
        let mut all = Vec::new();
        if let Some(path) = &self.remote_kubeconfig {
            all.push(RemoteCluster {
                name: self.remote_cluster_name.clone(),
                kubeconfig: path.clone(),
            });
        }
        all.extend(self.remotes.iter().cloned());
        if all.is_empty() {
            return Err(
                "no remote cluster: give --remote-kubeconfig or --remote NAME=KUBECONFIG".into(),
            );
        }
        let mut names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("remote cluster name '{}' is given twice", pair[0]));
        }
        Ok(all)
    }
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
    /// Print the ConfigMap that carries a policy directory into a cluster.
    Configmap(ConfigMapArgs),
}

#[derive(Debug, Args)]
pub struct ConfigMapArgs {
    /// Directory of `*.rhai` policies.
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,

    /// Name of the ConfigMap.
    #[arg(long, default_value = "internal-services-policies")]
    pub name: String,

    /// Write it to this file instead of printing it.
    #[arg(long)]
    pub output: Option<PathBuf>,
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

#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Create an InternalRequest; with --wait, wait for its outcome.
    Submit(SubmitArgs),
    /// Wait for existing InternalRequests, by name or label selector.
    Wait(WaitArgs),
}

/// Where the request commands find the remote cluster.
#[derive(Debug, Args)]
pub struct RemoteTarget {
    /// Kubeconfig of the cluster where requests live (default: `KUBECONFIG`,
    /// then `~/.kube/config`, then the pod's service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace of the requests (default: the kubeconfig's, else `default`).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub target: RemoteTarget,

    /// Pipeline to run, by name in the controller's namespace.
    #[arg(
        long,
        required_unless_present = "resolver",
        conflicts_with = "resolver"
    )]
    pub pipeline: Option<String>,

    /// Tekton resolver to fetch the Pipeline with instead, such as `git`
    /// (admitted only where a policy allows it).
    #[arg(long)]
    pub resolver: Option<String>,

    /// Resolver parameter, such as `url=https://...`; repeat for several.
    #[arg(long = "resolver-param", value_parser = key_value, requires = "resolver")]
    pub resolver_params: Vec<(String, String)>,

    /// Pipeline parameter as KEY=VALUE; repeat for several.
    #[arg(long = "param", short = 'p', value_parser = key_value)]
    pub params: Vec<(String, String)>,

    /// Label on the request as KEY=VALUE; repeat for several.
    #[arg(long = "label", short = 'l', value_parser = key_value)]
    pub labels: Vec<(String, String)>,

    /// Name of the request (default: generated from the pipeline's name).
    #[arg(long)]
    pub name: Option<String>,

    /// Timeout of the whole PipelineRun, such as `1h`.
    #[arg(long)]
    pub pipeline_timeout: Option<String>,

    /// Timeout of its tasks.
    #[arg(long)]
    pub tasks_timeout: Option<String>,

    /// Timeout of its finally tasks.
    #[arg(long)]
    pub finally_timeout: Option<String>,

    /// Service account the run's tasks use.
    #[arg(long)]
    pub service_account: Option<String>,

    /// Wait for the outcome: exit 0 when it succeeded, 21 when it failed or
    /// was rejected, 124 when --timeout passed first.
    #[arg(long)]
    pub wait: bool,

    /// How long to wait, such as `30m`.
    #[arg(long, default_value = "1h", value_parser = duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub target: RemoteTarget,

    /// Name of the request to wait for.
    #[arg(required_unless_present = "selector", conflicts_with = "selector")]
    pub name: Option<String>,

    /// Wait for every request matching this label selector instead.
    #[arg(long, short = 'l', value_parser = crate::selector::check)]
    pub selector: Option<String>,

    /// How long to wait, such as `30m`.
    #[arg(long, default_value = "1h", value_parser = duration)]
    pub timeout: Duration,
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

/// `NAME=KUBECONFIG` of a remote cluster.
fn remote_cluster(value: &str) -> Result<RemoteCluster, String> {
    let (name, path) = value
        .split_once('=')
        .ok_or("must be NAME=KUBECONFIG, such as east=/etc/remotes/east/kubeconfig")?;
    let name = dns_label(name).map_err(|err| format!("cluster name '{name}' {err}"))?;
    if path.is_empty() {
        return Err(format!("cluster '{name}' has no kubeconfig path"));
    }
    Ok(RemoteCluster {
        name,
        kubeconfig: PathBuf::from(path),
    })
}

/// A lease duration: whole seconds, at least 2.
fn lease_duration(value: &str) -> Result<Duration, String> {
    let parsed = duration(value)?;
    if parsed < Duration::from_secs(2) || parsed.subsec_nanos() != 0 {
        return Err("must be whole seconds, at least 2s".to_owned());
    }
    Ok(parsed)
}

/// `KEY=VALUE`, as in `--param` and `--label`.
fn key_value(value: &str) -> Result<(String, String), String> {
    let (key, value) = value.split_once('=').ok_or("must be KEY=VALUE")?;
    if key.is_empty() {
        return Err("the key before '=' is empty".to_owned());
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// A duration such as `90s`, `2m` or `1h30m`.
fn duration(value: &str) -> Result<Duration, String> {
    crate::duration::parse(value)
        .map_err(|err| format!("not a duration such as '90s' or '2m': {err}"))
}
