//! Hostile and broken scripts: each must end quickly, deny, and say why.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Capture, Decision, FailureClass, PolicySet, SourceFile};
use crate::api::{InternalRequest, InternalRequestSpec, InternalServicesConfigSpec};

fn request() -> Arc<InternalRequest> {
    let spec = InternalRequestSpec {
        request: "p".into(),
        params: [("bar".to_owned(), "x".to_owned())].into(),
        ..Default::default()
    };
    let mut request = InternalRequest::new("r", spec);
    request.metadata.namespace = Some("team".into());
    Arc::new(request)
}

fn config() -> InternalServicesConfigSpec {
    InternalServicesConfigSpec {
        allow_list: vec!["team".into()],
        ..Default::default()
    }
}

/// Evaluates `body` as the whole of `admit`; returns the decision and time.
fn admit_with(body: &str) -> (Decision, Duration) {
    let source = format!("fn admit(request, config) {{ {body} }}");
    let set = PolicySet::build(vec![SourceFile::new("hostile.rhai", source)], None).set;
    let started = Instant::now();
    let report = set.admit(&request(), &config(), Capture::default());
    (report.decision, started.elapsed())
}

fn assert_denied_as(body: &str, class: FailureClass) {
    let (decision, took) = admit_with(body);
    match decision {
        Decision::Deny {
            failure: Some(got),
            policy,
            ..
        } => {
            assert_eq!(got, class, "{body}");
            assert_eq!(policy, "hostile.rhai");
        }
        other => panic!("{body}: expected a {class} denial, got {other:?}"),
    }
    assert!(took < Duration::from_secs(2), "{body} took {took:?}");
}

#[test]
fn endless_loop_stops_at_the_operation_limit() {
    assert_denied_as("loop { }", FailureClass::OperationLimit);
    assert_denied_as(
        "let i = 0; while true { i += 1; }",
        FailureClass::OperationLimit,
    );
}

#[test]
fn slow_native_calls_stop_at_the_deadline() {
    let body = r#"let s = "a"; while s.len() < 60000 { s += s; }
                  loop { s.contains("zzzzzz"); s.index_of("yyyy"); }"#;
    assert_denied_as(body, FailureClass::Deadline);
}

#[test]
fn unbounded_recursion_stops_at_the_depth_limit() {
    let source = "fn down(n) { down(n + 1) } fn admit(request, config) { down(0) }";
    let set = PolicySet::build(vec![SourceFile::new("hostile.rhai", source)], None).set;
    let report = set.admit(&request(), &config(), Capture::default());
    assert!(
        matches!(
            report.decision,
            Decision::Deny {
                failure: Some(FailureClass::DepthLimit),
                ..
            }
        ),
        "{:?}",
        report.decision
    );
}

#[test]
fn growing_strings_and_arrays_stop_at_the_size_limit() {
    assert_denied_as(r#"let s = "x"; loop { s += s; }"#, FailureClass::SizeLimit);
    assert_denied_as("let a = [1]; loop { a += a; }", FailureClass::SizeLimit);
    // A map grows one key per iteration, so the operation limit may come first.
    let (decision, _) = admit_with("let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += 1; }");
    assert!(matches!(
        decision,
        Decision::Deny {
            failure: Some(FailureClass::SizeLimit | FailureClass::OperationLimit),
            ..
        }
    ));
}

#[test]
fn sleep_is_not_available() {
    assert_denied_as("sleep(10); allow()", FailureClass::RuntimeError);
}

#[test]
fn import_is_not_available() {
    let (decision, _) = admit_with(r#"import "os" as os; allow()"#);
    assert!(
        matches!(
            decision,
            Decision::Deny {
                failure: Some(_),
                ..
            }
        ),
        "{decision:?}"
    );
}

#[test]
fn eval_does_not_compile_and_the_file_denies() {
    let (decision, _) = admit_with(r#"eval("allow()")"#);
    assert!(
        matches!(
            decision,
            Decision::Deny {
                failure: Some(FailureClass::CompileError),
                ..
            }
        ),
        "{decision:?}"
    );
}

#[test]
fn throw_denies_with_the_thrown_value() {
    let (decision, _) = admit_with(r#"throw "no way""#);
    let Decision::Deny {
        failure: Some(FailureClass::ThrownByScript),
        reason,
        ..
    } = decision
    else {
        panic!("{decision:?}")
    };
    assert!(reason.contains("no way"), "{reason}");
}

#[test]
fn wrong_return_type_denies() {
    assert_denied_as("42", FailureClass::InvalidReturnType);
    assert_denied_as("true", FailureClass::InvalidReturnType);
    assert_denied_as("keep()", FailureClass::InvalidReturnType);
}

#[test]
fn reading_a_missing_property_denies() {
    assert_denied_as(
        r#"if request.nmespace == "team" { allow() } else { deny("x") }"#,
        FailureClass::RuntimeError,
    );
    assert_denied_as(
        r#"if request.params.foo == "" { allow() } else { allow() }"#,
        FailureClass::RuntimeError,
    );
}

#[test]
fn inputs_are_read_only() {
    assert_denied_as(
        r#"request.namespace = "other"; allow()"#,
        FailureClass::RuntimeError,
    );
    assert_denied_as(
        r#"request.params["bar"] = "y"; allow()"#,
        FailureClass::RuntimeError,
    );
    assert_denied_as(
        "config.allow_list.clear(); allow()",
        FailureClass::RuntimeError,
    );
    assert_denied_as(
        r#"config.allow_list.push("intruder"); allow()"#,
        FailureClass::RuntimeError,
    );
}

#[test]
fn copies_of_inputs_may_be_changed_without_effect_on_later_scripts() {
    // In audit mode, so that the later script runs even if this one fails.
    let first = SourceFile::new(
        "00-copy.audit.rhai",
        r#"fn admit(request, config) { let l = config.allow_list; l.clear(); let p = request.params; p.clear(); allow() }"#,
    );
    let second = SourceFile::new(
        "10-check.rhai",
        r#"fn admit(request, config) { if request.params.len() == 1 && config.allow_list.len() == 1 { allow() } else { deny("tampered") } }"#,
    );
    let set = PolicySet::strict(vec![first, second]).unwrap();
    let report = set.admit(&request(), &config(), Capture::default());
    assert_eq!(report.decision, Decision::Allow);
}

#[test]
fn audit_mode_turns_denials_and_failures_into_warnings() {
    let audit = SourceFile::new(
        "30-new-rule.audit.rhai",
        r#"fn admit(request, config) { deny("would block") }"#,
    );
    let broken = SourceFile::new(
        "31-loop.audit.rhai",
        "fn admit(request, config) { loop {} }",
    );
    let allow = SourceFile::new("10-ok.rhai", "fn admit(request, config) { allow() }");
    let set = PolicySet::strict(vec![audit, broken, allow]).unwrap();
    let report = set.admit(&request(), &config(), Capture::default());
    assert_eq!(report.decision, Decision::Allow);
    assert_eq!(
        report.trail.warnings.len(),
        2,
        "{:?}",
        report.trail.warnings
    );
    assert!(report.trail.warnings[0].contains("would block"));
}

#[test]
fn print_is_captured_not_written_to_stdout() {
    let source = SourceFile::new(
        "p.rhai",
        r#"fn admit(request, config) { print(`seen ${request.name}`); debug("d"); allow() }"#,
    );
    let set = PolicySet::strict(vec![source]).unwrap();
    let report = set.admit(
        &request(),
        &config(),
        Capture {
            output: true,
            coverage: false,
        },
    );
    assert_eq!(report.trail.output[0], "seen r");
    assert_eq!(report.trail.output.len(), 2);
}

#[test]
fn no_policies_at_all_denies() {
    let report = PolicySet::empty().admit(&request(), &config(), Capture::default());
    assert!(matches!(report.decision, Decision::Deny { .. }));
}

#[test]
fn the_engine_stays_usable_after_hostile_scripts() {
    assert_denied_as("loop { }", FailureClass::OperationLimit);
    let (decision, _) = admit_with("allow()");
    assert_eq!(decision, Decision::Allow);
}

#[test]
fn a_helper_given_bad_input_is_a_runtime_error_not_a_throw() {
    let source =
        r#"fn admit(request, config) { if matches("x", "(") { allow() } else { allow() } }"#;
    let set = PolicySet::strict(vec![SourceFile::new("70-regex.rhai", source)]).unwrap();
    let report = set.admit(&request(), &config(), Capture::default());
    assert_eq!(report.failures, vec![FailureClass::RuntimeError]);
    let message = report.decision.message().unwrap();
    assert!(message.contains("invalid pattern"), "{message}");
    assert!(!message.contains("System error"), "{message}");
}
