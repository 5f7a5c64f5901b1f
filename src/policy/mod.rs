//! Admission policies written in Rhai.
//!
//! A policy set is every `*.rhai` file of one directory, compiled once and
//! evaluated for each request in file-name order. The set can only narrow
//! what the core already allows: its verdict is combined with the core's own
//! checks in [`crate::admission`], never instead of them. Every failure of a
//! script (compile error, runtime error, limit hit, wrong return type) is a
//! denial, so a broken script closes the door instead of opening it.

mod engine;
mod helpers;
mod input;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rhai::{AST, Dynamic, Engine, Scope};

pub use input::AdmissionInput;

use crate::api::{InternalRequest, InternalServicesConfigSpec};

/// The function an admission policy defines.
pub const ADMIT_FN: &str = "admit";

/// A script's own answer, before it is combined with the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(String),
}

/// What the whole set says about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyOutcome {
    Allow,
    /// `policy` names the file that said no; `reason` is its words or the
    /// failure that stood in for them.
    Deny {
        policy: String,
        reason: String,
    },
}

/// Why a policy directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read policy directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read policy {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy {file} does not compile: {message}")]
    Compile { file: String, message: String },
}

/// One compiled script.
struct Policy {
    file: String,
    ast: AST,
    admits: bool,
}

/// Every compiled policy of a directory, ready to evaluate from any thread.
#[derive(Clone)]
pub struct PolicySet {
    engine: Arc<Engine>,
    policies: Arc<Vec<Policy>>,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.policies.iter().map(|p| &p.file))
            .finish()
    }
}

impl PolicySet {
    /// Compiles every `*.rhai` file of `dir`; one failure fails the load.
    pub fn load_dir(dir: &Path) -> Result<Self, LoadError> {
        let mut sources = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|source| LoadError::ReadDir {
            path: dir.to_owned(),
            source,
        })?;
        for entry in entries {
            let path = entry
                .map_err(|source| LoadError::ReadDir {
                    path: dir.to_owned(),
                    source,
                })?
                .path();
            if path.extension().is_some_and(|ext| ext == "rhai") && path.is_file() {
                let text =
                    std::fs::read_to_string(&path).map_err(|source| LoadError::ReadFile {
                        path: path.clone(),
                        source,
                    })?;
                let file = path.file_name().unwrap_or_default().to_string_lossy();
                sources.push((file.into_owned(), text));
            }
        }
        Self::compile(sources)
    }

    /// Compiles named sources; files are evaluated in name order.
    pub fn compile(mut sources: Vec<(String, String)>) -> Result<Self, LoadError> {
        sources.sort_by(|a, b| a.0.cmp(&b.0));
        let engine = engine::sandboxed();

        let mut policies = Vec::with_capacity(sources.len());
        for (file, text) in sources {
            let ast = engine.compile(&text).map_err(|err| LoadError::Compile {
                file: file.clone(),
                message: err.to_string(),
            })?;
            let admits = ast
                .iter_functions()
                .any(|f| f.name == ADMIT_FN && f.params.len() == 2);
            policies.push(Policy { file, ast, admits });
        }

        Ok(Self {
            engine: Arc::new(engine),
            policies: Arc::new(policies),
        })
    }

    /// File names of the loaded policies, in evaluation order.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|p| p.file.as_str())
    }

    /// Runs every admission policy; the first denial (in file order) wins.
    ///
    /// This is CPU work bounded by the engine's limits; call it off the async
    /// executor.
    pub fn admit(
        &self,
        request: &InternalRequest,
        config: &InternalServicesConfigSpec,
    ) -> PolicyOutcome {
        let input = AdmissionInput::new(request, config);
        let (request, config) = (input.request_value(), input.config_value());

        for policy in self.policies.iter().filter(|p| p.admits) {
            let verdict = self.call_admit(policy, request.clone(), config.clone());
            if let Verdict::Deny(reason) = verdict {
                tracing::debug!(policy = %policy.file, %reason, "policy denied");
                return PolicyOutcome::Deny {
                    policy: policy.file.clone(),
                    reason,
                };
            }
        }
        PolicyOutcome::Allow
    }

    fn call_admit(&self, policy: &Policy, request: Dynamic, config: Dynamic) -> Verdict {
        let mut scope = Scope::new();
        let result =
            self.engine
                .call_fn::<Dynamic>(&mut scope, &policy.ast, ADMIT_FN, (request, config));

        match result {
            Ok(value) => match value.try_cast::<Verdict>() {
                Some(verdict) => verdict,
                None => Verdict::Deny(
                    "invalid return type: admit must return allow() or deny(reason)".to_owned(),
                ),
            },
            Err(err) => Verdict::Deny(engine::describe_failure(&err)),
        }
    }
}
