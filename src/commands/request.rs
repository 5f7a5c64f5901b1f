//! `request submit` and `request wait`: what a remote pipeline needs to ask
//! for an internal run and wait for its outcome, without a polling script.
//!
//! Waiting follows a watch on the requests, so an outcome is seen the moment
//! the controller writes it. The exit codes are those of the waiting script
//! existing release pipelines use: 0 when every request succeeded, 21 when
//! any failed or was rejected (or was deleted before it finished), 124 when
//! the timeout passed first. The statuses are printed as JSON either way.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Config, ResourceExt};
use serde::Serialize;
use serde_json::Value;

use crate::api::{
    InternalRequest, InternalRequestSpec, PipelineSource, ResolverParam, ResolverRef, Timeouts,
    reasons,
};
use crate::cli::{RemoteTarget, SubmitArgs, WaitArgs};

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Every request succeeded (or, without a wait, the request was created).
    Succeeded,
    /// At least one failed, was rejected or vanished.
    Failed,
    TimedOut,
}

impl Ending {
    /// The process exit code for this ending.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Succeeded => 0,
            Self::Failed => 21,
            Self::TimedOut => 124,
        }
    }
}

/// One request's state as printed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    namespace: String,
    name: String,
    /// `Running`, `Succeeded`, `Failed`, `Rejected`, `Pending` (not looked
    /// at yet) or `Deleted`.
    reason: String,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline_run: Option<String>,
    results: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_time: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_time: Option<Value>,
}

/// Creates a request; with `--wait`, waits for its outcome.
pub fn submit(args: &SubmitArgs, out: &mut impl Write) -> anyhow::Result<Ending> {
    let runtime = runtime()?;
    check_submit(args)?;
    runtime.block_on(async {
        let (client, namespace) = connect(&args.target).await?;
        let api: Api<InternalRequest> = Api::namespaced(client, &namespace);
        warn_if_wait_is_shorter(args);

        let created = api
            .create(&PostParams::default(), &build(args, &namespace))
            .await
            .map_err(|err| {
                anyhow::anyhow!("cannot create the InternalRequest: {}", api_message(&err))
            })?;
        let name = created.name_any();
        eprintln!("created InternalRequest {namespace}/{name}");

        if !args.wait {
            print_json(out, &report(&created))?;
            return Ok(Ending::Succeeded);
        }
        let (ending, reports) = follow(&api, Selection::Name(&name), args.timeout).await?;
        match reports.first() {
            Some(last) => print_json(out, last)?,
            None => print_json(out, &report(&created))?,
        }
        Ok(ending)
    })
}

/// Waits for existing requests by name or label selector.
pub fn wait(args: &WaitArgs, out: &mut impl Write) -> anyhow::Result<Ending> {
    let runtime = runtime()?;
    runtime.block_on(async {
        let (client, namespace) = connect(&args.target).await?;
        let api: Api<InternalRequest> = Api::namespaced(client, &namespace);
        let selection = match (&args.name, &args.selector) {
            (Some(name), _) => Selection::Name(name),
            (None, Some(selector)) => Selection::Labels(selector),
            (None, None) => anyhow::bail!("give a request name or --selector"),
        };
        let by_name = matches!(selection, Selection::Name(_));
        let (ending, reports) = follow(&api, selection, args.timeout).await?;
        match (by_name, reports.first()) {
            (true, Some(only)) => print_json(out, only)?,
            (true, None) => print_json(out, &serde_json::Value::Null)?,
            (false, _) => print_json(out, &reports)?,
        }
        Ok(ending)
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A client for the cluster where requests live, and the namespace to use.
async fn connect(target: &RemoteTarget) -> anyhow::Result<(Client, String)> {
    let config = match &target.kubeconfig {
        Some(path) => crate::clusters::config_from(path).await?,
        None => Config::infer()
            .await
            .context("cannot find a cluster: give --kubeconfig, set KUBECONFIG or run in a pod")?,
    };
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).context("cannot build a client")?;
    Ok((client, namespace))
}

/// What clap cannot check: a parameter or label given twice (the last one
/// would silently win), timeouts Tekton would refuse, and flags that only
/// mean something together.
fn check_submit(args: &SubmitArgs) -> anyhow::Result<()> {
    for (flag, pairs) in [("--param", &args.params), ("--label", &args.labels)] {
        let mut keys = std::collections::BTreeSet::new();
        if let Some((key, _)) = pairs.iter().find(|(key, _)| !keys.insert(key)) {
            anyhow::bail!("{flag} {key} is given twice");
        }
    }
    let timeouts = [
        ("--pipeline-timeout", &args.pipeline_timeout),
        ("--tasks-timeout", &args.tasks_timeout),
        ("--finally-timeout", &args.finally_timeout),
    ];
    for (flag, value) in timeouts {
        if let Some(value) = value {
            anyhow::ensure!(
                crate::admission::is_go_duration(value),
                "{flag} {value} is not a duration such as 1h30m or 90s"
            );
        }
    }
    anyhow::ensure!(
        args.resolver_params.is_empty() || args.resolver.is_some(),
        "--resolver-param needs --resolver"
    );
    if !args.wait && args.timeout != Duration::from_secs(3600) {
        eprintln!("warning: --timeout only applies with --wait");
    }
    Ok(())
}

/// The request `submit` creates.
fn build(args: &SubmitArgs, namespace: &str) -> InternalRequest {
    let timeouts = Timeouts {
        pipeline: args.pipeline_timeout.clone(),
        tasks: args.tasks_timeout.clone(),
        finally: args.finally_timeout.clone(),
    };
    let pipeline = args.resolver.as_ref().map(|resolver| PipelineSource {
        pipeline_ref: ResolverRef {
            resolver: resolver.clone(),
            params: args
                .resolver_params
                .iter()
                .map(|(name, value)| ResolverParam {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
        },
    });
    let spec = InternalRequestSpec {
        request: args.pipeline.clone().unwrap_or_default(),
        pipeline,
        params: args.params.iter().cloned().collect(),
        timeouts: (timeouts != Timeouts::default()).then_some(timeouts),
        service_account: args.service_account.clone(),
    };

    let labels: BTreeMap<String, String> = args.labels.iter().cloned().collect();
    let metadata = ObjectMeta {
        name: args.name.clone(),
        generate_name: args
            .name
            .is_none()
            .then(|| generated_prefix(args.pipeline.as_deref().unwrap_or("request"))),
        namespace: Some(namespace.to_owned()),
        labels: (!labels.is_empty()).then_some(labels),
        ..Default::default()
    };
    InternalRequest {
        metadata,
        spec,
        status: None,
    }
}

/// A `generateName` prefix from the pipeline's name: lowercase, at most 57
/// characters and a dash, so the generated name is always valid.
fn generated_prefix(pipeline: &str) -> String {
    let cleaned: String = pipeline
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() {
            true => c.to_ascii_lowercase(),
            false => '-',
        })
        .take(57)
        .collect();
    let cleaned = cleaned.trim_matches('-');
    match cleaned.is_empty() {
        true => "request-".to_owned(),
        false => format!("{cleaned}-"),
    }
}

/// Waiting less than the run may take is a known way to lose a release:
/// say so before it happens.
fn warn_if_wait_is_shorter(args: &SubmitArgs) {
    let Some(pipeline) = args.pipeline_timeout.as_deref().filter(|_| args.wait) else {
        return;
    };
    if let Ok(run) = crate::policy::parse_duration(pipeline)
        && run > args.timeout
    {
        eprintln!(
            "warning: waiting at most {:?}, but the run may take up to {pipeline}; \
             the wait may time out while the run still goes on",
            args.timeout
        );
    }
}

enum Selection<'a> {
    Name(&'a str),
    Labels(&'a str),
}

/// Follows the selected requests until every one is terminal or `timeout`
/// passes; returns the ending and the last state of each.
async fn follow(
    api: &Api<InternalRequest>,
    selection: Selection<'_>,
    timeout: Duration,
) -> anyhow::Result<(Ending, Vec<Report>)> {
    let config = match selection {
        Selection::Name(name) => {
            watcher::Config::default().fields(&format!("metadata.name={name}"))
        }
        Selection::Labels(selector) => watcher::Config::default().labels(selector),
    };
    let mut seen: BTreeMap<String, Report> = BTreeMap::new();
    let what = match selection {
        Selection::Name(name) => format!("InternalRequest {name}"),
        Selection::Labels(selector) => format!("InternalRequest matching {selector}"),
    };
    let watching = watch_until_terminal(api, config, &what, &mut seen);
    match tokio::time::timeout(timeout, watching).await {
        Ok(result) => {
            result?;
            let ending = match seen.values().all(|r| r.reason == reasons::SUCCEEDED) {
                true => Ending::Succeeded,
                false => Ending::Failed,
            };
            Ok((ending, seen.into_values().collect()))
        }
        Err(_) => {
            match seen.is_empty() {
                true => {
                    eprintln!("timed out after {timeout:?} before any matching request was seen")
                }
                false => eprintln!("timed out after {timeout:?}"),
            }
            Ok((Ending::TimedOut, seen.into_values().collect()))
        }
    }
}

/// Follows the watch until every request seen is terminal. While none
/// matches yet, it keeps waiting for one to appear (a pipeline may start
/// waiting before the request is created), until the caller's timeout.
async fn watch_until_terminal(
    api: &Api<InternalRequest>,
    config: watcher::Config,
    what: &str,
    seen: &mut BTreeMap<String, Report>,
) -> anyhow::Result<()> {
    let stream = watcher::watcher(api.clone(), config);
    futures::pin_mut!(stream);
    let (mut listed, mut told) = (false, false);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(request) | Event::InitApply(request)) => {
                seen.insert(request.name_any(), report(&request));
            }
            Ok(Event::Delete(request)) => {
                let entry = seen
                    .entry(request.name_any())
                    .or_insert_with(|| report(&request));
                if !is_terminal(&entry.reason) {
                    entry.reason = "Deleted".to_owned();
                    entry.message = "the request was deleted before it finished".to_owned();
                }
            }
            Ok(Event::Init) => {}
            Ok(Event::InitDone) => listed = true,
            Err(err) => {
                eprintln!("watch interrupted ({err}); resuming");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        if listed && seen.is_empty() && !told {
            eprintln!(
                "no {what} in namespace {} yet; waiting for one",
                api_namespace(api)
            );
            told = true;
        }
        if listed && !seen.is_empty() && seen.values().all(|r| is_terminal(&r.reason)) {
            return Ok(());
        }
    }
    anyhow::bail!("the watch of InternalRequests ended")
}

/// What the API server said, without the wrapping of the client's error.
fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

fn api_namespace(api: &Api<InternalRequest>) -> String {
    api.resource_url()
        .split("/namespaces/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("?")
        .to_owned()
}

fn is_terminal(reason: &str) -> bool {
    !matches!(reason, "Running" | "Pending")
}

fn report(request: &InternalRequest) -> Report {
    let status = request.status_or_default();
    let condition = status.succeeded();
    let time = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.as_ref().and_then(|t| serde_json::to_value(t).ok())
    };
    Report {
        namespace: request.namespace().unwrap_or_default(),
        name: request.name_any(),
        reason: condition.map_or_else(|| "Pending".to_owned(), |c| c.reason.clone()),
        message: condition.map(|c| c.message.clone()).unwrap_or_default(),
        pipeline_run: status.pipeline_run.clone(),
        results: status.results.clone(),
        start_time: time(&status.start_time),
        completion_time: time(&status.completion_time),
    }
}

fn print_json(out: &mut impl Write, value: &impl Serialize) -> anyhow::Result<()> {
    writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_prefixes_are_valid_names() {
        assert_eq!(generated_prefix("push-to-registry"), "push-to-registry-");
        assert_eq!(generated_prefix("Weird_Name!"), "weird-name-");
        assert_eq!(generated_prefix("---"), "request-");
        assert_eq!(generated_prefix(&"a".repeat(100)).len(), 58);
    }

    #[test]
    fn exit_codes_match_the_waiting_script() {
        assert_eq!(Ending::Succeeded.exit_code(), 0);
        assert_eq!(Ending::Failed.exit_code(), 21);
        assert_eq!(Ending::TimedOut.exit_code(), 124);
    }
}
