//! Leader election, so that of several replicas exactly one serves.
//!
//! A Lease in the controller's namespace holds the leader's identity; the
//! `kube-lease-manager` crate takes, renews and releases it. A standby waits
//! until the lease expires (at most its duration after the leader died) and
//! takes over. A leader that loses the lease stops serving at once: another
//! replica may already be running requests, and two leaders could race on
//! the same request.

use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where the lease is and who is asking for it.
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

/// A running election for one lease.
pub struct Election {
    leading: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<LeaseManager>>,
    identity: String,
}

impl Election {
    /// Joins the election; creates the Lease if it does not exist.
    pub async fn join(client: Client, settings: LeaseSettings) -> anyhow::Result<Self> {
        let seconds = settings.duration.as_secs();
        let manager = LeaseManagerBuilder::new(client, &settings.name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(seconds)
            .with_grace(renew_margin(seconds))
            .build()
            .await
            .with_context(|| {
                format!(
                    "cannot use Lease {}/{} for leader election",
                    settings.namespace, settings.name
                )
            })?;
        let (leading, task) = manager.watch().await;
        tracing::info!(lease = %settings.name, identity = %settings.identity, "joined leader election");
        Ok(Self {
            leading,
            task,
            identity: settings.identity,
        })
    }

    /// Resolves once this replica leads.
    pub async fn acquired(&mut self) -> anyhow::Result<()> {
        self.leading
            .wait_for(|leading| *leading)
            .await
            .map(|_| ())
            .context("leader election stopped")
    }

    /// Resolves if this replica, leading, loses the lease.
    pub async fn lost(&mut self) {
        let _ = self.leading.wait_for(|leading| !*leading).await;
    }

    /// Gives the lease up so a standby takes over at once, not after it expires.
    pub async fn release(self) {
        drop(self.leading);
        match self.task.await {
            Ok(Ok(_)) => tracing::info!(identity = %self.identity, "lease released"),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "could not release the lease; it expires on its own")
            }
            Err(err) => {
                tracing::warn!(error = %err, "lease task failed; the lease expires on its own")
            }
        }
    }
}

/// How long before expiry the leader renews: a third of the lease, at
/// least a second, so one failed renewal can be retried in time.
fn renew_margin(seconds: u64) -> u64 {
    (seconds / 3).max(1)
}

/// A default identity: the host name and a random suffix, so two processes
/// on one host (as in tests) are still distinct.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "internal-services".to_owned());
    format!("{host}-{:08x}", std::process::id() ^ rand_bits())
}

fn rand_bits() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    nanos.rotate_left(13)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_leaves_time_for_a_retry() {
        assert_eq!(renew_margin(10), 3);
        assert_eq!(renew_margin(2), 1);
        assert_eq!(renew_margin(60), 20);
    }
}
