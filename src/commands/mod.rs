//! The command-line tools besides the controller: the offline `policy`
//! commands (check, dry-run, test, bench) and the `request` commands a
//! remote pipeline uses.
//!
//! The policy commands read policies, configs and requests from files (or,
//! for a what-if dry run, requests from a live cluster) and use the same
//! admission code as the controller, so what they report is what the
//! controller would do.

pub mod bench;
pub mod check;
pub mod configmap;
pub mod dry_run;
pub mod request;
pub mod suite;

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ConfigMap;
use regex::Regex;
use serde::Deserialize;

use crate::api::{CONFIG_NAME, InternalRequest, InternalServicesConfig};
use crate::cli::PolicyFiles;
use crate::policy::{self, PolicySet, SourceFile};
use crate::policy_watch::files_from_configmaps;

/// The policy files named by the flags, uncompiled.
pub fn read_policy_files(files: &PolicyFiles) -> anyhow::Result<Vec<SourceFile>> {
    match &files.configmap {
        Some(path) => {
            let configmaps: Vec<ConfigMap> = read_documents(path)?;
            Ok(files_from_configmaps(&configmaps)
                .into_iter()
                .map(|(f, _)| f)
                .collect())
        }
        None => Ok(policy::read_dir(&files.policies)?),
    }
}

/// The compiled policies named by the flags; any compile error fails.
pub fn load_policies(files: &PolicyFiles) -> anyhow::Result<PolicySet> {
    let sources = read_policy_files(files)?;
    PolicySet::strict(sources).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("policies do not compile:\n{}", lines.join("\n"))
    })
}

/// The config file, checked as the API server and the controller would.
pub fn read_config(path: &Path) -> anyhow::Result<InternalServicesConfig> {
    let mut all: Vec<serde_yaml_ng::Value> = read_documents(path)?;
    let value = match all.len() {
        1 => all.remove(0),
        n => anyhow::bail!(
            "{} holds {n} documents; expected one InternalServicesConfig",
            path.display()
        ),
    };
    check_type(&value, "InternalServicesConfig").with_context(|| path.display().to_string())?;
    let spec = value.get("spec");
    check_fields(spec, "spec", &CONFIG_FIELDS).with_context(|| path.display().to_string())?;
    let claim = spec.and_then(|s| s.get("volumeClaim"));
    check_fields(claim, "spec.volumeClaim", &["name", "size"])
        .with_context(|| path.display().to_string())?;
    let config: InternalServicesConfig = serde_yaml_ng::from_value(value).with_context(|| {
        format!(
            "{} does not have the fields of an InternalServicesConfig",
            path.display()
        )
    })?;

    let name = config.metadata.name.as_deref().unwrap_or(CONFIG_NAME);
    anyhow::ensure!(
        name == CONFIG_NAME,
        "{}: the config is named '{name}', but the controller only reads one named '{CONFIG_NAME}'",
        path.display()
    );
    let size = &config.spec.volume_claim.size;
    anyhow::ensure!(
        QUANTITY.is_match(size),
        "{}: spec.volumeClaim.size '{size}' is not a quantity such as 1Gi or 500Mi",
        path.display()
    );
    if let Some(ttl) = &config.spec.completed_request_ttl {
        anyhow::ensure!(
            TTL.is_match(ttl),
            "{}: spec.completedRequestTTL '{ttl}' is not a duration such as 24h or 90m",
            path.display()
        );
    }
    Ok(config)
}

/// The fields of `InternalServicesConfig.spec`.
pub(crate) const CONFIG_FIELDS: [&str; 5] = [
    "allowList",
    "debug",
    "volumeClaim",
    "allowedGitResolverURLs",
    "completedRequestTTL",
];

/// The CRD's pattern for `completedRequestTTL`.
static TTL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([0-9]+(s|m|h))+$").expect("valid pattern"));

/// The document is of `kind` in our API group, as `kubectl apply` needs.
fn check_type(value: &serde_yaml_ng::Value, kind: &str) -> anyhow::Result<()> {
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or_default();
    let api_version = format!("{}/v1alpha1", crate::api::GROUP);
    anyhow::ensure!(
        field("kind") == kind && field("apiVersion") == api_version,
        "has apiVersion '{}' and kind '{}'; expected apiVersion {api_version} and kind {kind}",
        field("apiVersion"),
        field("kind")
    );
    Ok(())
}

/// Every key of the mapping `node`, found at `at`, is one of `known`: a
/// typo would otherwise be dropped silently and the file judged without it.
pub(crate) fn check_fields(
    node: Option<&serde_yaml_ng::Value>,
    at: &str,
    known: &[&str],
) -> anyhow::Result<()> {
    let Some(map) = node.and_then(|n| n.as_mapping()) else {
        return Ok(());
    };
    for key in map.keys().filter_map(|k| k.as_str()) {
        anyhow::ensure!(known.contains(&key), "{at}.{key} is not a field");
    }
    Ok(())
}

/// Every request in the files; an error if there is none, if one has no
/// namespace, or if its spec has a field the API does not know (a typo
/// would otherwise be dropped silently and the request judged without it).
pub fn read_requests(paths: &[PathBuf]) -> anyhow::Result<Vec<Arc<InternalRequest>>> {
    let mut requests = Vec::new();
    for path in paths {
        let values: Vec<serde_yaml_ng::Value> = read_documents(path)?;
        for (index, value) in values.into_iter().enumerate() {
            let request = to_request(value)
                .with_context(|| format!("{}: document {}", path.display(), index + 1))?;
            requests.push(Arc::new(request));
        }
    }
    anyhow::ensure!(
        !requests.is_empty(),
        "no InternalRequest found in the given files"
    );
    Ok(requests)
}

fn to_request(value: serde_yaml_ng::Value) -> anyhow::Result<InternalRequest> {
    check_type(&value, "InternalRequest")?;
    if let Some(spec) = value.get("spec").and_then(|s| s.as_mapping()) {
        for key in spec.keys().filter_map(|k| k.as_str()) {
            anyhow::ensure!(
                SPEC_FIELDS.contains(&key),
                "spec.{key} is not a field of InternalRequest"
            );
        }
    }
    let request: InternalRequest = serde_yaml_ng::from_value(value)
        .context("does not have the fields of an InternalRequest")?;
    let namespace = request.metadata.namespace.as_deref().unwrap_or_default();
    anyhow::ensure!(!namespace.is_empty(), "metadata.namespace is missing");
    anyhow::ensure!(
        crate::admission::is_dns_label(namespace),
        "metadata.namespace '{namespace}' is not a valid namespace name"
    );
    let name = request.metadata.name.as_deref().unwrap_or_default();
    anyhow::ensure!(
        crate::admission::is_dns_subdomain(name),
        "metadata.name '{name}' is not a valid name (lowercase letters, digits, '-' and '.')"
    );
    Ok(request)
}

/// The fields of `InternalRequest.spec`.
pub(crate) const SPEC_FIELDS: [&str; 5] = [
    "request",
    "pipeline",
    "params",
    "timeouts",
    "serviceAccount",
];

/// A Kubernetes quantity, as the CRD's pattern for `volumeClaim.size`.
static QUANTITY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$").expect("valid pattern")
});

/// Every non-empty YAML (or JSON) document of a file, as `T`.
pub fn read_documents<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_documents(&text).with_context(|| format!("in {}", path.display()))
}

/// Every non-empty YAML document of a text, as `T`.
pub fn parse_documents<T: for<'de> Deserialize<'de>>(text: &str) -> anyhow::Result<Vec<T>> {
    let mut items = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml_ng::Value::deserialize(document)
            .with_context(|| format!("document {} is not valid YAML", index + 1))?;
        if value.is_null() {
            continue;
        }
        check_kind::<T>(&value, index)?;
        let item = serde_yaml_ng::from_value(value)
            .with_context(|| format!("document {} does not have the expected fields", index + 1))?;
        items.push(item);
    }
    Ok(items)
}

/// When `T` is a Kubernetes kind and the document names another, say so
/// instead of reporting a confusing missing field.
fn check_kind<T>(value: &serde_yaml_ng::Value, index: usize) -> anyhow::Result<()> {
    let expected = std::any::type_name::<T>()
        .rsplit("::")
        .next()
        .unwrap_or_default();
    let kind = value.get("kind").and_then(|k| k.as_str());
    match kind {
        Some(kind) if kind != expected && is_known_kind(expected) => {
            anyhow::bail!(
                "document {} has kind {kind}; expected {expected}",
                index + 1
            )
        }
        _ => Ok(()),
    }
}

fn is_known_kind(name: &str) -> bool {
    matches!(
        name,
        "InternalRequest" | "InternalServicesConfig" | "ConfigMap"
    )
}
