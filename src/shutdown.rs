//! One stop signal for the whole process.
//!
//! SIGTERM (what Kubernetes sends before it kills a pod) and Ctrl-C both
//! trip it. Everything that must end cleanly holds a [`Stop`]: the
//! controllers stop taking new work and finish what is in flight, the lease
//! is released, and only then does the process exit.

use tokio::sync::watch;

/// A handle that says whether, and waits until, the process is stopping.
#[derive(Clone, Debug)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// A stop signal tripped by SIGTERM or Ctrl-C.
    pub fn on_signals() -> Self {
        let (sender, receiver) = watch::channel(false);
        tokio::spawn(async move {
            signal().await;
            tracing::info!("stop requested; finishing work in flight");
            let _ = sender.send(true);
        });
        Self(receiver)
    }

    /// A stop signal tripped by hand, for tests; send `true` to stop.
    pub fn manual() -> (watch::Sender<bool>, Self) {
        let (sender, receiver) = watch::channel(false);
        (sender, Self(receiver))
    }

    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the process is stopping.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

#[cfg(unix)]
async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(not(unix))]
async fn signal() {
    let _ = tokio::signal::ctrl_c().await;
}
