//! `policy check`: compile errors and likely mistakes, with positions.
//!
//! Besides what the compiler finds, three mistakes are common enough to
//! look for in the text: code outside functions (it never runs), reading a
//! field the request, config or run does not have (it fails at run time,
//! so the rule always denies), and calling `sleep` (not available).

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

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
            Ok(ast) => {
                findings.extend(entry_point_findings(file, &ast));
                findings.extend(text_findings(file));
            }
        }
    }
    findings
}

/// Fields scripts may read, by the parameter name the contract uses.
const FIELDS: [(&str, &[&str]); 3] = [
    (
        "request",
        &[
            "name",
            "namespace",
            "uid",
            "labels",
            "annotations",
            "pipeline",
            "resolver",
            "params",
            "service_account",
            "timeouts",
        ],
    ),
    (
        "config",
        &[
            "allow_list",
            "keep_runs",
            "volume_claim",
            "allowed_git_resolver_urls",
        ],
    ),
    (
        "run",
        &["name", "outcome", "pipeline", "namespace", "request"],
    ),
];

static FIELD_READ: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(request|config|run)\.([A-Za-z_][A-Za-z0-9_]*)\b(\s*\()?")
        .expect("valid pattern")
});

static SLEEP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\bsleep\s*\(").expect("valid pattern"));

fn text_findings(file: &SourceFile) -> Vec<Finding> {
    let code = without_comments(&file.text);
    let mut findings = Vec::new();
    let at = |offset: usize, severity, message: String| {
        let (line, column) = position(&file.text, offset);
        Finding {
            file: file.name.clone(),
            line,
            column,
            severity,
            message,
        }
    };

    if let Some(offset) = top_level_code(&code) {
        let import = code[offset..].starts_with("import");
        let (severity, message) = match import {
            true => (Severity::Error, "import is not available to policies".to_owned()),
            false => (
                Severity::Warning,
                "code outside a function never runs; only admit, admit_resolver and retain are called"
                    .to_owned(),
            ),
        };
        findings.push(at(offset, severity, message));
    }
    for found in FIELD_READ.captures_iter(&code) {
        let (object, field) = (&found[1], &found[2]);
        let known = FIELDS.iter().find(|(o, _)| *o == object).map(|(_, f)| *f);
        if found.get(3).is_some() || known.is_none_or(|k| k.contains(&field)) {
            continue;
        }
        let message = format!(
            "{object} has no field '{field}'; reading it fails, so this rule would deny (fields: {})",
            known.unwrap_or_default().join(", ")
        );
        findings.push(at(
            found.get(2).map_or(0, |m| m.start()),
            Severity::Warning,
            message,
        ));
    }
    for found in SLEEP.find_iter(&code) {
        let message =
            "sleep is not available to policies; the call fails and the rule denies".to_owned();
        findings.push(at(found.start(), Severity::Warning, message));
    }
    findings
}

/// The text with comments and string contents blanked out (same length,
/// newlines kept), so that offsets still point into the original.
fn without_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while let Some((_, c)) = chars.next() {
        match c {
            '/' if chars.peek().is_some_and(|(_, n)| *n == '/') => {
                out.push(' ');
                for (_, c) in chars.by_ref() {
                    out.push(blank(c));
                    if c == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek().is_some_and(|(_, n)| *n == '*') => {
                out.push(' ');
                let mut last = ' ';
                for (_, c) in chars.by_ref() {
                    out.push(blank(c));
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' | '`' | '\'' => {
                out.push(c);
                let mut escaped = false;
                for (_, n) in chars.by_ref() {
                    if n == c && !escaped {
                        out.push(n);
                        break;
                    }
                    escaped = n == '\\' && !escaped;
                    out.push(blank(n));
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Where the first code outside any function starts, if there is any.
fn top_level_code(code: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut expect_body = false;
    let mut offset = 0;
    while offset < code.len() {
        let rest = &code[offset..];
        let c = rest.chars().next()?;
        match c {
            '{' => {
                depth += 1;
                expect_body = false;
            }
            '}' => depth = depth.saturating_sub(1),
            _ if depth == 0 && !expect_body && !c.is_whitespace() => {
                let word = rest
                    .split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next();
                match word {
                    Some("fn") => expect_body = true,
                    Some("private") => {}
                    _ => return Some(offset),
                }
                offset += word.map_or(1, str::len).max(1);
                continue;
            }
            _ => {}
        }
        offset += c.len_utf8();
    }
    None
}

/// Line and column (1-based) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
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
    fn likely_mistakes_are_found_with_positions() {
        let text = "import \"os\" as os;\n// request.nope in a comment\nfn admit(request, config) {\n    if request.nmespace == \"x\" { sleep(1); }\n    allow()\n}\n";
        let findings = lint(&[SourceFile::new("m.rhai", text)]);
        let all: Vec<String> = findings.iter().map(ToString::to_string).collect();
        assert!(
            all.iter()
                .any(|f| f.starts_with("m.rhai:1:1: error: import")),
            "{all:?}"
        );
        assert!(
            all.iter()
                .any(|f| f.starts_with("m.rhai:4:16: warning: request has no field 'nmespace'")),
            "{all:?}"
        );
        assert!(
            all.iter().any(|f| f.contains("sleep is not available")),
            "{all:?}"
        );
        assert!(!all.iter().any(|f| f.contains("nope")), "{all:?}");
    }

    #[test]
    fn the_shipped_policies_have_no_findings() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let files = super::super::read_dir(&dir).unwrap();
        assert_eq!(lint(&files), Vec::new());
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
