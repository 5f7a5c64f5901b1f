//! `policy check`: compile and lint, print `file:line:column` findings.

use std::io::Write;

use crate::cli::CheckArgs;
use crate::policy::{Severity, lint};

/// Prints findings; returns whether no file has an error.
pub fn run(args: &CheckArgs, out: &mut impl Write) -> anyhow::Result<bool> {
    let files = super::read_policy_files(&args.files)?;
    if files.is_empty() {
        writeln!(
            out,
            "no policy file (*.rhai) found: the controller would reject every request"
        )?;
        return Ok(false);
    }
    let findings = lint(&files);
    for finding in &findings {
        writeln!(out, "{finding}")?;
    }

    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    writeln!(
        out,
        "{} checked: {}, {}",
        plural(files.len(), "file"),
        plural(errors, "error"),
        plural(warnings, "warning")
    )?;
    Ok(errors == 0)
}
