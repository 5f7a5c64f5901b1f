//! What a policy sees: the request, the config and finished runs.
//!
//! The shape is the script contract (see `policies/README.md`), so it is
//! built explicitly here rather than mirrored from the API types: renaming a
//! Rust field must not silently rename a script variable.
//!
//! The request is a read-only script type with one getter per field: built
//! once per decision, shared by reference with every policy, and only the
//! fields a script reads are touched. It has no setters, so no script can
//! change what the next one sees, and a misspelt field is an error (so a
//! denial), never a silent `()`. The config, which changes rarely, is a
//! read-only map converted once per distinct config.

use std::collections::BTreeMap;
use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, ImmutableString, Map};

use crate::api::{InternalRequest, InternalServicesConfigSpec};

/// The request as scripts read it (`Request` in scripts).
#[derive(Clone, Debug)]
pub struct ScriptRequest(Arc<RequestFields>);

#[derive(Debug)]
struct RequestFields {
    name: ImmutableString,
    namespace: ImmutableString,
    uid: ImmutableString,
    labels: Dynamic,
    annotations: Dynamic,
    pipeline: ImmutableString,
    resolver: Dynamic,
    params: Dynamic,
    service_account: ImmutableString,
    timeouts: Dynamic,
}

/// A finished run as retention scripts read it.
#[derive(Clone, Debug)]
pub struct RunView {
    pub name: String,
    /// `Succeeded` or `Failed`.
    pub outcome: String,
    pub pipeline: String,
    /// Namespace and name of the remote request it served.
    pub namespace: String,
    pub request: String,
}

/// The config as scripts read it.
#[derive(Clone, Debug)]
pub struct ConfigView<'a>(pub &'a InternalServicesConfigSpec);

impl ScriptRequest {
    pub fn new(request: &InternalRequest) -> Self {
        let meta = &request.metadata;
        let spec = &request.spec;
        let text =
            |value: &Option<String>| ImmutableString::from(value.as_deref().unwrap_or_default());

        let mut timeouts = BTreeMap::new();
        if let Some(t) = &spec.timeouts {
            for (key, value) in [
                ("pipeline", &t.pipeline),
                ("tasks", &t.tasks),
                ("finally", &t.finally),
            ] {
                if let Some(value) = value {
                    timeouts.insert(key.to_owned(), value.clone());
                }
            }
        }
        let (kind, resolver_params) = match spec.resolver() {
            Some(r) => (
                r.resolver.as_str(),
                r.params
                    .iter()
                    .map(|p| (p.name.clone(), p.value.clone()))
                    .collect(),
            ),
            None => ("", BTreeMap::new()),
        };

        Self(Arc::new(RequestFields {
            name: text(&meta.name),
            namespace: text(&meta.namespace),
            uid: text(&meta.uid),
            labels: optional_map(meta.labels.as_ref()),
            annotations: optional_map(meta.annotations.as_ref()),
            pipeline: spec.request.as_str().into(),
            resolver: read_only(object([
                ("kind", kind.into()),
                ("params", string_map(&resolver_params)),
            ])),
            params: read_only(string_map(&spec.params)),
            service_account: text(&spec.service_account),
            timeouts: read_only(string_map(&timeouts)),
        }))
    }
}

/// Registers the `Request` type and its read-only fields.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<ScriptRequest>("Request");
    engine.register_get("name", |r: &mut ScriptRequest| r.0.name.clone());
    engine.register_get("namespace", |r: &mut ScriptRequest| r.0.namespace.clone());
    engine.register_get("uid", |r: &mut ScriptRequest| r.0.uid.clone());
    engine.register_get("labels", |r: &mut ScriptRequest| r.0.labels.clone());
    engine.register_get("annotations", |r: &mut ScriptRequest| {
        r.0.annotations.clone()
    });
    engine.register_get("pipeline", |r: &mut ScriptRequest| r.0.pipeline.clone());
    engine.register_get("resolver", |r: &mut ScriptRequest| r.0.resolver.clone());
    engine.register_get("params", |r: &mut ScriptRequest| r.0.params.clone());
    engine.register_get("service_account", |r: &mut ScriptRequest| {
        r.0.service_account.clone()
    });
    engine.register_get("timeouts", |r: &mut ScriptRequest| r.0.timeouts.clone());
    engine.register_fn("to_string", |r: &mut ScriptRequest| {
        format!("{}/{}", r.0.namespace, r.0.name)
    });
    engine.register_fn("to_debug", |r: &mut ScriptRequest| {
        format!("Request({}/{})", r.0.namespace, r.0.name)
    });
}

impl ConfigView<'_> {
    pub fn to_script(&self) -> Dynamic {
        let config = self.0;
        let volume_claim = BTreeMap::from([
            ("name".to_owned(), config.volume_claim.name.clone()),
            ("size".to_owned(), config.volume_claim.size.clone()),
        ]);
        read_only(object([
            ("allow_list", string_array(&config.allow_list)),
            ("keep_runs", config.debug.into()),
            ("volume_claim", string_map(&volume_claim)),
            (
                "allowed_git_resolver_urls",
                string_array(&config.allowed_git_resolver_urls),
            ),
        ]))
    }
}

impl RunView {
    pub fn to_script(&self) -> Dynamic {
        read_only(object([
            ("name", self.name.as_str().into()),
            ("outcome", self.outcome.as_str().into()),
            ("pipeline", self.pipeline.as_str().into()),
            ("namespace", self.namespace.as_str().into()),
            ("request", self.request.as_str().into()),
        ]))
    }
}

/// A read-only value shared by reference: each call gets it without a deep
/// copy, and a script that tries to change it fails.
pub fn read_only(value: Dynamic) -> Dynamic {
    value.into_read_only().into_shared()
}

fn optional_map(map: Option<&BTreeMap<String, String>>) -> Dynamic {
    match map {
        Some(map) if !map.is_empty() => read_only(string_map(map)),
        _ => read_only(Map::new().into()),
    }
}

fn string_map(map: &BTreeMap<String, String>) -> Dynamic {
    let mut out = Map::new();
    for (key, value) in map {
        out.insert(key.as_str().into(), value.as_str().into());
    }
    out.into()
}

fn string_array(items: &[String]) -> Dynamic {
    let array: Array = items.iter().map(|s| s.as_str().into()).collect();
    array.into()
}

fn object<const N: usize>(fields: [(&str, Dynamic); N]) -> Dynamic {
    let mut map = Map::new();
    for (key, value) in fields {
        map.insert(key.into(), value);
    }
    map.into()
}
