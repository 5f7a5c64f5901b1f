//! Whether a request may run: the core's own checks, then the policies.
//!
//! The order is fixed and the core checks come first, so no policy can admit
//! a request the core refuses: a malformed request, a missing config, a
//! namespace off the allow-list or a Pipeline that does not exist in the
//! controller's namespace is rejected before any script runs. Pure logic: no
//! Kubernetes calls, so it is the same in the controller and in `dry-run`.

mod shape;

use shape::check_shape;
pub use shape::{is_dns_label, is_dns_subdomain, is_go_duration};

use std::sync::Arc;

use crate::api::{AdmissionRecord, CONFIG_NAME, InternalRequest, InternalServicesConfigSpec};
use crate::policy::{ALL_POLICIES, AdmissionReport, Capture, PolicySet};

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

/// An admission decision with its audit record and, when policies ran,
/// what they left (output, warnings, failures).
#[derive(Clone, Debug)]
pub struct Decided {
    pub admission: Admission,
    pub record: AdmissionRecord,
    pub report: Option<AdmissionReport>,
}

/// What admission needs to know about the internal cluster.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// The controller's namespace, named in messages.
    pub namespace: &'a str,
    pub config: Option<&'a InternalServicesConfigSpec>,
    /// Whether the requested Pipeline exists; `None` when it cannot be known
    /// (a dry run without a cluster), which skips that check. Not used for
    /// resolver-form requests, whose Pipeline comes from elsewhere.
    pub pipeline_exists: Option<bool>,
}

/// Decides one request: core checks first, then the policies.
pub fn decide(
    request: &Arc<InternalRequest>,
    facts: Facts<'_>,
    policies: &PolicySet,
    capture: Capture,
) -> Decided {
    let core = |admission: Admission| {
        let rule = match &admission {
            Admission::Reject { rule, .. } => rule.clone(),
            Admission::Admit => ALL_POLICIES.to_owned(),
        };
        Decided {
            record: record(policies, rule, Vec::new()),
            admission,
            report: None,
        }
    };
    let config = match check_core(request, facts) {
        Ok(config) => config,
        Err(rejection) => return core(rejection),
    };

    let report = policies.admit(request, config, capture);
    let admission = match report.decision.message() {
        None => Admission::Admit,
        Some(message) => Admission::Reject {
            rule: format!("policy {}", report.decided_by),
            message,
        },
    };
    Decided {
        record: record(
            policies,
            report.decided_by.clone(),
            report.trail.warnings.clone(),
        ),
        admission,
        report: Some(report),
    }
}

/// The core's own checks, in order; the first failure rejects. Returns the
/// config the policies are to see.
fn check_core<'a>(
    request: &InternalRequest,
    facts: Facts<'a>,
) -> Result<&'a InternalServicesConfigSpec, Admission> {
    check_shape(request).map_err(|message| reject(rules::REQUEST_SHAPE, message))?;

    let Some(config) = facts.config else {
        let message = format!(
            "no InternalServicesConfig named '{CONFIG_NAME}' exists in namespace '{}'; \
             requests are rejected until an operator creates it",
            facts.namespace
        );
        return Err(reject(rules::CONFIG, message));
    };

    if !shape::is_dns_label(&config.volume_claim.name) {
        let message = format!(
            "InternalServicesConfig '{}/{CONFIG_NAME}' has volumeClaim.name '{}', which is not a valid workspace name",
            facts.namespace, config.volume_claim.name
        );
        return Err(reject(rules::CONFIG, message));
    }

    let namespace = request.metadata.namespace.as_deref().unwrap_or_default();
    if !config.allows_namespace(namespace) {
        let message = format!(
            "namespace '{namespace}' is not on the allow-list of InternalServicesConfig '{}/{CONFIG_NAME}'",
            facts.namespace
        );
        return Err(reject(rules::ALLOW_LIST, message));
    }

    let named = request.spec.resolver().is_none();
    if named && facts.pipeline_exists == Some(false) {
        let message = format!(
            "Pipeline '{}' does not exist in namespace '{}'",
            request.spec.request, facts.namespace
        );
        return Err(reject(rules::PIPELINE, message));
    }
    Ok(config)
}

fn record(policies: &PolicySet, decided_by: String, warnings: Vec<String>) -> AdmissionRecord {
    AdmissionRecord {
        policy_set: policies.hash().to_owned(),
        decided_by,
        warnings,
    }
}

fn reject(rule: &str, message: String) -> Admission {
    Admission::Reject {
        rule: rule.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::InternalRequestSpec;
    use crate::policy::SourceFile;

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
        let source = "fn admit(request, config) { allow() }";
        PolicySet::strict(vec![SourceFile::new("00-allow.rhai", source)]).unwrap()
    }

    fn decide(request: &InternalRequest, facts: Facts<'_>, policies: &PolicySet) -> Admission {
        super::decide(
            &Arc::new(request.clone()),
            facts,
            policies,
            Capture::default(),
        )
        .admission
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
