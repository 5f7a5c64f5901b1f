//! Policies from a directory, reloaded when anything in it changes.
//!
//! The directory itself is watched, not the files: a mounted ConfigMap
//! replaces its content by swapping the `..data` symbolic link, which shows
//! up as an event on the directory. Events are coalesced for a short moment
//! so that a burst of writes causes one reload. Access events are ignored:
//! reading the files to reload them would otherwise cause the next reload.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::Reloader;
use crate::policy;

/// How long to wait for more events before reloading.
const SETTLE: Duration = Duration::from_millis(100);

/// Loads the directory once, then keeps watching it in the background.
pub async fn start(dir: PathBuf, reloader: Reloader) -> anyhow::Result<()> {
    let files = policy::read_dir(&dir)?;
    reloader.apply(files);

    let (events, mut receiver) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        if event.as_ref().map_or(true, changes_content) {
            let _ = events.send(());
        }
    })
    .context("cannot start watching the policy directory")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch policy directory {}", dir.display()))?;

    tokio::spawn(async move {
        let _watcher = watcher;
        while receiver.recv().await.is_some() {
            tokio::time::sleep(SETTLE).await;
            while receiver.try_recv().is_ok() {}
            match policy::read_dir(&dir) {
                Ok(files) => {
                    reloader.apply(files);
                }
                Err(err) => {
                    tracing::error!(error = %err, "policy directory unreadable; keeping the current policies")
                }
            }
        }
    });
    Ok(())
}

/// Whether an event may have changed what the directory holds.
fn changes_content(event: &Event) -> bool {
    !matches!(event.kind, EventKind::Access(_))
}
