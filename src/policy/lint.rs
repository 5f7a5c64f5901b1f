//! `policy check`: compile errors and likely mistakes, with positions.

use std::fmt;

use super::set::{entry_points, shared_engine};
use super::{CompileError, SourceFile};

/// How bad a finding is: errors make `policy check` fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {severity}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Checks every file; findings in file order.
pub fn lint(files: &[SourceFile]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for file in files {
        match shared_engine().compile(&*file.text) {
            Err(err) => {
                let error = CompileError::from_parse(&file.name, &err);
                findings.push(Finding {
                    file: error.file,
                    line: error.line,
                    column: error.column,
                    severity: Severity::Error,
                    message: error.message,
                });
            }
            Ok(ast) => findings.extend(entry_point_findings(file, &ast)),
        }
    }
    findings
}

fn entry_point_findings(file: &SourceFile, ast: &rhai::AST) -> Vec<Finding> {
    match entry_points(&file.name, ast) {
        Ok(_) => Vec::new(),
        Err(error) => vec![Finding {
            file: error.file,
            line: error.line,
            column: error.column,
            severity: Severity::Error,
            message: error.message,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_error_has_a_position() {
        let findings = lint(&[SourceFile::new(
            "bad.rhai",
            "fn admit(request, config) {\n  allow(\n}",
        )]);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].severity, Severity::Error);
        assert_eq!(findings[0].line, 3);
        assert!(findings[0].to_string().starts_with("bad.rhai:3:"));
    }

    #[test]
    fn file_without_entry_point_is_an_error() {
        let findings = lint(&[SourceFile::new(
            "x.rhai",
            "fn admitt(request, config) { allow() }",
        )]);
        assert_eq!(findings[0].severity, Severity::Error);
        assert!(findings[0].message.contains("defines none of"));
        let findings = lint(&[SourceFile::new("y.rhai", "fn admit(request) { allow() }")]);
        assert!(
            findings[0].message.contains("must take two"),
            "{findings:?}"
        );
    }

    #[test]
    fn undefined_variable_is_a_compile_error() {
        let findings = lint(&[SourceFile::new(
            "x.rhai",
            "fn admit(request, config) { if requst.name == \"\" { allow() } else { allow() } }",
        )]);
        assert_eq!(findings[0].severity, Severity::Error, "{findings:?}");
    }
}
