//! Where a running controller's policies come from, and how it notices
//! they changed: ConfigMaps watched through the API, or a directory watched
//! through the file system (which also follows a mounted ConfigMap's atomic
//! `..data` swap). Either way a change rebuilds the whole set, without a
//! restart, and the outcome is logged and counted.

mod configmaps;
mod directory;

use std::path::PathBuf;
use std::sync::Arc;

use kube::Client;

use crate::metrics::{Metrics, ResultLabels};
use crate::policy::{Build, LivePolicies, SourceFile};

pub use configmaps::files_from_configmaps;

/// Where policies are read from.
#[derive(Clone, Debug)]
pub enum PolicySource {
    Directory(PathBuf),
    /// ConfigMaps in the controller's namespace, by name and/or label selector.
    ConfigMaps {
        names: Vec<String>,
        selector: Option<String>,
    },
}

impl std::fmt::Display for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Directory(dir) => write!(f, "directory {}", dir.display()),
            Self::ConfigMaps { names, selector } => {
                write!(f, "ConfigMaps")?;
                if !names.is_empty() {
                    write!(f, " {}", names.join(","))?;
                }
                if let Some(selector) = selector {
                    write!(f, " matching {selector}")?;
                }
                Ok(())
            }
        }
    }
}

/// Applies new policy files to the live set and reports the outcome.
#[derive(Clone)]
pub struct Reloader {
    live: Arc<LivePolicies>,
    metrics: Arc<Metrics>,
}

impl Reloader {
    pub fn new(live: Arc<LivePolicies>, metrics: Arc<Metrics>) -> Self {
        Self { live, metrics }
    }

    /// Rebuilds and swaps the set; logs and counts what happened.
    pub fn apply(&self, files: Vec<SourceFile>) -> Build {
        let before = self
            .live
            .is_loaded()
            .then(|| self.live.current().hash().to_owned());
        let build = self.live.apply(files);
        let result = if build.errors.is_empty() {
            "success"
        } else {
            "error"
        };
        self.metrics
            .policy_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
        self.metrics
            .policy_broken_files
            .set(build.errors.len() as i64);

        for error in &build.errors {
            let effect = match build.kept.contains(&error.file) {
                true => "its previous version stays in effect",
                false => "it denies every request until fixed",
            };
            tracing::error!(policy = %error.file, %error, "policy does not compile; {effect}");
        }
        if build.set.files().is_empty() {
            tracing::warn!(
                "no policy file found; every request is rejected until policies are installed"
            );
        }
        if before.as_deref() == Some(build.set.hash()) && build.errors.is_empty() {
            tracing::debug!(hash = %build.set.hash(), "policies reloaded; nothing changed");
        } else {
            tracing::info!(
                hash = %build.set.hash(),
                files = ?build.set.files(),
                errors = build.errors.len(),
                "policies loaded"
            );
        }
        build
    }
}

/// Watches `source` and keeps `reloader`'s set current until the process
/// stops. Returns after the first load has been applied, or with the error
/// that prevented it.
pub async fn start(
    source: PolicySource,
    reloader: Reloader,
    internal: Client,
    namespace: String,
) -> anyhow::Result<()> {
    match source {
        PolicySource::Directory(dir) => directory::start(dir, reloader).await,
        PolicySource::ConfigMaps { names, selector } => {
            configmaps::start(internal, namespace, names, selector, reloader).await
        }
    }
}
