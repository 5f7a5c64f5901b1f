//! `policy dry-run`: the controller's admission, offline.
//!
//! Uses the same [`crate::admission::decide`] as the controller, so a dry
//! run and the cluster agree; the one check it cannot make without a cluster
//! is whether the Pipeline exists, and it says so.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

use crate::admission::{self, Admission, Facts};
use crate::api::{InternalRequest, InternalServicesConfig};
use crate::cli::DryRunArgs;
use crate::policy::PolicySet;

/// Decides every request; returns whether all were admitted.
pub fn run(args: &DryRunArgs, out: &mut impl Write) -> anyhow::Result<bool> {
    let policies = PolicySet::load_dir(&args.policies)?;
    let config: InternalServicesConfig = read_one(&args.config)?;

    let mut requests = Vec::new();
    for path in &args.requests {
        requests.extend(read_all::<InternalRequest>(path)?);
    }

    let facts = Facts {
        namespace: &args.namespace,
        config: Some(&config.spec),
        pipeline_exists: None,
    };
    let width = requests
        .iter()
        .map(|r| crate::run::request_key(r).len())
        .max()
        .unwrap_or(7)
        .max(7);
    writeln!(out, "{:width$}  {:8}  REASON", "REQUEST", "DECISION")?;

    let mut all_admitted = true;
    for request in &requests {
        let key = crate::run::request_key(request);
        match admission::decide(request, facts, &policies) {
            Admission::Admit => writeln!(out, "{key:width$}  {:8}  -", "allow")?,
            Admission::Reject { message, .. } => {
                all_admitted = false;
                writeln!(out, "{key:width$}  {:8}  {message}", "deny")?;
            }
        }
    }
    writeln!(out, "(Pipeline existence is checked only on the cluster.)")?;
    Ok(all_admitted)
}

fn read_one<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let mut all = read_all(path)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        n => anyhow::bail!("{} holds {n} documents; expected one", path.display()),
    }
}

fn read_all<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut items = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let value = serde_yaml_ng::Value::deserialize(document).with_context(|| {
            format!(
                "{}: document {} is not valid YAML",
                path.display(),
                index + 1
            )
        })?;
        if value.is_null() {
            continue;
        }
        let item = serde_yaml_ng::from_value(value).with_context(|| {
            format!(
                "{}: document {} is not the expected kind",
                path.display(),
                index + 1
            )
        })?;
        items.push(item);
    }
    Ok(items)
}
