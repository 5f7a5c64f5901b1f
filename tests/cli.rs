//! The binary's offline commands, run as a user would run them.

use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_internal-services");

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn dry_run_on_the_examples_prints_three_decisions_and_fails() {
    let output = Command::new(BINARY)
        .args([
            "policy",
            "dry-run",
            "--policies",
            &repo("policies"),
            "--config",
            &repo("examples/config.yaml"),
        ])
        .args([
            repo("examples/requests/admitted.yaml"),
            repo("examples/requests/not-allowed.yaml"),
            repo("examples/requests/bad-digest.yaml"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{stdout}"))
    };
    assert!(line("example-admitted").contains("allow"));
    assert!(line("example-not-allowed").contains("'unlisted-tenant' is not on the allow-list"));
    assert!(line("example-bad-digest").contains("parameter 'bar'"));
}

#[test]
fn dry_run_of_admitted_request_succeeds() {
    let status = Command::new(BINARY)
        .args([
            "policy",
            "dry-run",
            "--policies",
            &repo("policies"),
            "--config",
            &repo("examples/config.yaml"),
        ])
        .arg(repo("examples/requests/admitted.yaml"))
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(0));
}

#[test]
fn dry_run_with_a_missing_config_file_is_an_error() {
    let output = Command::new(BINARY)
        .args([
            "policy",
            "dry-run",
            "--config",
            "/nonexistent/config.yaml",
            "x.yaml",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot read /nonexistent/config.yaml")
    );
}

#[test]
fn committed_crds_match_the_generated_ones() {
    let output = Command::new(BINARY).arg("crd").output().unwrap();
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).unwrap();
    for file in [
        "remote/internalrequests.yaml",
        "internal/internalservicesconfigs.yaml",
    ] {
        let committed = std::fs::read_to_string(repo(&format!("deploy/crds/{file}"))).unwrap();
        assert!(
            generated.contains(&committed),
            "deploy/crds/{file} differs from `internal-services crd`; regenerate with \
             `cargo run -- crd --output-dir deploy/crds`"
        );
    }
}

#[test]
fn deployed_policy_configmap_matches_the_policies_directory() {
    let output = Command::new(BINARY)
        .args(["policy", "configmap", "--policies", "policies"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let committed = std::fs::read_to_string(repo("deploy/internal/policies.yaml")).unwrap();
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        committed,
        "deploy/internal/policies.yaml differs from policies/; regenerate with \
         `cargo run -- policy configmap --output deploy/internal/policies.yaml`"
    );
}

#[test]
fn configmap_refuses_policies_that_do_not_compile() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("10-broken.rhai"),
        "fn admit(request, config) {",
    )
    .unwrap();
    let (code, _) = run(&[
        "policy",
        "configmap",
        "--policies",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2));
}

fn run(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(BINARY)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

#[test]
fn check_passes_the_shipped_policies() {
    let (code, text) = run(&["policy", "check"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("0 errors"), "{text}");
}

#[test]
fn check_reports_errors_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.rhai"),
        "fn admit(request, config) {\n  allow(\n}",
    )
    .unwrap();
    std::fs::write(dir.path().join("b.rhai"), "fn admit(request) { allow() }").unwrap();
    let (code, text) = run(&[
        "policy",
        "check",
        "--policies",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("a.rhai:3:"), "{text}");
    assert!(
        text.contains("b.rhai:1:1: error: fn admit takes 1 parameters"),
        "{text}"
    );
}

#[test]
fn shipped_policy_suite_passes_and_reports_unreached_rules() {
    let (code, text) = run(&["policy", "test", "policies/tests/shipped.yaml"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.lines().any(|l| l.ends_with(" passed, 0 failed")),
        "{text}"
    );
    assert!(
        text.contains("10-allow-list.rhai:"),
        "the allow-list script's deny is shadowed by the core check: {text}"
    );
}

#[test]
fn failing_suite_case_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("suite.yaml");
    let text = "config: { allowList: [team] }\ncases:\n  - name: wrongly expects allow\n    request:\n      metadata: { name: r, namespace: other }\n      spec: { request: internal-system-x }\n    expect: allow\n";
    std::fs::write(&suite, text).unwrap();
    let (code, text) = run(&["policy", "test", suite.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("FAIL") && text.contains("expected allow, got deny"),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "0 passed, 1 failed"), "{text}");
}

#[test]
fn dry_run_prints_json() {
    let (code, text) = run(&[
        "policy",
        "dry-run",
        "--config",
        "examples/config.yaml",
        "--output",
        "json",
        "examples/requests/admitted.yaml",
        "examples/requests/bad-digest.yaml",
    ]);
    assert_eq!(code, Some(1));
    let rows: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(rows[0]["decision"], "allow");
    assert_eq!(rows[1]["decidedBy"], "20-digest-params.rhai");
}

#[test]
fn dry_run_refuses_files_without_requests_and_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "# nothing\n---\n").unwrap();
    let (code, text) = run(&[
        "policy",
        "dry-run",
        "--config",
        "examples/config.yaml",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("no InternalRequest found"), "{text}");

    let typo = dir.path().join("typo.yaml");
    let header = "apiVersion: appstudio.redhat.com/v1alpha1\nkind: InternalRequest\n";
    std::fs::write(&typo, format!("{header}metadata: {{ name: r, namespace: team }}\nspec: {{ request: p, parms: {{}} }}\n")).unwrap();
    let (code, text) = run(&[
        "policy",
        "dry-run",
        "--config",
        "examples/config.yaml",
        typo.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("spec.parms is not a field"), "{text}");

    let untyped = dir.path().join("untyped.yaml");
    std::fs::write(
        &untyped,
        "metadata: { name: r, namespace: team }\nspec: { request: p }\n",
    )
    .unwrap();
    let (code, text) = run(&[
        "policy",
        "dry-run",
        "--config",
        "examples/config.yaml",
        untyped.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("expected apiVersion appstudio.redhat.com/v1alpha1"),
        "{text}"
    );

    let bad_name = dir.path().join("bad-name.yaml");
    std::fs::write(
        &bad_name,
        format!(
            "{header}metadata: {{ name: Bad_Name, namespace: team }}\nspec: {{ request: p }}\n"
        ),
    )
    .unwrap();
    let (code, text) = run(&[
        "policy",
        "dry-run",
        "--config",
        "examples/config.yaml",
        bad_name.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("metadata.name 'Bad_Name' is not a valid name"),
        "{text}"
    );
}

#[test]
fn dry_run_refuses_a_config_with_unknown_fields_or_a_bad_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let header = "apiVersion: appstudio.redhat.com/v1alpha1\nkind: InternalServicesConfig\nmetadata: { name: config }\n";
    for (spec, expected) in [
        ("spec: { alowList: [team] }", "spec.alowList is not a field"),
        (
            "spec: { completedRequestTTL: soon }",
            "completedRequestTTL 'soon' is not a duration",
        ),
        (
            "spec: { volumeClaim: { nmae: x } }",
            "spec.volumeClaim.nmae is not a field",
        ),
    ] {
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, format!("{header}{spec}\n")).unwrap();
        let (code, text) = run(&[
            "policy",
            "dry-run",
            "--config",
            config.to_str().unwrap(),
            "examples/requests/admitted.yaml",
        ]);
        assert_eq!(code, Some(2), "{spec}: {text}");
        assert!(text.contains(expected), "{spec}: {text}");
    }
}

#[test]
fn suite_mistakes_are_errors_of_the_suite_not_failing_cases() {
    let dir = tempfile::tempdir().unwrap();
    let request = "request: { metadata: { namespace: team }, spec: { request: p } }";
    for (case, expected) in [
        (
            format!("- name: a\n    {request}\n    expect: allowed"),
            "expect is \"allowed\"",
        ),
        (
            format!("- name: a\n    {request}\n    expect: deny\n    reason: \"(unclosed\""),
            "not a regular expression",
        ),
        (
            format!(
                "- name: a\n    {request}\n    expect: allow\n  - name: a\n    {request}\n    expect: allow"
            ),
            "two cases are named",
        ),
        (
            "- name: r\n    run: { outcome: Exploded }\n    expect: delete".to_owned(),
            "run.outcome",
        ),
        ("[]".to_owned(), "no cases"),
        (format!("- name: a\n    {request}\n    config: {{ alowList: [team] }}\n    expect: allow"), "config.alowList is not a field"),
        ("- name: a\n    request: { metadata: { namespace: team }, spec: { request: p, serviceacount: x } }\n    expect: allow".to_owned(), "request.spec.serviceacount is not a field"),
        ("- name: r\n    run: { outcome: Failed, pipelin: p }\n    expect: delete".to_owned(), "unknown field `pipelin`"),
        (format!("- name: a\n    {request}\n    expect: allow\n    decidedBy: 99-nope.rhai"), "decidedBy \"99-nope.rhai\" is neither"),
    ] {
        let suite = dir.path().join("suite.yaml");
        let cases = if case == "[]" {
            "cases: []".to_owned()
        } else {
            format!("cases:\n  {case}")
        };
        std::fs::write(&suite, format!("{cases}\n")).unwrap();
        let (code, text) = run(&["policy", "test", suite.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{case}: {text}");
        assert!(text.contains(expected), "{case}: {text}");
    }
}

#[test]
fn check_warns_about_likely_mistakes_and_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = run(&[
        "policy",
        "check",
        "--policies",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no policy file"), "{text}");

    std::fs::write(
        dir.path().join("10-typo.rhai"),
        "fn admit(request, config) {\n    if request.nmespace == \"x\" { return deny(\"no\"); }\n    allow()\n}\n",
    )
    .unwrap();
    let (code, text) = run(&[
        "policy",
        "check",
        "--policies",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "warnings alone pass: {text}");
    assert!(
        text.contains("10-typo.rhai:2:16: warning: request has no field 'nmespace'"),
        "{text}"
    );
}

#[test]
fn bench_prints_rate_and_percentiles() {
    let (code, text) = run(&[
        "policy",
        "bench",
        "--iterations",
        "2000",
        "--config",
        "examples/config.yaml",
        "examples/requests/admitted.yaml",
    ]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("decisions/s") && text.contains("p99"),
        "{text}"
    );
}

#[test]
fn a_malformed_selector_stops_the_controller_before_it_starts() {
    let (code, text) = run(&[
        "run",
        "--remote-kubeconfig",
        "/nonexistent",
        "--namespace",
        "ns",
        "--request-selector",
        "a in (b",
    ]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("unbalanced parentheses"), "{text}");
}

#[test]
fn the_suite_in_the_policy_guide_passes_against_the_shipped_policies() {
    let guide = std::fs::read_to_string(repo("policies/README.md")).unwrap();
    let after = guide.split("**Test suites**").nth(1).unwrap();
    let yaml = after
        .split("```yaml\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("guide.yaml");
    std::fs::write(&suite, yaml).unwrap();
    let (code, text) = run(&["policy", "test", suite.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("0 failed"), "{text}");
}
