//! Whether a request may run: the core's own checks, then the policies.
//!
//! The order is fixed and the core checks come first, so no policy can admit
//! a request the core refuses: a malformed request, a missing config, a
//! namespace off the allow-list or a Pipeline that does not exist in the
//! controller's namespace is rejected before any script runs. Pure logic: no
//! Kubernetes calls, so it is the same in the controller and in `dry-run`.

use crate::api::{CONFIG_NAME, InternalRequest, InternalServicesConfigSpec};
use crate::policy::{PolicyOutcome, PolicySet};

/// Name of the core rule that reports a denial, when no script is involved.
pub mod rules {
    pub const REQUEST_SHAPE: &str = "request-shape";
    pub const CONFIG: &str = "config";
    pub const ALLOW_LIST: &str = "allow-list";
    pub const PIPELINE: &str = "pipeline";
}

/// The outcome of admission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// `rule` is a core rule name or `policy <file>`; `message` is written to
    /// the request's status as it stands.
    Reject {
        rule: String,
        message: String,
    },
}

/// What admission needs to know about the internal cluster.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// The controller's namespace, named in messages.
    pub namespace: &'a str,
    pub config: Option<&'a InternalServicesConfigSpec>,
    /// Whether the requested Pipeline exists; `None` when it cannot be known
    /// (a dry run without a cluster), which skips that check.
    pub pipeline_exists: Option<bool>,
}

/// Decides one request.
pub fn decide(request: &InternalRequest, facts: Facts<'_>, policies: &PolicySet) -> Admission {
    if let Err(message) = check_shape(request) {
        return reject(rules::REQUEST_SHAPE, message);
    }

    let Some(config) = facts.config else {
        let message = format!(
            "no InternalServicesConfig named '{CONFIG_NAME}' exists in namespace '{}'; \
             requests are rejected until an operator creates it",
            facts.namespace
        );
        return reject(rules::CONFIG, message);
    };

    let namespace = request.metadata.namespace.as_deref().unwrap_or_default();
    if !config.allows_namespace(namespace) {
        let message = format!(
            "namespace '{namespace}' is not on the allow-list of InternalServicesConfig '{}/{CONFIG_NAME}'",
            facts.namespace
        );
        return reject(rules::ALLOW_LIST, message);
    }

    if facts.pipeline_exists == Some(false) {
        let message = format!(
            "Pipeline '{}' does not exist in namespace '{}'",
            request.spec.request, facts.namespace
        );
        return reject(rules::PIPELINE, message);
    }

    match policies.admit(request, config) {
        PolicyOutcome::Allow => Admission::Admit,
        PolicyOutcome::Deny { policy, reason } => Admission::Reject {
            message: format!("denied by policy {policy}: {reason}"),
            rule: format!("policy {policy}"),
        },
    }
}

fn reject(rule: &str, message: String) -> Admission {
    Admission::Reject {
        rule: rule.to_owned(),
        message,
    }
}

/// Checks that do not depend on any config: the request must name a Pipeline
/// by a valid Kubernetes name and its parameter names must be usable.
fn check_shape(request: &InternalRequest) -> Result<(), String> {
    let pipeline = &request.spec.request;
    if pipeline.is_empty() {
        return Err("spec.request is empty: it must name the Pipeline to run".to_owned());
    }
    if !is_dns_subdomain(pipeline) {
        return Err(format!(
            "spec.request '{pipeline}' is not a valid Pipeline name (lowercase letters, digits, '-' and '.', at most 253 characters)"
        ));
    }
    if let Some(bad) = request.spec.params.keys().find(|name| !is_param_name(name)) {
        return Err(format!(
            "spec.params key '{bad}' is not a valid parameter name (letters, digits, '_', '-' and '.', starting with a letter or '_')"
        ));
    }
    Ok(())
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

fn is_param_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::InternalRequestSpec;

    fn request(namespace: &str, pipeline: &str) -> InternalRequest {
        let mut request = InternalRequest::new(
            "example",
            InternalRequestSpec {
                request: pipeline.to_owned(),
                ..Default::default()
            },
        );
        request.metadata.namespace = Some(namespace.to_owned());
        request
    }

    fn config(allowed: &[&str]) -> InternalServicesConfigSpec {
        InternalServicesConfigSpec {
            allow_list: allowed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn allow_all_policy() -> PolicySet {
        let source = "fn admit(request, config) { allow() }".to_owned();
        PolicySet::compile(vec![("00-allow.rhai".to_owned(), source)]).unwrap()
    }

    fn facts<'a>(
        config: Option<&'a InternalServicesConfigSpec>,
        exists: Option<bool>,
    ) -> Facts<'a> {
        Facts {
            namespace: "internal",
            config,
            pipeline_exists: exists,
        }
    }

    #[test]
    fn missing_config_is_named_in_the_rejection() {
        let outcome = decide(
            &request("team", "p"),
            facts(None, Some(true)),
            &allow_all_policy(),
        );
        let Admission::Reject { rule, message } = outcome else {
            panic!("admitted without config")
        };
        assert_eq!(rule, rules::CONFIG);
        assert!(
            message.contains("no InternalServicesConfig named 'config'"),
            "{message}"
        );
    }

    #[test]
    fn allowing_policy_cannot_admit_a_namespace_off_the_allow_list() {
        let config = config(&["team"]);
        let outcome = decide(
            &request("intruder", "p"),
            facts(Some(&config), Some(true)),
            &allow_all_policy(),
        );
        let Admission::Reject { rule, message } = outcome else {
            panic!("policy widened the allow-list")
        };
        assert_eq!(rule, rules::ALLOW_LIST);
        assert!(message.contains("'intruder'"), "{message}");
    }

    #[test]
    fn missing_pipeline_is_rejected_before_policies() {
        let config = config(&["team"]);
        let outcome = decide(
            &request("team", "p"),
            facts(Some(&config), Some(false)),
            &allow_all_policy(),
        );
        assert!(matches!(outcome, Admission::Reject { ref rule, .. } if rule == rules::PIPELINE));
    }

    #[test]
    fn malformed_pipeline_name_is_rejected() {
        let config = config(&["team"]);
        let outcome = decide(
            &request("team", "Bad Name"),
            facts(Some(&config), None),
            &allow_all_policy(),
        );
        assert!(
            matches!(outcome, Admission::Reject { ref rule, .. } if rule == rules::REQUEST_SHAPE)
        );
    }

    #[test]
    fn admitted_when_every_check_passes() {
        let config = config(&["team"]);
        let outcome = decide(
            &request("team", "p"),
            facts(Some(&config), Some(true)),
            &allow_all_policy(),
        );
        assert_eq!(outcome, Admission::Admit);
    }
}
