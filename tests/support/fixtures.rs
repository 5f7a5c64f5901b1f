//! Per-test fixtures: fresh namespaces on both clusters, the config, a
//! Pipeline, requests labelled so only this test's controller serves them,
//! and waits driven by watches.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;

use internal_services::api::tekton::PipelineSpec;
use internal_services::api::{
    InternalRequest, InternalRequestSpec, InternalServicesConfig, InternalServicesConfigSpec,
    Pipeline, PipelineRun,
};

use super::ControlPlane;

/// Label that ties a request to the test that made it.
pub const CASE_LABEL: &str = "internal-services.test/case";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// One test's world: its own namespaces and label.
pub struct Case {
    pub id: String,
    pub remote: Client,
    pub internal: Client,
    /// The controller's namespace on the internal cluster.
    pub namespace: String,
}

impl Case {
    /// Creates the controller's namespace for a test named `name`.
    pub async fn new(plane: &ControlPlane, name: &str) -> Case {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "{}-{n}",
            name.replace('_', "-").chars().take(40).collect::<String>()
        );
        let case = Case {
            namespace: format!("{id}-ctl"),
            remote: plane.remote.client().await,
            internal: plane.internal.client().await,
            id,
        };
        create_namespace(&case.internal, &case.namespace).await;
        case
    }

    /// `--request-selector` for this test's controller.
    pub fn selector(&self) -> String {
        format!("{CASE_LABEL}={}", self.id)
    }

    /// Creates a fresh namespace on the remote cluster.
    pub async fn remote_namespace(&self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.id);
        create_namespace(&self.remote, &name).await;
        name
    }

    pub fn runs(&self) -> Api<PipelineRun> {
        Api::namespaced(self.internal.clone(), &self.namespace)
    }

    pub fn requests(&self, namespace: &str) -> Api<InternalRequest> {
        Api::namespaced(self.remote.clone(), namespace)
    }

    pub fn configs(&self) -> Api<InternalServicesConfig> {
        Api::namespaced(self.internal.clone(), &self.namespace)
    }

    /// Waits until the request is gone from the remote cluster.
    pub async fn wait_until_deleted(&self, namespace: &str, name: &str, within: Duration) {
        let gone = |r: Option<&InternalRequest>| r.is_none();
        tokio::time::timeout(
            within,
            await_condition(self.requests(namespace), name, gone),
        )
        .await
        .unwrap_or_else(|_| panic!("request {namespace}/{name} still exists after {within:?}"))
        .expect("watch request");
    }

    pub async fn create_config(&self, allow_list: &[&str], debug: bool) {
        let config = InternalServicesConfig {
            metadata: ObjectMeta {
                name: Some("config".into()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            spec: InternalServicesConfigSpec {
                allow_list: allow_list.iter().map(|s| s.to_string()).collect(),
                debug,
                ..Default::default()
            },
        };
        let api: Api<InternalServicesConfig> =
            Api::namespaced(self.internal.clone(), &self.namespace);
        api.create(&PostParams::default(), &config)
            .await
            .expect("create config");
    }

    pub async fn create_pipeline(&self, name: &str) {
        let mut pipeline = Pipeline::new(
            name,
            PipelineSpec {
                description: Some("test pipeline".into()),
            },
        );
        pipeline.metadata.namespace = Some(self.namespace.clone());
        let api: Api<Pipeline> = Api::namespaced(self.internal.clone(), &self.namespace);
        api.create(&PostParams::default(), &pipeline)
            .await
            .expect("create pipeline");
    }

    /// Creates a request carrying this test's label.
    pub async fn create_request(
        &self,
        namespace: &str,
        name: &str,
        pipeline: &str,
        params: &[(&str, &str)],
    ) -> InternalRequest {
        let spec = InternalRequestSpec {
            request: pipeline.to_owned(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let mut request = InternalRequest::new(name, spec);
        request.metadata.namespace = Some(namespace.to_owned());
        request.metadata.labels = Some(BTreeMap::from([(CASE_LABEL.to_owned(), self.id.clone())]));
        self.requests(namespace)
            .create(&PostParams::default(), &request)
            .await
            .expect("create request")
    }

    /// Waits until the request's `Succeeded` condition has `reason`.
    pub async fn wait_for_reason(
        &self,
        namespace: &str,
        name: &str,
        reason: &str,
    ) -> InternalRequest {
        let has_reason = |r: Option<&InternalRequest>| reason_of(r) == Some(reason.to_owned());
        let waited = tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(self.requests(namespace), name, has_reason),
        )
        .await;
        match waited {
            Ok(found) => found.expect("watch request").expect("request exists"),
            Err(_) => {
                let now = self.requests(namespace).get(name).await.ok();
                panic!(
                    "request {namespace}/{name} did not reach {reason} within 30s; now: {:?}",
                    now.and_then(|r| r.status)
                )
            }
        }
    }
}

/// The name of the run a running request names in its status.
pub fn run_of(request: &InternalRequest) -> String {
    let run = request
        .status
        .as_ref()
        .and_then(|s| s.pipeline_run.as_deref())
        .expect("the request names its run");
    let (_, name) = run.split_once('/').expect("the run as namespace/name");
    name.to_owned()
}

impl Case {
    /// Creates a request for `pipeline` and waits until it runs; returns
    /// its run's name.
    pub async fn start(
        &self,
        namespace: &str,
        name: &str,
        pipeline: &str,
        params: &[(&str, &str)],
    ) -> String {
        self.create_request(namespace, name, pipeline, params).await;
        run_of(&self.wait_for_reason(namespace, name, "Running").await)
    }
}

/// The reason of a request's `Succeeded` condition.
pub fn reason_of(request: Option<&InternalRequest>) -> Option<String> {
    request?
        .status
        .as_ref()?
        .succeeded()
        .map(|c| c.reason.clone())
}

/// The message of a request's `Succeeded` condition.
pub fn message_of(request: &InternalRequest) -> String {
    request
        .status
        .as_ref()
        .and_then(|s| s.succeeded())
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

async fn create_namespace(client: &Client, name: &str) {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(&PostParams::default(), &namespace)
        .await
        .expect("create namespace");
}

impl Case {
    /// Creates or replaces the ConfigMap `name` in the controller's namespace
    /// with exactly these policy files.
    pub async fn apply_policies(&self, name: &str, files: &[(&str, &str)]) {
        let data: BTreeMap<String, String> = files
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let configmap = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        let api: Api<ConfigMap> = Api::namespaced(self.internal.clone(), &self.namespace);
        let params = PatchParams::apply("internal-services-tests").force();
        api.patch(name, &params, &Patch::Apply(&configmap))
            .await
            .expect("apply policy ConfigMap");
    }

    /// Warning Events about the object named `name` in the controller's namespace.
    pub async fn warnings_about(&self, name: &str) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.internal.clone(), &self.namespace);
        let events = api.list(&ListParams::default()).await.expect("list events");
        events
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .collect()
    }
}
