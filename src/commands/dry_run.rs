//! `policy dry-run`: the controller's admission, without running anything.
//!
//! Uses the same [`crate::admission::decide`] as the controller, so a dry
//! run and the cluster agree; the one check it cannot make without the
//! internal cluster is whether the Pipeline exists, and it says so. With
//! `--remote-kubeconfig` it decides every request on a live remote cluster
//! (a what-if report for a policy change); nothing is written there.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context as _;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::admission::{self, Admission, Facts};
use crate::api::InternalRequest;
use crate::cli::{DryRunArgs, Output};
use crate::policy::Capture;

/// One request's decision, as printed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub request: String,
    pub decision: &'static str,
    pub decided_by: String,
    pub reason: String,
    pub warnings: Vec<String>,
    pub output: Vec<String>,
}

/// Decides every request; returns whether all were admitted.
pub fn run(args: &DryRunArgs, out: &mut impl Write) -> anyhow::Result<bool> {
    let policies = super::load_policies(&args.files)?;
    let config = super::read_config(&args.config)?;
    let requests = match &args.remote_kubeconfig {
        Some(path) => live_requests(path)?,
        None => super::read_requests(&args.requests)?,
    };

    let facts = Facts {
        namespace: &args.namespace,
        config: Some(&config.spec),
        pipeline_exists: None,
    };
    let capture = Capture {
        output: true,
        coverage: false,
    };
    let rows: Vec<Row> = requests
        .iter()
        .map(|request| {
            row(
                request,
                admission::decide(request, facts, &policies, capture),
            )
        })
        .collect();

    match args.output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?,
        Output::Table => print_table(&rows, policies.hash(), out)?,
    }
    Ok(rows.iter().all(|r| r.decision == "allow"))
}

fn row(request: &InternalRequest, decided: admission::Decided) -> Row {
    let (decision, reason) = match decided.admission {
        Admission::Admit => ("allow", String::new()),
        Admission::Reject { message, .. } => ("deny", message),
    };
    Row {
        request: crate::run::request_key(request),
        decision,
        decided_by: decided.record.decided_by,
        reason,
        warnings: decided.record.warnings,
        output: decided.report.map(|r| r.trail.output).unwrap_or_default(),
    }
}

fn print_table(rows: &[Row], hash: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let width = rows
        .iter()
        .map(|r| r.request.len())
        .max()
        .unwrap_or(7)
        .clamp(7, 60);
    writeln!(out, "{:width$}  {:8}  REASON", "REQUEST", "DECISION")?;
    for row in rows {
        let reason = match row.reason.is_empty() {
            true => "-".to_owned(),
            false => printable(&row.reason),
        };
        writeln!(
            out,
            "{:width$}  {:8}  {reason}",
            printable(&row.request),
            row.decision
        )?;
        for warning in &row.warnings {
            writeln!(
                out,
                "{:width$}  {:8}  warning: {}",
                "",
                "",
                printable(warning)
            )?;
        }
        for line in &row.output {
            writeln!(out, "{:width$}  {:8}  print: {}", "", "", printable(line))?;
        }
    }
    writeln!(
        out,
        "policy set {hash}; Pipeline existence is checked only on the cluster."
    )?;
    Ok(())
}

/// The text with control characters escaped, so one row stays one line and
/// no escape sequence reaches the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c.is_control() {
            true => c.escape_default().collect::<Vec<_>>(),
            false => vec![c],
        })
        .collect()
}

/// Every request on the remote cluster, read once.
fn live_requests(kubeconfig: &std::path::Path) -> anyhow::Result<Vec<Arc<InternalRequest>>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = crate::clusters::remote_client(kubeconfig).await?;
        let api: Api<InternalRequest> = Api::all(client);
        let list = api
            .list(&ListParams::default())
            .await
            .context("cannot list InternalRequests")?;
        Ok(list.items.into_iter().map(Arc::new).collect())
    })
}
