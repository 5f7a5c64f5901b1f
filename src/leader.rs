//! Leader election, so that of several replicas exactly one serves.
//!
//! A Lease in the controller's namespace holds the leader's identity; the
//! `kube-lease-manager` crate takes, renews and releases it. A standby waits
//! until the lease expires (at most its duration after the leader died) and
//! takes over. A leader stopped with SIGTERM releases the lease; a standby
//! also watches the Lease, so it takes a released lease at once instead of
//! sleeping until the old expiry. A leader that loses the lease stops
//! serving at once: another replica may already be running requests, and
//! two leaders could race on the same request.

use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
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
    task: JoinHandle<()>,
    identity: String,
}

impl Election {
    /// Joins the election; creates the Lease if it does not exist.
    pub async fn join(client: Client, settings: LeaseSettings) -> anyhow::Result<Self> {
        let manager = manager(&client, &settings).await?;
        let (sender, leading) = watch::channel(false);
        let identity = settings.identity.clone();
        tracing::info!(lease = %settings.name, %identity, "joined leader election");
        let task = tokio::spawn(campaign(client, settings, manager, sender));
        Ok(Self {
            leading,
            task,
            identity,
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
        if let Err(err) = self.task.await {
            tracing::warn!(identity = %self.identity, error = %err, "lease task failed; the lease expires on its own");
        }
    }
}

async fn manager(client: &Client, settings: &LeaseSettings) -> anyhow::Result<LeaseManager> {
    let seconds = settings.duration.as_secs();
    LeaseManagerBuilder::new(client.clone(), &settings.name)
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
        })
}

/// Takes and keeps the lease, reporting every change to `sender`, until all
/// receivers are gone; then releases it.
///
/// A standby's lease manager sleeps until the expiry it last saw. When the
/// Lease is released before that, the standby builds a fresh manager, which
/// reads the Lease anew and takes it; a standby holds nothing, so dropping
/// its manager loses nothing.
async fn campaign(
    client: Client,
    settings: LeaseSettings,
    mut manager: LeaseManager,
    sender: watch::Sender<bool>,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", settings.name));
    let released = watcher(leases, config)
        .default_backoff()
        .applied_objects()
        .filter(|lease| {
            let free = lease
                .as_ref()
                .is_ok_and(|l| l.spec.as_ref().is_none_or(|s| s.holder_identity.is_none()));
            std::future::ready(free)
        });
    futures::pin_mut!(released);

    loop {
        let leading = *sender.borrow();
        tokio::select! {
            biased;
            _ = sender.closed() => break,
            changed = manager.changed() => match changed {
                Ok(now) => {
                    if sender.send(now).is_err() {
                        break;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "leader election failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            Some(_) = released.next(), if !leading => {
                tracing::debug!("lease released by its holder; looking again");
                match self::manager(&client, &settings).await {
                    Ok(fresh) => manager = fresh,
                    Err(err) => tracing::warn!(error = %format!("{err:#}"), "cannot read the released lease"),
                }
            }
        }
    }

    match manager.release().await {
        Ok(()) => tracing::info!("lease released"),
        Err(err) => {
            tracing::warn!(error = %err, "could not release the lease; it expires on its own")
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
