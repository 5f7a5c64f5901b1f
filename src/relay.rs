//! Reading a PipelineRun's outcome in the terms a request reports.
//!
//! Tekton marks a run finished with its `Succeeded` condition turning `True`
//! or `False`. Results are relayed on failure as well as on success, because
//! an internal pipeline's failure details are often in its results; values
//! that are not strings are relayed as their JSON text.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::PipelineRun;

/// Where a run stands.
#[derive(Clone, Debug, PartialEq)]
pub enum RunState {
    Running,
    Finished(Outcome),
}

/// A finished run's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub succeeded: bool,
    pub message: String,
    pub results: BTreeMap<String, String>,
    pub completion_time: Option<Time>,
}

/// Reads the run's state from its status.
pub fn state(run: &PipelineRun) -> RunState {
    let Some(status) = &run.status else {
        return RunState::Running;
    };
    let Some(condition) = status.conditions.iter().find(|c| c.type_ == "Succeeded") else {
        return RunState::Running;
    };

    let succeeded = match condition.status.as_str() {
        "True" => true,
        "False" => false,
        _ => return RunState::Running,
    };
    let message = condition
        .message
        .clone()
        .filter(|m| !m.is_empty())
        .or_else(|| condition.reason.clone())
        .unwrap_or_default();

    RunState::Finished(Outcome {
        succeeded,
        message,
        results: results(run),
        completion_time: status.completion_time.clone(),
    })
}

/// The run's results as strings.
pub fn results(run: &PipelineRun) -> BTreeMap<String, String> {
    let Some(status) = &run.status else {
        return BTreeMap::new();
    };
    status
        .results
        .iter()
        .map(|r| {
            let value = match &r.value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (r.name.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tekton::{PipelineRunStatus, RunCondition, RunResult};
    use serde_json::json;

    fn run_with(status: &str, message: &str, results: Vec<RunResult>) -> PipelineRun {
        let mut run = PipelineRun::new("r", Default::default());
        run.status = Some(PipelineRunStatus {
            conditions: vec![RunCondition {
                type_: "Succeeded".to_owned(),
                status: status.to_owned(),
                reason: Some("Reason".to_owned()),
                message: Some(message.to_owned()),
            }],
            results,
            ..Default::default()
        });
        run
    }

    #[test]
    fn unknown_condition_means_running() {
        assert_eq!(state(&run_with("Unknown", "", vec![])), RunState::Running);
        assert_eq!(
            state(&PipelineRun::new("r", Default::default())),
            RunState::Running
        );
    }

    #[test]
    fn failure_keeps_message_and_results() {
        let results = vec![
            RunResult {
                name: "log".into(),
                value: json!("disk full"),
            },
            RunResult {
                name: "list".into(),
                value: json!(["a", "b"]),
            },
        ];
        let RunState::Finished(outcome) = state(&run_with("False", "task x failed", results))
        else {
            panic!("not finished")
        };
        assert!(!outcome.succeeded);
        assert_eq!(outcome.message, "task x failed");
        assert_eq!(outcome.results["log"], "disk full");
        assert_eq!(outcome.results["list"], r#"["a","b"]"#);
    }
}
