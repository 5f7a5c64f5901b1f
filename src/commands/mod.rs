//! The offline `policy` commands: check, dry-run, test and bench.
//!
//! They read policies, configs and requests from files (or, for a what-if
//! dry run, requests from a live cluster) and use the same admission code
//! as the controller, so what they report is what the controller would do.

pub mod bench;
pub mod check;
pub mod dry_run;
pub mod suite;

use std::path::Path;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ConfigMap;
use serde::Deserialize;

use crate::api::InternalServicesConfig;
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

/// The config file's spec.
pub fn read_config(path: &Path) -> anyhow::Result<InternalServicesConfig> {
    let mut all: Vec<InternalServicesConfig> = read_documents(path)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        n => anyhow::bail!(
            "{} holds {n} documents; expected one InternalServicesConfig",
            path.display()
        ),
    }
}

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
            anyhow::bail!("document {} is a {kind}; expected a {expected}", index + 1)
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
