//! What a policy sees: the request and the config as plain script maps.
//!
//! The shape is the script contract, so it is built explicitly here rather
//! than mirrored from the API types: renaming a Rust field must not silently
//! rename a script variable.

use std::collections::BTreeMap;

use rhai::Dynamic;
use serde::Serialize;

use crate::api::{InternalRequest, InternalServicesConfigSpec};

/// The request and config in the form scripts read them.
#[derive(Debug, Serialize)]
pub struct AdmissionInput {
    request: RequestView,
    config: ConfigView,
}

#[derive(Debug, Serialize)]
struct RequestView {
    name: String,
    namespace: String,
    uid: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    pipeline: String,
    params: BTreeMap<String, String>,
    service_account: String,
    timeouts: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct ConfigView {
    allow_list: Vec<String>,
    debug: bool,
    volume_claim: BTreeMap<String, String>,
}

impl AdmissionInput {
    pub fn new(request: &InternalRequest, config: &InternalServicesConfigSpec) -> Self {
        Self {
            request: RequestView::from(request),
            config: ConfigView::from(config),
        }
    }

    pub fn request_value(&self) -> Dynamic {
        rhai::serde::to_dynamic(&self.request).unwrap_or_default()
    }

    pub fn config_value(&self) -> Dynamic {
        rhai::serde::to_dynamic(&self.config).unwrap_or_default()
    }
}

impl From<&InternalRequest> for RequestView {
    fn from(request: &InternalRequest) -> Self {
        let meta = &request.metadata;
        let mut timeouts = BTreeMap::new();
        if let Some(t) = &request.spec.timeouts {
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

        Self {
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            pipeline: request.spec.request.clone(),
            params: request.spec.params.clone(),
            service_account: request.spec.service_account.clone().unwrap_or_default(),
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
        }
    }
}
