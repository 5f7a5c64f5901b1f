//! `policy test`: YAML test suites for policies.
//!
//! A suite holds a config and cases; each case is a request with the
//! expected decision (and optionally a reason pattern and deciding rule),
//! or a finished run with the expected retention. Besides pass/fail it
//! reports every verdict call (`allow`, `deny`, `keep`, `keep_for`,
//! `delete`) that no case reached: rules the suite does not exercise.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use anyhow::Context as _;
use kube::api::ObjectMeta;
use regex::Regex;
use serde::Deserialize;

use crate::admission::{self, Admission, Facts};
use crate::api::{InternalRequest, InternalRequestSpec, InternalServicesConfigSpec};
use crate::cli::TestArgs;
use crate::policy::{Capture, PolicySet, Retention, RunView};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    #[serde(default)]
    config: InternalServicesConfigSpec,
    /// Pipelines that exist; when given, the existence check runs too.
    #[serde(default)]
    pipelines: Option<Vec<String>>,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Case {
    name: String,
    #[serde(default)]
    config: Option<InternalServicesConfigSpec>,
    #[serde(default)]
    request: Option<CaseRequest>,
    #[serde(default)]
    run: Option<CaseRun>,
    /// `allow` or `deny` for requests; `delete`, `keep` or `keep_for` for runs.
    expect: String,
    /// Regular expression the denial message must match.
    #[serde(default)]
    reason: Option<String>,
    /// The file or rule expected to decide.
    #[serde(default)]
    decided_by: Option<String>,
    /// For `keep_for`: the expected duration, such as `24h`.
    #[serde(default)]
    keep_for: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseRequest {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: InternalRequestSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseRun {
    #[serde(default = "default_run_name")]
    name: String,
    outcome: String,
    #[serde(default)]
    pipeline: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    request: String,
}

fn default_run_name() -> String {
    "run".to_owned()
}

/// Counts of one run of the suites.
#[derive(Debug, Default)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
}

/// Runs every suite; returns the counts.
pub fn run(args: &TestArgs, out: &mut impl Write) -> anyhow::Result<Summary> {
    let policies = super::load_policies(&args.files)?;
    let mut summary = Summary::default();
    let mut reached = BTreeSet::new();

    for path in &args.suites {
        let suite = read_suite(path)?;
        check_decided_by(&suite, &policies)
            .with_context(|| format!("{} is not a valid test suite", path.display()))?;
        for case in &suite.cases {
            let (verdict, hits) = run_case(&policies, &suite, case)
                .with_context(|| format!("{}: case {:?}", path.display(), case.name))?;
            reached.extend(hits);
            match verdict {
                Ok(()) => {
                    summary.passed += 1;
                    writeln!(out, "PASS  {}: {}", path.display(), case.name)?;
                }
                Err(why) => {
                    summary.failed += 1;
                    writeln!(out, "FAIL  {}: {}: {why}", path.display(), case.name)?;
                }
            }
        }
    }

    report_unreached(&policies, &reached, out)?;
    writeln!(out, "{} passed, {} failed", summary.passed, summary.failed)?;
    Ok(summary)
}

fn read_suite(path: &Path) -> anyhow::Result<Suite> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let invalid = || format!("{} is not a valid test suite", path.display());
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .map_err(|err| anyhow::anyhow!("{err}"))
        .with_context(invalid)?;
    check_suite_fields(&value).with_context(invalid)?;
    let suite: Suite = serde_yaml_ng::from_value(value).with_context(invalid)?;
    validate(&suite).with_context(invalid)?;
    Ok(suite)
}

/// A `decidedBy` must name a policy file of the set or a core rule; a
/// misspelt one would only ever fail.
fn check_decided_by(suite: &Suite, policies: &PolicySet) -> anyhow::Result<()> {
    use crate::admission::rules;
    let core = [
        rules::REQUEST_SHAPE,
        rules::CONFIG,
        rules::ALLOW_LIST,
        rules::PIPELINE,
        crate::policy::ALL_POLICIES,
    ];
    let files = policies.files();
    for case in &suite.cases {
        if let Some(rule) = &case.decided_by {
            let known = files.contains(&rule.as_str())
                || core.contains(&rule.as_str())
                || rule == "resolver-form";
            anyhow::ensure!(
                known,
                "case {:?}: decidedBy {rule:?} is neither a policy file ({}) nor a core rule ({})",
                case.name,
                files.join(", "),
                core.join(", ")
            );
        }
    }
    Ok(())
}

/// The configs and requests in a suite are API objects, which ignore
/// unknown fields when read; a typo in a test must not go unnoticed, so
/// their fields are checked here.
fn check_suite_fields(suite: &serde_yaml_ng::Value) -> anyhow::Result<()> {
    let check_config = |config: Option<&serde_yaml_ng::Value>, at: &str| -> anyhow::Result<()> {
        super::check_fields(config, at, &super::CONFIG_FIELDS)?;
        let claim = config.and_then(|c| c.get("volumeClaim"));
        super::check_fields(claim, &format!("{at}.volumeClaim"), &["name", "size"])
    };
    check_config(suite.get("config"), "config")?;
    let cases = suite.get("cases").and_then(|c| c.as_sequence());
    for (index, case) in cases.into_iter().flatten().enumerate() {
        let name = case.get("name").and_then(|n| n.as_str()).unwrap_or("?");
        let at = format!("case {} ({name:?})", index + 1);
        check_config(case.get("config"), &format!("{at}: config"))?;
        let spec = case.get("request").and_then(|r| r.get("spec"));
        super::check_fields(spec, &format!("{at}: request.spec"), &super::SPEC_FIELDS)?;
    }
    Ok(())
}

/// Mistakes in a suite are errors of the suite (exit 2), not failing
/// cases: a typo in `expect` must not read as a policy that misbehaves.
fn validate(suite: &Suite) -> anyhow::Result<()> {
    anyhow::ensure!(!suite.cases.is_empty(), "it has no cases");
    let mut names = BTreeSet::new();
    for case in &suite.cases {
        anyhow::ensure!(
            names.insert(&case.name),
            "two cases are named {:?}",
            case.name
        );
        validate_case(case).with_context(|| format!("case {:?}", case.name))?;
    }
    Ok(())
}

fn validate_case(case: &Case) -> anyhow::Result<()> {
    let allowed: &[&str] = match (&case.request, &case.run) {
        (Some(_), None) => &["allow", "deny"],
        (None, Some(run)) => {
            anyhow::ensure!(
                matches!(run.outcome.as_str(), "Succeeded" | "Failed"),
                "run.outcome is {:?}; expected Succeeded or Failed",
                run.outcome
            );
            &["delete", "keep", "keep_for"]
        }
        _ => anyhow::bail!("a case needs exactly one of `request` and `run`"),
    };
    anyhow::ensure!(
        allowed.contains(&case.expect.as_str()),
        "expect is {:?}; expected one of {}",
        case.expect,
        allowed.join(", ")
    );
    match (&case.keep_for, case.expect.as_str()) {
        (Some(keep), "keep_for") => {
            crate::policy::parse_duration(keep)
                .map_err(|_| anyhow::anyhow!("keepFor {keep:?} is not a duration such as 24h"))?;
        }
        (None, "keep_for") => anyhow::bail!("expect keep_for needs keepFor, such as 24h"),
        (Some(_), _) => anyhow::bail!("keepFor goes only with expect: keep_for"),
        (None, _) => {}
    }
    if let Some(reason) = &case.reason {
        Regex::new(reason)
            .map_err(|err| anyhow::anyhow!("reason is not a regular expression: {err}"))?;
    }
    Ok(())
}

type Hits = Vec<(String, usize)>;

fn run_case(
    policies: &PolicySet,
    suite: &Suite,
    case: &Case,
) -> anyhow::Result<(Result<(), String>, Hits)> {
    let config = case.config.as_ref().unwrap_or(&suite.config);
    let capture = Capture {
        output: true,
        coverage: true,
    };
    match (&case.request, &case.run) {
        (Some(request), None) => Ok(check_request(
            policies, suite, case, config, request, capture,
        )),
        (None, Some(run)) => check_run(policies, case, config, run, capture),
        _ => anyhow::bail!("a case needs exactly one of `request` and `run`"),
    }
}

fn check_request(
    policies: &PolicySet,
    suite: &Suite,
    case: &Case,
    config: &InternalServicesConfigSpec,
    request: &CaseRequest,
    capture: Capture,
) -> (Result<(), String>, Hits) {
    let mut object = InternalRequest::new("", request.spec.clone());
    object.metadata = request.metadata.clone();
    let pipeline_exists = suite
        .pipelines
        .as_ref()
        .map(|known| known.contains(&request.spec.request));
    let facts = Facts {
        namespace: "internal-services",
        config: Some(config),
        pipeline_exists,
    };

    let decided = admission::decide(&Arc::new(object), facts, policies, capture);
    let hits = decided
        .report
        .as_ref()
        .map(|r| r.trail.reached.clone())
        .unwrap_or_default();
    let (got, message) = match &decided.admission {
        Admission::Admit => ("allow", String::new()),
        Admission::Reject { message, .. } => ("deny", message.clone()),
    };

    let verdict = if got != case.expect {
        let detail = if message.is_empty() {
            String::new()
        } else {
            format!(" ({message})")
        };
        Err(format!("expected {}, got {got}{detail}", case.expect))
    } else if let Some(pattern) = &case.reason {
        match Regex::new(pattern) {
            Ok(re) if re.is_match(&message) => Ok(()),
            Ok(_) => Err(format!("reason {message:?} does not match /{pattern}/")),
            Err(err) => Err(format!("invalid reason pattern: {err}")),
        }
    } else {
        Ok(())
    };
    let verdict = verdict.and_then(|()| match &case.decided_by {
        Some(expected) if expected != &decided.record.decided_by => Err(format!(
            "decided by {}, expected {expected}",
            decided.record.decided_by
        )),
        _ => Ok(()),
    });
    (verdict, hits)
}

fn check_run(
    policies: &PolicySet,
    case: &Case,
    config: &InternalServicesConfigSpec,
    run: &CaseRun,
    capture: Capture,
) -> anyhow::Result<(Result<(), String>, Hits)> {
    let view = RunView {
        name: run.name.clone(),
        outcome: run.outcome.clone(),
        pipeline: run.pipeline.clone(),
        namespace: run.namespace.clone(),
        request: run.request.clone(),
    };
    let report = policies.retain(&view, config, capture);
    let expected = match (case.expect.as_str(), &case.keep_for) {
        ("delete", _) => Retention::Delete,
        ("keep", _) => Retention::Keep,
        ("keep_for", Some(text)) => Retention::KeepFor(
            crate::policy::parse_duration(text).map_err(|e| anyhow::anyhow!("keepFor: {e}"))?,
        ),
        ("keep_for", None) => anyhow::bail!("expect: keep_for needs keepFor"),
        (other, _) => {
            anyhow::bail!("expect must be delete, keep or keep_for for a run, not {other:?}")
        }
    };

    let verdict = match report.failures.first() {
        Some((file, failure)) => Err(format!(
            "{file} failed ({}): {}",
            failure.class, failure.message
        )),
        None if report.retention == expected => Ok(()),
        None => Err(format!("expected {expected}, got {}", report.retention)),
    };
    Ok((verdict, report.trail.reached))
}

static VERDICT_CALL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(allow|deny|keep_for|keep|delete)\s*\(").expect("valid pattern")
});

/// Prints every verdict call in the policies that no case reached.
fn report_unreached(
    policies: &PolicySet,
    reached: &BTreeSet<(String, usize)>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut unreached: BTreeMap<&str, Vec<(usize, String)>> = BTreeMap::new();
    for (file, text) in policies.texts() {
        for (index, line) in text.lines().enumerate() {
            let code = strip_comment(line);
            let Some(found) = VERDICT_CALL.find(code) else {
                continue;
            };
            if !reached.contains(&(file.to_owned(), index + 1)) {
                unreached.entry(file).or_default().push((
                    index + 1,
                    found.as_str().trim_end_matches('(').trim().to_owned(),
                ));
            }
        }
    }

    if unreached.is_empty() {
        writeln!(
            out,
            "every allow/deny/keep/keep_for/delete call was reached"
        )?;
        return Ok(());
    }
    writeln!(out, "rules never reached by these suites:")?;
    for (file, calls) in unreached {
        for (line, call) in calls {
            writeln!(out, "  {file}:{line}: {call}(...)")?;
        }
    }
    Ok(())
}

/// The line without a trailing `//` comment (outside string literals).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (None, b'"' | b'`' | b'\'') => quote = Some(b),
            (Some(q), _) if b == q && (i == 0 || bytes[i - 1] != b'\\') => quote = None,
            (None, b'/') if bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_stripped_outside_strings() {
        assert_eq!(strip_comment("deny(\"a//b\") // deny("), "deny(\"a//b\") ");
        assert_eq!(strip_comment("// allow()"), "");
    }
}
