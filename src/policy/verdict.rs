//! What scripts return, and what a whole policy set decides.

use std::time::Duration;

use super::eval::FailureClass;

/// An admission script's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(String),
}

/// A retention script's answer for a finished run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Delete the run now (the default).
    Delete,
    /// Keep the run for this long after the request completed.
    KeepFor(Duration),
    /// Keep the run until someone deletes it.
    Keep,
}

impl Retention {
    /// The longer-lived of two decisions: a run any policy wants kept is kept.
    pub fn max(self, other: Retention) -> Retention {
        use Retention::*;
        match (self, other) {
            (Keep, _) | (_, Keep) => Keep,
            (KeepFor(a), KeepFor(b)) => KeepFor(a.max(b)),
            (KeepFor(a), Delete) | (Delete, KeepFor(a)) => KeepFor(a),
            (Delete, Delete) => Delete,
        }
    }
}

/// The decision of the whole set on one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny {
        /// File name of the deciding policy, or a rule name.
        policy: String,
        reason: String,
        /// Set when a failure, not the script's own `deny`, decided.
        failure: Option<FailureClass>,
    },
}

impl Decision {
    /// The message written to the request's status.
    pub fn message(&self) -> Option<String> {
        match self {
            Decision::Allow => None,
            Decision::Deny {
                policy,
                reason,
                failure: None,
            } => Some(format!("denied by policy {policy}: {reason}")),
            Decision::Deny {
                policy,
                reason,
                failure: Some(class),
            } => Some(format!("denied by policy {policy} ({class}): {reason}")),
        }
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Delete => f.write_str("delete()"),
            Self::Keep => f.write_str("keep()"),
            Self::KeepFor(d) => {
                let span = jiff::SignedDuration::try_from(*d).unwrap_or(jiff::SignedDuration::MAX);
                write!(f, "keep_for(\"{span:#}\")")
            }
        }
    }
}
