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
    let mut all: Vec<InternalServicesConfig> = read_documents(path)?;
    let config = match all.len() {
        1 => all.remove(0),
        n => anyhow::bail!(
            "{} holds {n} documents; expected one InternalServicesConfig",
            path.display()
        ),
    };

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
    Ok(config)
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
    check_kind::<InternalRequest>(&value, 0).map_err(|_| {
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        anyhow::anyhow!("has kind {kind}; expected InternalRequest")
    })?;
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
    anyhow::ensure!(
        request.metadata.namespace.is_some(),
        "metadata.namespace is missing"
    );
    Ok(request)
}

/// The fields of `InternalRequest.spec`.
const SPEC_FIELDS: [&str; 5] = [
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
