//! What a policy sees: the request, the config and finished runs.
//!
//! The shape is the script contract (see `policies/README.md`), so it is
//! built explicitly here rather than mirrored from the API types: renaming a
//! Rust field must not silently rename a script variable.
//!
//! The request is a read-only script type with one getter per field. It
//! wraps the request the controller already holds, and each field is
//! converted to a script value on first read only, then kept for the rest of
//! the decision: most policies read two or three fields, and converting all
//! of them up front cost more than running a simple policy. It has no
//! setters, so no script can change what the next one sees, and a misspelt
//! field is an error (so a denial), never a silent `()`. The config, which
//! changes rarely, is a read-only map converted once per distinct config.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use rhai::{Array, Dynamic, Engine, ImmutableString, Map};

use crate::api::{InternalRequest, InternalServicesConfigSpec};

/// The request as scripts read it (`Request` in scripts).
#[derive(Clone, Debug)]
pub struct ScriptRequest(Arc<Fields>);

/// The request and its fields, each converted on first read.
#[derive(Debug)]
struct Fields {
    request: Arc<InternalRequest>,
    name: OnceLock<ImmutableString>,
    namespace: OnceLock<ImmutableString>,
    uid: OnceLock<ImmutableString>,
    pipeline: OnceLock<ImmutableString>,
    service_account: OnceLock<ImmutableString>,
    labels: OnceLock<Dynamic>,
    annotations: OnceLock<Dynamic>,
    resolver: OnceLock<Dynamic>,
    params: OnceLock<Dynamic>,
    timeouts: OnceLock<Dynamic>,
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
    pub fn new(request: Arc<InternalRequest>) -> Self {
        Self(Arc::new(Fields {
            request,
            name: OnceLock::new(),
            namespace: OnceLock::new(),
            uid: OnceLock::new(),
            pipeline: OnceLock::new(),
            service_account: OnceLock::new(),
            labels: OnceLock::new(),
            annotations: OnceLock::new(),
            resolver: OnceLock::new(),
            params: OnceLock::new(),
            timeouts: OnceLock::new(),
        }))
    }

    fn text(
        cell: &OnceLock<ImmutableString>,
        value: impl FnOnce() -> Option<String>,
    ) -> ImmutableString {
        cell.get_or_init(|| value().unwrap_or_default().into())
            .clone()
    }

    fn value(cell: &OnceLock<Dynamic>, value: impl FnOnce() -> Dynamic) -> Dynamic {
        cell.get_or_init(|| read_only(value())).clone()
    }

    fn name(&self) -> ImmutableString {
        Self::text(&self.0.name, || self.0.request.metadata.name.clone())
    }

    fn namespace(&self) -> ImmutableString {
        Self::text(&self.0.namespace, || {
            self.0.request.metadata.namespace.clone()
        })
    }

    fn uid(&self) -> ImmutableString {
        Self::text(&self.0.uid, || self.0.request.metadata.uid.clone())
    }

    fn pipeline(&self) -> ImmutableString {
        Self::text(&self.0.pipeline, || {
            Some(self.0.request.spec.request.clone())
        })
    }

    fn service_account(&self) -> ImmutableString {
        Self::text(&self.0.service_account, || {
            self.0.request.spec.service_account.clone()
        })
    }

    fn labels(&self) -> Dynamic {
        Self::value(&self.0.labels, || {
            optional_map(self.0.request.metadata.labels.as_ref())
        })
    }

    fn annotations(&self) -> Dynamic {
        Self::value(&self.0.annotations, || {
            optional_map(self.0.request.metadata.annotations.as_ref())
        })
    }

    fn params(&self) -> Dynamic {
        Self::value(&self.0.params, || string_map(&self.0.request.spec.params))
    }

    fn timeouts(&self) -> Dynamic {
        Self::value(&self.0.timeouts, || {
            let mut timeouts = BTreeMap::new();
            if let Some(t) = &self.0.request.spec.timeouts {
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
            string_map(&timeouts)
        })
    }

    fn resolver(&self) -> Dynamic {
        Self::value(&self.0.resolver, || {
            let (kind, params) = match self.0.request.spec.resolver() {
                Some(r) => (
                    r.resolver.as_str(),
                    r.params
                        .iter()
                        .map(|p| (p.name.clone(), p.value.clone()))
                        .collect(),
                ),
                None => ("", BTreeMap::new()),
            };
            object([("kind", kind.into()), ("params", string_map(&params))])
        })
    }
}

/// Registers the `Request` type and its read-only fields.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<ScriptRequest>("Request");
    engine.register_get("name", |r: &mut ScriptRequest| r.name());
    engine.register_get("namespace", |r: &mut ScriptRequest| r.namespace());
    engine.register_get("uid", |r: &mut ScriptRequest| r.uid());
    engine.register_get("labels", |r: &mut ScriptRequest| r.labels());
    engine.register_get("annotations", |r: &mut ScriptRequest| r.annotations());
    engine.register_get("pipeline", |r: &mut ScriptRequest| r.pipeline());
    engine.register_get("resolver", |r: &mut ScriptRequest| r.resolver());
    engine.register_get("params", |r: &mut ScriptRequest| r.params());
    engine.register_get("service_account", |r: &mut ScriptRequest| {
        r.service_account()
    });
    engine.register_get("timeouts", |r: &mut ScriptRequest| r.timeouts());
    engine.register_fn("to_string", |r: &mut ScriptRequest| {
        format!("{}/{}", r.namespace(), r.name())
    });
    engine.register_fn("to_debug", |r: &mut ScriptRequest| {
        format!("Request({}/{})", r.namespace(), r.name())
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
        Some(map) => string_map(map),
        None => Map::new().into(),
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
