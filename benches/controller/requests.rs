//! The remote side of the benchmark: creating requests as fast as the
//! server takes them, and a watch that notes when each became terminal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};

use internal_services::api::{InternalRequest, InternalRequestSpec};

use crate::support::fixtures::CASE_LABEL;

pub const PIPELINE: &str = "internal-system-abc-pipeline";
const DIGEST: &str = "sha256:dd517544390c4c9636a555081205115a2fd3e83c326e64026f17f391e24bd2e5";

/// A request the benchmark sends: in `namespace`, labelled for `case`.
pub fn request(case: &str, namespace: &str, name: &str) -> InternalRequest {
    let spec = InternalRequestSpec {
        request: PIPELINE.to_owned(),
        params: [
            ("bar".to_owned(), DIGEST.to_owned()),
            ("foo".to_owned(), "quay.io/org/app:1.0".to_owned()),
        ]
        .into(),
        ..Default::default()
    };
    let mut request = InternalRequest::new(name, spec);
    request.metadata.namespace = Some(namespace.to_owned());
    request.metadata.labels = Some([(CASE_LABEL.to_owned(), case.to_owned())].into());
    request
}

/// Creates all `(namespace, name)` requests, `concurrency` at a time;
/// returns when each create returned, by `namespace/name`.
pub async fn create_all(
    client: &Client,
    case: &str,
    names: Vec<(String, String)>,
    concurrency: usize,
) -> HashMap<String, Instant> {
    let created = Arc::new(Mutex::new(HashMap::new()));
    futures::stream::iter(names)
        .for_each_concurrent(concurrency, |(namespace, name)| {
            let (client, created) = (client.clone(), created.clone());
            async move {
                let api: Api<InternalRequest> = Api::namespaced(client, &namespace);
                api.create(&PostParams::default(), &request(case, &namespace, &name))
                    .await
                    .unwrap_or_else(|err| panic!("create {namespace}/{name}: {err}"));
                created
                    .lock()
                    .unwrap()
                    .insert(format!("{namespace}/{name}"), Instant::now());
            }
        })
        .await;
    Arc::try_unwrap(created).unwrap().into_inner().unwrap()
}

/// When each request was first seen terminal, by `namespace/name`.
#[derive(Clone, Default)]
pub struct Outcomes {
    pub terminal: Arc<Mutex<HashMap<String, Instant>>>,
    /// The policy set that decided each one.
    pub policy_set: Arc<Mutex<HashMap<String, String>>>,
}

impl Outcomes {
    /// Watches every request labelled for `case` on the remote cluster.
    pub fn watch(client: Client, case: &str) -> Self {
        let outcomes = Self::default();
        let api: Api<InternalRequest> = Api::all(client);
        let config = watcher::Config::default().labels(&format!("{CASE_LABEL}={case}"));
        let seen = outcomes.clone();
        tokio::spawn(async move {
            let stream = watcher::watcher(api, config);
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let (Ok(Event::Apply(request)) | Ok(Event::InitApply(request))) = event else {
                    continue;
                };
                seen.note(&request);
            }
        });
        outcomes
    }

    fn note(&self, request: &InternalRequest) {
        let key = format!(
            "{}/{}",
            request.namespace().unwrap_or_default(),
            request.name_any()
        );
        let status = request.status_or_default();
        if let Some(admission) = &status.admission {
            self.policy_set
                .lock()
                .unwrap()
                .insert(key.clone(), admission.policy_set.clone());
        }
        if status.is_terminal() {
            self.terminal
                .lock()
                .unwrap()
                .entry(key)
                .or_insert_with(Instant::now);
        }
    }

    pub fn terminal_count(&self) -> usize {
        self.terminal.lock().unwrap().len()
    }

    pub fn terminal_at(&self, key: &str) -> Option<Instant> {
        self.terminal.lock().unwrap().get(key).copied()
    }

    pub fn policy_set_of(&self, key: &str) -> Option<String> {
        self.policy_set.lock().unwrap().get(key).cloned()
    }
}
