//! The PipelineRun that serves a request: its name and its content.
//!
//! The name is derived from the remote cluster's name and the request's UID,
//! so every reconcile, on any replica, after any restart, computes the same
//! name and a second create for the same request fails with "already exists"
//! instead of starting a second run. Labels carry what fits in a label value;
//! the full `namespace/name` of the request is in an annotation.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::api::tekton::{
    Param, PipelineRef, PipelineRunSpec, TaskRunTemplate, annotations, labels,
};
use crate::api::{InternalRequest, InternalServicesConfigSpec, PipelineRun};

/// Longest readable prefix kept from the request's name.
const NAME_PREFIX_MAX: usize = 40;

/// Hex characters of the hash that make the name unique.
const NAME_HASH_LEN: usize = 12;

/// Longest label value Kubernetes accepts.
const LABEL_VALUE_MAX: usize = 63;

/// The run's name: a readable prefix from the request's name and a hash of
/// the remote cluster's name and the request's UID. Always a valid DNS label.
pub fn name_for(cluster: &str, request: &InternalRequest) -> String {
    let uid = request.metadata.uid.as_deref().unwrap_or_default();
    let hash = short_hash(&format!("{cluster}/{uid}"), NAME_HASH_LEN);

    let name = request.metadata.name.as_deref().unwrap_or_default();
    let mut prefix: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(NAME_PREFIX_MAX)
        .collect();
    prefix = prefix.trim_matches('-').to_owned();
    if prefix.is_empty() {
        prefix.push_str("request");
    }
    format!("{prefix}-{hash}")
}

/// `namespace/name` of a request, as stored on its run.
pub fn request_key(request: &InternalRequest) -> String {
    format!(
        "{}/{}",
        request.metadata.namespace.as_deref().unwrap_or_default(),
        request.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Builds the run for an admitted request.
pub fn build(
    name: &str,
    namespace: &str,
    cluster: &str,
    request: &InternalRequest,
    config: &InternalServicesConfigSpec,
) -> PipelineRun {
    let metadata = ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(run_labels(cluster, request)),
        annotations: Some(BTreeMap::new()),
        ..Default::default()
    };

    let params = request
        .spec
        .params
        .iter()
        .map(|(name, value)| Param {
            name: name.clone(),
            value: json!(value),
        })
        .collect();

    let spec = PipelineRunSpec {
        pipeline_ref: Some(pipeline_ref(request)),
        params,
        workspaces: vec![workspace(config)],
        task_run_template: request
            .spec
            .service_account
            .as_ref()
            .map(|sa| TaskRunTemplate {
                service_account_name: Some(sa.clone()),
            }),
        timeouts: request.spec.timeouts.clone(),
        status: None,
    };

    let mut run = PipelineRun {
        metadata,
        spec,
        status: None,
    };
    let recorded = BTreeMap::from([
        (annotations::REQUEST.to_owned(), request_key(request)),
        (annotations::SPEC_HASH.to_owned(), spec_hash(&run)),
    ]);
    run.metadata.annotations = Some(recorded);
    run
}

/// A hash of what a run runs: its pipelineRef and its params.
fn spec_hash(run: &PipelineRun) -> String {
    let what = json!({
        "pipelineRef": run.spec.pipeline_ref,
        "params": run.spec.params,
    });
    short_hash(&what.to_string(), 16)
}

/// What someone else changed on `run` that makes it no longer the run this
/// controller built for `request`, if anything. Only what the controller
/// set and Tekton never rewrites is compared: the links back to the
/// request, and what runs with which parameters, against the hash recorded
/// when the run was created (not against the request's spec as it is now,
/// which the CRD keeps from changing, and which in any case is not what
/// the run was started with).
pub fn altered(run: &PipelineRun, cluster: &str, request: &InternalRequest) -> Option<String> {
    let expected = run_labels(cluster, request);
    for key in [
        labels::MANAGED_BY,
        labels::REMOTE_CLUSTER,
        labels::REQUEST_UID,
    ] {
        if run.label(key) != expected.get(key).map(String::as_str) {
            return Some(format!("its label {key} was changed"));
        }
    }

    let link = run
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::REQUEST));
    if link != Some(&request_key(request)) {
        return Some(format!(
            "its annotation {} was changed",
            annotations::REQUEST
        ));
    }

    let recorded = run
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::SPEC_HASH));
    match recorded {
        Some(hash) if *hash == spec_hash(run) => None,
        Some(_) => Some("its pipelineRef or params were changed".to_owned()),
        None => Some(format!(
            "its annotation {} was removed",
            annotations::SPEC_HASH
        )),
    }
}

/// By name for the seed's form, by resolver for upstream's.
fn pipeline_ref(request: &InternalRequest) -> PipelineRef {
    match request.spec.resolver() {
        Some(resolver) => PipelineRef {
            name: None,
            resolver: Some(resolver.resolver.clone()),
            params: resolver
                .params
                .iter()
                .map(|p| Param {
                    name: p.name.clone(),
                    value: json!(p.value),
                })
                .collect(),
        },
        None => PipelineRef {
            name: Some(request.spec.request.clone()),
            ..Default::default()
        },
    }
}

/// A workspace backed by a fresh volume claim per run.
fn workspace(config: &InternalServicesConfigSpec) -> serde_json::Value {
    json!({
        "name": config.volume_claim.name,
        "volumeClaimTemplate": {
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": { "requests": { "storage": config.volume_claim.size } }
            }
        }
    })
}

fn run_labels(cluster: &str, request: &InternalRequest) -> BTreeMap<String, String> {
    let meta = &request.metadata;
    BTreeMap::from([
        (
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        ),
        (labels::REMOTE_CLUSTER.to_owned(), label_value(cluster)),
        (
            labels::REQUEST_NAME.to_owned(),
            label_value(meta.name.as_deref().unwrap_or_default()),
        ),
        (
            labels::REQUEST_NAMESPACE.to_owned(),
            label_value(meta.namespace.as_deref().unwrap_or_default()),
        ),
        (
            labels::REQUEST_UID.to_owned(),
            label_value(meta.uid.as_deref().unwrap_or_default()),
        ),
    ])
}

/// A valid label value for `value`: unchanged when it fits, otherwise a
/// truncated prefix and a hash of the whole, so distinct values stay distinct.
pub fn label_value(value: &str) -> String {
    let valid = value.len() <= LABEL_VALUE_MAX
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value
            .bytes()
            .next()
            .is_none_or(|b| b.is_ascii_alphanumeric())
        && value
            .bytes()
            .last()
            .is_none_or(|b| b.is_ascii_alphanumeric());
    if valid {
        return value.to_owned();
    }

    let hash = short_hash(value, 10);
    let prefix: String = value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(LABEL_VALUE_MAX - hash.len() - 1)
        .collect();
    let prefix = prefix.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

fn short_hash(input: &str, len: usize) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..len].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::InternalRequestSpec;

    fn request(name: &str, uid: &str) -> InternalRequest {
        let mut request = InternalRequest::new(name, InternalRequestSpec::default());
        request.metadata.namespace = Some("team".to_owned());
        request.metadata.uid = Some(uid.to_owned());
        request
    }

    fn is_dns_label(name: &str) -> bool {
        name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    }

    #[test]
    fn name_is_stable_and_depends_on_cluster_and_uid() {
        let a = request("release", "uid-1");
        assert_eq!(name_for("east", &a), name_for("east", &a));
        assert_ne!(name_for("east", &a), name_for("west", &a));
        assert_ne!(
            name_for("east", &a),
            name_for("east", &request("release", "uid-2"))
        );
    }

    #[test]
    fn name_is_a_dns_label_for_a_request_name_of_maximum_length() {
        let long = format!("{}.x", "a-".repeat(125));
        assert!(long.len() >= 252);
        let name = name_for("remote", &request(&long, "uid"));
        assert!(is_dns_label(&name), "{name}");
    }

    #[test]
    fn label_values_are_valid_and_distinct_when_truncated() {
        let long_a = format!("{}a", "x".repeat(250));
        let long_b = format!("{}b", "x".repeat(250));
        let (a, b) = (label_value(&long_a), label_value(&long_b));
        assert!(a.len() <= 63 && b.len() <= 63);
        assert_ne!(a, b);
        assert_eq!(label_value("short-name"), "short-name");
    }

    #[test]
    fn run_carries_params_workspace_and_links() {
        let mut req = request("release", "uid-1");
        req.spec.request = "push".to_owned();
        req.spec
            .params
            .insert("image".to_owned(), "quay.io/x".to_owned());
        let config = InternalServicesConfigSpec::default();
        let run = build("release-abc", "internal", "remote", &req, &config);

        let spec = &run.spec;
        assert_eq!(
            spec.pipeline_ref.as_ref().unwrap().name.as_deref(),
            Some("push")
        );
        assert_eq!(spec.params[0].name, "image");
        assert_eq!(spec.workspaces[0]["name"], "workspace");
        assert_eq!(run.label(labels::REQUEST_UID), Some("uid-1"));
        let key = &run.metadata.annotations.as_ref().unwrap()[annotations::REQUEST];
        assert_eq!(key, "team/release");
    }

    #[test]
    fn a_run_changed_by_someone_else_is_noticed() {
        let mut req = request("release", "uid-1");
        req.spec.request = "push".to_owned();
        req.spec
            .params
            .insert("image".to_owned(), "quay.io/x".to_owned());
        let config = InternalServicesConfigSpec::default();
        let run = build("release-abc", "internal", "remote", &req, &config);
        assert_eq!(altered(&run, "remote", &req), None);

        let mut changed = run.clone();
        changed.spec.params[0].value = json!("quay.io/evil");
        assert_eq!(
            altered(&changed, "remote", &req).as_deref(),
            Some("its pipelineRef or params were changed")
        );

        let mut edited_request = req.clone();
        edited_request.spec.request = "other".to_owned();
        assert_eq!(altered(&run, "remote", &edited_request), None);

        let mut relabelled = run.clone();
        relabelled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(labels::MANAGED_BY);
        assert!(
            altered(&relabelled, "remote", &req)
                .unwrap()
                .contains("managed-by")
        );

        let mut repointed = run;
        repointed.spec.pipeline_ref.as_mut().unwrap().name = Some("other".to_owned());
        assert!(
            altered(&repointed, "remote", &req)
                .unwrap()
                .contains("pipelineRef")
        );
    }
}
