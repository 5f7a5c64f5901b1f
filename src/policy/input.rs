//! What a policy sees: the request, the config and finished runs as plain
//! script maps.
//!
//! The shape is the script contract (see `policies/README.md`), so it is
//! built explicitly here rather than mirrored from the API types: renaming a
//! Rust field must not silently rename a script variable. Every field is
//! always present, so strict property access never trips on a missing one.

use std::collections::BTreeMap;

use rhai::Dynamic;
use serde::Serialize;

use crate::api::{InternalRequest, InternalServicesConfigSpec};

/// The request as scripts read it.
#[derive(Clone, Debug, Serialize)]
pub struct RequestView {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `spec.request`; empty for the resolver form.
    pub pipeline: String,
    pub resolver: ResolverView,
    pub params: BTreeMap<String, String>,
    pub service_account: String,
    pub timeouts: BTreeMap<String, String>,
}

/// `spec.pipeline.pipelineRef`; `kind` is empty when not in resolver form.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ResolverView {
    pub kind: String,
    pub params: BTreeMap<String, String>,
}

/// The config as scripts read it.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigView {
    pub allow_list: Vec<String>,
    pub debug: bool,
    pub volume_claim: BTreeMap<String, String>,
    pub allowed_git_resolver_urls: Vec<String>,
}

/// A finished run as retention scripts read it.
#[derive(Clone, Debug, Serialize)]
pub struct RunView {
    pub name: String,
    /// `Succeeded` or `Failed`.
    pub outcome: String,
    pub pipeline: String,
    /// Namespace and name of the remote request it served.
    pub namespace: String,
    pub request: String,
}

/// Converts a view to a script value.
pub fn to_script<T: Serialize>(view: &T) -> Dynamic {
    rhai::serde::to_dynamic(view).unwrap_or_default()
}

impl From<&InternalRequest> for RequestView {
    fn from(request: &InternalRequest) -> Self {
        let meta = &request.metadata;
        let spec = &request.spec;
        let mut timeouts = BTreeMap::new();
        if let Some(t) = &spec.timeouts {
            let pairs = [
                ("pipeline", &t.pipeline),
                ("tasks", &t.tasks),
                ("finally", &t.finally),
            ];
            for (key, value) in pairs {
                if let Some(value) = value {
                    timeouts.insert(key.to_owned(), value.clone());
                }
            }
        }
        let resolver = spec
            .resolver()
            .map(|r| ResolverView {
                kind: r.resolver.clone(),
                params: r
                    .params
                    .iter()
                    .map(|p| (p.name.clone(), p.value.clone()))
                    .collect(),
            })
            .unwrap_or_default();

        Self {
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            pipeline: spec.request.clone(),
            resolver,
            params: spec.params.clone(),
            service_account: spec.service_account.clone().unwrap_or_default(),
            timeouts,
        }
    }
}

impl From<&InternalServicesConfigSpec> for ConfigView {
    fn from(config: &InternalServicesConfigSpec) -> Self {
        let volume_claim = BTreeMap::from([
            ("name".to_owned(), config.volume_claim.name.clone()),
            ("size".to_owned(), config.volume_claim.size.clone()),
        ]);
        Self {
            allow_list: config.allow_list.clone(),
            debug: config.debug,
            volume_claim,
            allowed_git_resolver_urls: config.allowed_git_resolver_urls.clone(),
        }
    }
}
