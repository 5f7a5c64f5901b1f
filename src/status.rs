//! The status patches the controller writes to a remote request.
//!
//! Each patch sets the whole `Succeeded` condition, so a merge patch is
//! enough and the request always has exactly one condition of that type.
//! Messages are cut to Kubernetes' limit on a character boundary.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{Value, json};

use crate::api::request::{CONDITION_SUCCEEDED, reasons};
use crate::api::{AdmissionRecord, InternalRequest};
use crate::relay::Outcome;

/// Longest condition message the API server accepts.
const MESSAGE_MAX_BYTES: usize = 32 * 1024;

/// The request is running as `run` (`namespace/name`); `admission` is
/// recorded when this patch follows the admission decision.
pub fn running(request: &InternalRequest, run: &str, admission: Option<&AdmissionRecord>) -> Value {
    let now = now();
    let message = format!("PipelineRun {run} is running");
    let condition = condition(request, "Unknown", reasons::RUNNING, message, &now);
    let mut patch = json!({ "status": {
        "startTime": now,
        "pipelineRun": run,
        "completionTime": null,
        "results": null,
        "conditions": [condition],
        "observedGeneration": request.metadata.generation,
    }});
    if let Some(record) = admission {
        patch["status"]["admission"] = json!(record);
    }
    patch
}

/// The request was not admitted.
pub fn rejected(request: &InternalRequest, message: &str, admission: &AdmissionRecord) -> Value {
    let now = now();
    let condition = condition(
        request,
        "False",
        reasons::REJECTED,
        message.to_owned(),
        &now,
    );
    json!({ "status": {
        "completionTime": now,
        "conditions": [condition],
        "admission": admission,
        "observedGeneration": request.metadata.generation,
    }})
}

/// The run finished; its outcome becomes the request's.
pub fn finished(request: &InternalRequest, outcome: &Outcome) -> Value {
    let now = now();
    let (status, reason) = match outcome.succeeded {
        true => ("True", reasons::SUCCEEDED),
        false => ("False", reasons::FAILED),
    };
    let condition = condition(request, status, reason, outcome.message.clone(), &now);
    let results: BTreeMap<&String, &String> = outcome.results.iter().collect();
    json!({ "status": {
        "completionTime": outcome.completion_time.clone().unwrap_or(now),
        "results": results,
        "conditions": [condition],
    }})
}

/// The run is gone or unusable before it finished.
pub fn lost(request: &InternalRequest, message: String) -> Value {
    let now = now();
    let condition = condition(request, "False", reasons::FAILED, message, &now);
    json!({ "status": {
        "completionTime": now,
        "conditions": [condition],
    }})
}

fn condition(
    request: &InternalRequest,
    status: &str,
    reason: &str,
    message: String,
    now: &Time,
) -> Condition {
    Condition {
        type_: CONDITION_SUCCEEDED.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: truncate(message, MESSAGE_MAX_BYTES),
        last_transition_time: now.clone(),
        observed_generation: request.metadata.generation,
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// Cuts `text` to at most `max` bytes without splitting a character.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    const MARK: &str = "…";
    let mut end = max - MARK.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(MARK);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_respects_character_boundaries() {
        let text = "é".repeat(100);
        let cut = truncate(text, 51);
        assert!(cut.len() <= 51);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short".to_owned(), 10), "short");
    }

    #[test]
    fn running_patch_names_the_run_and_clears_old_outcome() {
        let request = InternalRequest::new("r", Default::default());
        let patch = running(&request, "internal/r-abc", None);
        assert_eq!(patch["status"]["pipelineRun"], "internal/r-abc");
        assert_eq!(patch["status"]["conditions"][0]["reason"], "Running");
        assert!(patch["status"]["results"].is_null());
    }
}
