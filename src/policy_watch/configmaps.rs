//! Policies from ConfigMaps in the controller's namespace, one key per
//! `*.rhai` file, watched through the API.
//!
//! Every change to a matching ConfigMap rebuilds the set from all of them.
//! A file that does not compile is also reported as a Warning Event on the
//! ConfigMap that holds it, once per distinct broken text.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use super::Reloader;
use crate::policy::{Build, SourceFile, is_policy_name};

/// Policy files of the given ConfigMaps, with the ConfigMap each is in.
///
/// A file name given by two ConfigMaps is unusable, as a file that does not
/// compile is: neither text is trusted, so whoever can create a ConfigMap
/// the selector matches cannot replace a rule by reusing its name.
pub fn files_from_configmaps(configmaps: &[ConfigMap]) -> Vec<(SourceFile, String)> {
    let mut sorted: Vec<&ConfigMap> = configmaps.iter().collect();
    sorted.sort_by_key(|cm| cm.name_any());

    let mut files: BTreeMap<String, (SourceFile, String)> = BTreeMap::new();
    for cm in sorted {
        for (key, text) in cm.data.iter().flatten() {
            if !is_policy_name(key) {
                continue;
            }
            match files.get_mut(key) {
                Some((file, first)) => {
                    let reason = format!(
                        "{key} is in both ConfigMap {first} and ConfigMap {}; a policy file name must be unique",
                        cm.name_any()
                    );
                    file.unusable.get_or_insert(reason);
                }
                None => {
                    let file = SourceFile::new(key.clone(), text.as_str());
                    files.insert(key.clone(), (file, cm.name_any()));
                }
            }
        }
    }
    files.into_values().collect()
}

/// Starts the watch; returns once the first full list has been applied.
pub async fn start(
    client: Client,
    namespace: String,
    names: Vec<String>,
    selector: Option<String>,
    reloader: Reloader,
) -> anyhow::Result<()> {
    let mut config = watcher::Config::default();
    if let Some(selector) = &selector {
        config = config.labels(selector);
    }
    if let [name] = names.as_slice() {
        config = config.fields(&format!("metadata.name={name}"));
    }

    let (store, writer) = reflector::store::<ConfigMap>();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let stream = watcher(api, config).default_backoff().reflect(writer);
    let reporter = Reporter {
        controller: "internal-services".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let mut watch = PolicyWatch {
        store: store.clone(),
        names,
        reloader,
        recorder: Recorder::new(client, reporter),
        reported: HashSet::new(),
    };

    let (first, first_done) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut first = Some(first);
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
                Ok(_) => {
                    watch.rebuild().await;
                    if let Some(first) = first.take() {
                        let _ = first.send(());
                    }
                }
                Err(err) => tracing::warn!(error = %err, "policy ConfigMap watch failed; retrying"),
            }
        }
    });
    first_done
        .await
        .map_err(|_| anyhow::anyhow!("policy ConfigMap watch stopped before its first list"))?;
    Ok(())
}

struct PolicyWatch {
    store: Store<ConfigMap>,
    names: Vec<String>,
    reloader: Reloader,
    recorder: Recorder,
    /// `(file, text)` pairs already reported as broken.
    reported: HashSet<(String, Arc<str>)>,
}

impl PolicyWatch {
    async fn rebuild(&mut self) {
        let configmaps: Vec<ConfigMap> = self
            .store
            .state()
            .into_iter()
            .filter(|cm| self.names.is_empty() || self.names.contains(&cm.name_any()))
            .map(|cm| (*cm).clone())
            .collect();
        let missing: Vec<&String> = self
            .names
            .iter()
            .filter(|name| !configmaps.iter().any(|cm| cm.name_any() == **name))
            .collect();
        if !missing.is_empty() {
            tracing::warn!(configmaps = ?missing, "policy ConfigMaps not found in the controller's namespace");
        }
        let files = files_from_configmaps(&configmaps);
        let owners: BTreeMap<String, String> = files
            .iter()
            .map(|(f, cm)| (f.name.clone(), cm.clone()))
            .collect();
        let texts: BTreeMap<String, Arc<str>> = files
            .iter()
            .map(|(f, _)| (f.name.clone(), f.text.clone()))
            .collect();

        let build = self
            .reloader
            .apply(files.into_iter().map(|(f, _)| f).collect());
        self.report(&build, &configmaps, &owners, &texts).await;
    }

    async fn report(
        &mut self,
        build: &Build,
        configmaps: &[ConfigMap],
        owners: &BTreeMap<String, String>,
        texts: &BTreeMap<String, Arc<str>>,
    ) {
        let key = |file: &str| {
            (
                file.to_owned(),
                texts.get(file).cloned().unwrap_or_default(),
            )
        };
        let current: HashSet<_> = build.errors.iter().map(|e| key(&e.file)).collect();
        self.reported.retain(|k| current.contains(k));

        for error in &build.errors {
            if !self.reported.insert(key(&error.file)) {
                continue;
            }
            let Some(cm) = owners
                .get(&error.file)
                .and_then(|o| configmaps.iter().find(|c| &c.name_any() == o))
            else {
                continue;
            };
            let effect = match build.kept.contains(&error.file) {
                true => "the previous version stays in effect",
                false => "it denies every request until fixed",
            };
            let event = Event {
                type_: EventType::Warning,
                reason: "PolicyCompileFailed".into(),
                note: Some(truncate(format!("{error}; {effect}"), 1000)),
                action: "ReloadPolicies".into(),
                secondary: None,
            };
            if let Err(err) = self.recorder.publish(&event, &cm.object_ref(&())).await {
                tracing::warn!(error = %err, configmap = %cm.name_any(), "cannot publish policy Event");
            }
        }
    }
}

fn truncate(text: String, max: usize) -> String {
    crate::status::truncate(text, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::InternalRequest;
    use crate::api::InternalServicesConfigSpec;
    use crate::policy::{Capture, LivePolicies};

    fn configmap(name: &str, files: &[(&str, &str)]) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.to_owned());
        cm.data = Some(
            files
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        cm
    }

    const ALLOW: &str = "fn admit(request, config) { allow() }";
    const DENY: &str = r#"fn admit(request, config) { deny("no") }"#;

    fn denied(live: &LivePolicies) -> bool {
        let mut request = InternalRequest::new("r", Default::default());
        request.metadata.namespace = Some("team".into());
        let report = live.current().admit(
            &Arc::new(request),
            &InternalServicesConfigSpec::default(),
            Capture::default(),
        );
        report.decision.message().is_some()
    }

    #[test]
    fn a_file_name_in_two_configmaps_cannot_replace_the_rule() {
        let live = LivePolicies::default();
        let ours = configmap("internal-services-policies", &[("20-rule.rhai", DENY)]);
        let files = |cms: &[ConfigMap]| {
            files_from_configmaps(cms)
                .into_iter()
                .map(|(f, _)| f)
                .collect()
        };
        live.apply(files(std::slice::from_ref(&ours)));
        assert!(denied(&live));

        let sneaky = configmap("aaa", &[("20-rule.rhai", ALLOW)]);
        let build = live.apply(files(&[ours, sneaky]));
        assert_eq!(build.errors.len(), 1);
        assert!(
            build.errors[0]
                .message
                .contains("in both ConfigMap aaa and ConfigMap internal-services-policies")
        );
        assert_eq!(build.kept, vec!["20-rule.rhai".to_owned()]);
        assert!(denied(&live), "the colliding file must not take effect");
    }

    #[test]
    fn a_colliding_file_that_never_compiled_denies() {
        let live = LivePolicies::default();
        let a = configmap("a", &[("10-x.rhai", ALLOW)]);
        let b = configmap("b", &[("10-x.rhai", ALLOW)]);
        let files = files_from_configmaps(&[a, b])
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        live.apply(files);
        assert!(denied(&live));
    }
}
