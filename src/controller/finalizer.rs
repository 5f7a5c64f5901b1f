//! The finalizer that keeps a remote request from vanishing while its run
//! does.
//!
//! It is held only while a run exists for the request: added after
//! admission, right before the run is created, and removed once the run is
//! deleted (or kept for good). Rejected requests never get it and completed
//! ones lose it, so deleting them is never slowed down by this controller.
//! kube-runtime's finalizer helper holds its finalizer for an object's whole
//! life, which is why this small module exists instead.
//!
//! Both patches are JSON patches that first test the list they change, so a
//! finalizer that another controller adds or removes at the same moment is
//! never overwritten: the patch fails and the reconcile is retried.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::api::InternalRequest;

/// The finalizer this controller puts on requests it runs.
pub const NAME: &str = "internal-services.appstudio.redhat.com/pipelinerun";

/// Whether the request carries our finalizer.
pub fn held(request: &InternalRequest) -> bool {
    request.finalizers().iter().any(|f| f == NAME)
}

/// Adds the finalizer unless it is there already; returns the request's
/// resource version after the change, if there was one.
pub async fn add(
    api: &Api<InternalRequest>,
    request: &InternalRequest,
) -> kube::Result<Option<String>> {
    if held(request) {
        return Ok(None);
    }
    let patch = add_patch(request.finalizers());
    let updated = patch_metadata(api, request, patch).await?;
    Ok(updated.resource_version())
}

/// Removes the finalizer if it is there; returns the request's resource
/// version after the change, if there was one and the request remains.
pub async fn remove(
    api: &Api<InternalRequest>,
    request: &InternalRequest,
) -> kube::Result<Option<String>> {
    let Some(patch) = remove_patch(request.finalizers()) else {
        return Ok(None);
    };
    match patch_metadata(api, request, patch).await {
        Ok(updated) => Ok(updated.resource_version()),
        // Already gone: the finalizer was the last thing holding a deletion.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(err) => Err(err),
    }
}

/// Whether a failed finalizer patch means only that the list changed since
/// the request was read: the patch's test did not hold.
pub fn list_changed(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(e) if e.code == 422 || e.code == 409)
}

async fn patch_metadata(
    api: &Api<InternalRequest>,
    request: &InternalRequest,
    patch: Value,
) -> kube::Result<InternalRequest> {
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    api.patch(
        &request.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await
}

/// Appends our finalizer to `current`, testing that the list is unchanged.
fn add_patch(current: &[String]) -> Value {
    if current.is_empty() {
        return json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": [NAME] },
        ]);
    }
    json!([
        { "op": "test", "path": "/metadata/finalizers", "value": current },
        { "op": "add", "path": "/metadata/finalizers/-", "value": NAME },
    ])
}

/// Removes our finalizer from `current`, testing its position first.
fn remove_patch(current: &[String]) -> Option<Value> {
    let index = current.iter().position(|f| f == NAME)?;
    let path = format!("/metadata/finalizers/{index}");
    Some(json!([
        { "op": "test", "path": path, "value": NAME },
        { "op": "remove", "path": path },
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_to_an_empty_list_creates_it() {
        let patch = add_patch(&[]);
        assert_eq!(patch[1]["path"], "/metadata/finalizers");
        assert_eq!(patch[1]["value"], json!([NAME]));
    }

    #[test]
    fn adding_keeps_other_finalizers_and_tests_them() {
        let others = vec!["someone.else/finalizer".to_owned()];
        let patch = add_patch(&others);
        assert_eq!(patch[0]["value"], json!(others));
        assert_eq!(patch[1]["path"], "/metadata/finalizers/-");
    }

    #[test]
    fn removing_targets_our_entry_only() {
        let list = vec!["a/b".to_owned(), NAME.to_owned(), "c/d".to_owned()];
        let patch = remove_patch(&list).unwrap();
        assert_eq!(patch[1]["path"], "/metadata/finalizers/1");
        assert!(remove_patch(&["a/b".to_owned()]).is_none());
    }
}
