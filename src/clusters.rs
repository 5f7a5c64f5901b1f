//! Connections to the two clusters.
//!
//! The remote cluster is reached only through the kubeconfig file an
//! operator mounted; the internal one through `KUBECONFIG` or the pod's
//! service account, like any in-cluster controller.

use std::path::Path;

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Where the pod's namespace is mounted in a cluster.
const POD_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// A client for the remote cluster from a kubeconfig file.
pub async fn remote_client(path: &Path) -> anyhow::Result<Client> {
    let config = config_from(path).await?;
    Client::try_from(config).context("cannot build a client for the remote cluster")
}

/// The client configuration in a kubeconfig file; errors name the file and
/// say what is wrong once.
pub async fn config_from(path: &Path) -> anyhow::Result<Config> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|err| {
        let cause =
            std::error::Error::source(&err).map_or_else(|| err.to_string(), ToString::to_string);
        anyhow::anyhow!("cannot read kubeconfig {}: {cause}", path.display())
    })?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("kubeconfig {} is not usable", path.display()))
}

/// A client for the internal cluster: `KUBECONFIG`, then in-cluster.
pub async fn internal_client() -> anyhow::Result<Client> {
    let config = Config::infer()
        .await
        .context("cannot find the internal cluster: set KUBECONFIG or run in a pod")?;
    Client::try_from(config).context("cannot build a client for the internal cluster")
}

/// The controller's namespace: the flag, else the pod's own namespace.
pub fn controller_namespace(flag: Option<&str>) -> anyhow::Result<String> {
    if let Some(namespace) = flag {
        return Ok(namespace.to_owned());
    }
    let namespace = std::fs::read_to_string(POD_NAMESPACE_FILE).with_context(|| {
        format!("no --namespace given and not running in a pod ({POD_NAMESPACE_FILE} unreadable)")
    })?;
    Ok(namespace.trim().to_owned())
}
