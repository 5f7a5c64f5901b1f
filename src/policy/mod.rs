//! Admission and retention policies written in Rhai.
//!
//! A policy set is every `*.rhai` file of one source (a directory or
//! ConfigMaps), compiled once and evaluated in file-name order. The set can
//! only narrow what the core already allows: its decision is combined with
//! the core's own checks in [`crate::admission`], never instead of them.
//! Every failure of a script (compile error, runtime error, limit hit, wrong
//! return type) is a denial, so a broken script closes the door instead of
//! opening it.

mod engine;
mod eval;
mod helpers;
mod input;
mod lint;
mod live;
mod set;
mod verdict;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use eval::{Capture, DEADLINE, Failure, FailureClass, Trail};
pub use helpers::parse_duration;
pub use input::RunView;
pub use lint::{Finding, Severity, lint};
pub use live::LivePolicies;
pub use set::{
    ADMIT, ADMIT_RESOLVER, ALL_POLICIES, AUDIT_SUFFIX, AdmissionReport, Build, PolicySet, RETAIN,
    RetentionReport,
};
pub use verdict::{Decision, Retention, Verdict};

/// Limits every script call runs under, for documentation and tools.
pub mod limits {
    pub use super::engine::{
        MAX_CALL_LEVELS, MAX_COLLECTION_SIZE, MAX_OPERATIONS, MAX_STRING_SIZE,
    };
}

/// One policy file's name and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    pub name: String,
    pub text: Arc<str>,
    /// Why this file cannot be used whatever its text, such as a name given
    /// by two ConfigMaps; it then counts as not compiling.
    pub unusable: Option<String>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
            unusable: None,
        }
    }
}

/// A file that does not compile, with the position of the error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl CompileError {
    fn from_parse(file: &str, err: &rhai::ParseError) -> Self {
        let position = err.position();
        Self {
            file: file.to_owned(),
            line: position.line().unwrap_or(0),
            column: position.position().unwrap_or(0),
            message: err.err_type().to_string(),
        }
    }
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Why policy files could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read policy directory {path}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read policy {path}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Compile(Vec<CompileError>),
}

/// Whether a file name is a policy: `*.rhai`, not hidden (a mounted
/// ConfigMap's `..data` entries are hidden).
pub fn is_policy_name(name: &str) -> bool {
    name.ends_with(".rhai") && !name.starts_with('.')
}

/// Reads every policy file of a directory, following symbolic links.
pub fn read_dir(dir: &Path) -> Result<Vec<SourceFile>, LoadError> {
    let read_err = |source| LoadError::ReadDir {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !is_policy_name(&name) {
            continue;
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            let source = std::io::Error::other(
                "a policy file name may hold only letters, digits, '-', '_' and '.', as a ConfigMap key must",
            );
            return Err(LoadError::ReadFile { path, source });
        }
        if !path.is_file() {
            let source = std::io::Error::other("not a regular file (or a link to nothing)");
            return Err(LoadError::ReadFile { path, source });
        }
        // A mounted ConfigMap links each file into its own `..data`; a link
        // out of the directory is refused, so no other file is read.
        let inside = match (path.canonicalize(), dir.canonicalize()) {
            (Ok(file), Ok(dir)) => file.starts_with(dir),
            _ => false,
        };
        if !inside {
            let source = std::io::Error::other("a link to a file outside the policy directory");
            return Err(LoadError::ReadFile { path, source });
        }
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::ReadFile {
            path: path.clone(),
            source,
        })?;
        files.push(SourceFile::new(name, text));
    }
    Ok(files)
}

/// Reads and compiles a directory, failing on any compile error.
pub fn load_dir(dir: &Path) -> Result<PolicySet, LoadError> {
    PolicySet::strict(read_dir(dir)?).map_err(LoadError::Compile)
}

#[cfg(test)]
mod sandbox_tests;
