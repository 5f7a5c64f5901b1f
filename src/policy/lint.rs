//! `policy check`: compile errors and likely mistakes, with positions.

use std::fmt;

use super::set::{ADMIT, ADMIT_RESOLVER, RETAIN, shared_engine};
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
    let warning = |message: String| Finding {
        file: file.name.clone(),
        line: 1,
        column: 1,
        severity: Severity::Warning,
        message,
    };
    let entry_points = [ADMIT, ADMIT_RESOLVER, RETAIN];
    let mut findings = Vec::new();

    let mut defined = false;
    for function in ast.iter_functions() {
        if !entry_points.contains(&function.name) {
            continue;
        }
        if function.params.len() == 2 {
            defined = true;
        } else {
            findings.push(warning(format!(
                "fn {} takes {} parameters; it is only called with two (it is ignored)",
                function.name,
                function.params.len()
            )));
        }
    }
    if !defined {
        findings.push(warning(
            "defines none of admit(request, config), admit_resolver(request, config), \
             retain(run, config): it has no effect"
                .to_owned(),
        ));
    }
    findings
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
    fn file_without_entry_point_is_warned() {
        let findings = lint(&[SourceFile::new(
            "x.rhai",
            "fn admitt(request, config) { allow() }",
        )]);
        assert_eq!(findings[0].severity, Severity::Warning);
        assert!(findings[0].message.contains("no effect"));
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
