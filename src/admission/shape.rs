//! Checks of a request's own shape, before any config or policy: what
//! Tekton or the API server would refuse later is refused here, with a
//! message that names the field, so a request never waits on a run that
//! cannot be created.

use std::sync::LazyLock;

use regex::Regex;

use crate::api::InternalRequest;

/// A Go duration as Tekton parses it, such as `1h30m` or `90s`; not negative.
static GO_DURATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$").expect("valid pattern")
});

/// Whether `value` is a duration Tekton accepts, such as `1h30m`.
pub fn is_go_duration(value: &str) -> bool {
    GO_DURATION.is_match(value)
}

/// The request's fields are usable; otherwise a message naming the field.
pub fn check_shape(request: &InternalRequest) -> Result<(), String> {
    let spec = &request.spec;
    match (spec.request.is_empty(), spec.resolver()) {
        (true, None) => {
            return Err("spec.request is empty: it must name the Pipeline to run".to_owned());
        }
        (false, Some(_)) => {
            return Err("spec.request and spec.pipeline are both set: use one of them".to_owned());
        }
        (true, Some(resolver)) if resolver.resolver.is_empty() => {
            return Err("spec.pipeline.pipelineRef.resolver is empty".to_owned());
        }
        (false, None) if !is_dns_subdomain(&spec.request) => {
            return Err(format!(
                "spec.request '{}' is not a valid Pipeline name (lowercase letters, digits, '-' and '.', at most 253 characters)",
                spec.request
            ));
        }
        _ => {}
    }

    check_params(request)?;
    check_timeouts(request)?;
    check_service_account(request)
}

/// Most bytes of parameter names and values a request may carry: well
/// above any real release's needs, well below what makes the run too large
/// for the internal cluster's etcd.
const PARAMS_MAX_BYTES: usize = 256 * 1024;

/// Most parameters a request may carry, and most bytes in one value: below
/// what the policy sandbox lets a script hold, so a large but legal request
/// is refused here, naming the parameter, not by whichever policy first
/// touches it.
const PARAMS_MAX_COUNT: usize = 512;
const PARAM_MAX_BYTES: usize = 32 * 1024;

fn check_params(request: &InternalRequest) -> Result<(), String> {
    if let Some(bad) = request.spec.params.keys().find(|name| !is_param_name(name)) {
        return Err(format!(
            "spec.params key '{}' is not a valid parameter name (letters, digits, '_', '-' and '.', starting with a letter or '_')",
            crate::status::truncate(bad.clone(), 256)
        ));
    }

    let count = request.spec.params.len();
    if count > PARAMS_MAX_COUNT {
        return Err(format!(
            "spec.params has {count} parameters; at most {PARAMS_MAX_COUNT} are accepted"
        ));
    }
    let long = request
        .spec
        .params
        .iter()
        .find(|(_, value)| value.len() > PARAM_MAX_BYTES);
    if let Some((name, value)) = long {
        return Err(format!(
            "spec.params value of '{name}' has {} bytes; at most {PARAM_MAX_BYTES} are accepted per parameter",
            value.len()
        ));
    }

    let size: usize = request
        .spec
        .params
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum();
    if size > PARAMS_MAX_BYTES {
        return Err(format!(
            "spec.params hold {size} bytes; at most {PARAMS_MAX_BYTES} are accepted"
        ));
    }
    Ok(())
}

fn check_timeouts(request: &InternalRequest) -> Result<(), String> {
    let Some(timeouts) = &request.spec.timeouts else {
        return Ok(());
    };
    let fields = [
        ("pipeline", &timeouts.pipeline),
        ("tasks", &timeouts.tasks),
        ("finally", &timeouts.finally),
    ];
    for (field, value) in fields {
        if let Some(value) = value
            && !GO_DURATION.is_match(value)
        {
            return Err(format!(
                "spec.timeouts.{field} '{value}' is not a duration such as '1h30m' or '90s'"
            ));
        }
    }
    Ok(())
}

fn check_service_account(request: &InternalRequest) -> Result<(), String> {
    match &request.spec.service_account {
        Some(account) if !is_dns_subdomain(account) => Err(format!(
            "spec.serviceAccount '{account}' is not a valid service account name"
        )),
        _ => Ok(()),
    }
}

/// A DNS-1123 subdomain, as Kubernetes object names are.
pub fn is_dns_subdomain(name: &str) -> bool {
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

/// A DNS-1123 label, as workspace and namespace names are.
pub fn is_dns_label(name: &str) -> bool {
    name.len() <= 63 && !name.contains('.') && is_dns_subdomain(name)
}

/// A Tekton parameter name.
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
    use crate::api::{InternalRequestSpec, request::Timeouts};

    fn request(spec: InternalRequestSpec) -> InternalRequest {
        InternalRequest::new("r", spec)
    }

    #[test]
    fn a_long_value_or_too_many_params_are_refused_naming_them() {
        let mut spec = InternalRequestSpec {
            request: "p".into(),
            ..Default::default()
        };
        spec.params.insert("blob".into(), "x".repeat(70 * 1024));
        let message = check_shape(&request(spec.clone())).unwrap_err();
        assert!(
            message.contains("'blob'") && message.contains("32768"),
            "{message}"
        );

        spec.params.clear();
        for i in 0..600 {
            spec.params.insert(format!("p{i}"), "x".into());
        }
        let message = check_shape(&request(spec)).unwrap_err();
        assert!(message.contains("600 parameters"), "{message}");
    }

    #[test]
    fn oversize_params_are_refused_with_their_size() {
        let mut spec = named("push");
        for i in 0..10 {
            spec.params
                .insert(format!("part{i}"), "x".repeat(30 * 1024));
        }
        let message = check_shape(&request(spec)).unwrap_err();
        assert!(
            message.contains("spec.params hold 307250 bytes"),
            "{message}"
        );
    }

    fn named(pipeline: &str) -> InternalRequestSpec {
        InternalRequestSpec {
            request: pipeline.to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn timeouts_must_be_go_durations() {
        for good in ["1h30m", "90s", "0", "1.5h", "500ms"] {
            let mut spec = named("p");
            spec.timeouts = Some(Timeouts {
                pipeline: Some(good.into()),
                ..Default::default()
            });
            assert!(check_shape(&request(spec)).is_ok(), "{good}");
        }
        for bad in ["forever", "-5m", "", "1d", "5"] {
            let mut spec = named("p");
            spec.timeouts = Some(Timeouts {
                tasks: Some(bad.into()),
                ..Default::default()
            });
            let err = check_shape(&request(spec)).unwrap_err();
            assert!(err.contains("spec.timeouts.tasks"), "{bad}: {err}");
        }
    }

    #[test]
    fn service_account_must_be_a_valid_name() {
        let mut spec = named("p");
        spec.service_account = Some("Bad SA!".into());
        assert!(
            check_shape(&request(spec))
                .unwrap_err()
                .contains("spec.serviceAccount")
        );
    }

    #[test]
    fn parameter_names_are_checked() {
        let mut spec = named("p");
        spec.params.insert("$(evil)".into(), "x".into());
        assert!(
            check_shape(&request(spec))
                .unwrap_err()
                .contains("'$(evil)'")
        );
    }
}
