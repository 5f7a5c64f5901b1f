//! Tekton, played for the benchmark: every PipelineRun the controller
//! creates is seen through a watch, timed, and (when asked) finished with a
//! `Succeeded` status exactly as Tekton writes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use internal_services::api::PipelineRun;
use internal_services::api::tekton::annotations;
use internal_services::relay::{self, RunState};

use crate::support::tekton;

/// When each run was seen, keyed by its request (`namespace/name`).
#[derive(Default)]
pub struct Runs {
    pub created: HashMap<String, Instant>,
    /// When Tekton's finishing status patch returned.
    pub finished: HashMap<String, Instant>,
    /// Runs that exist now, by name.
    pub live: HashMap<String, String>,
}

/// The played Tekton: a watch on the runs and what it saw.
pub struct Player {
    pub runs: Arc<Mutex<Runs>>,
    /// Finish each new run this long after it appears; `None` leaves it.
    auto_finish: Arc<Mutex<Option<Duration>>>,
    api: Api<PipelineRun>,
    stopped: Arc<AtomicBool>,
}

impl Player {
    pub fn start(api: Api<PipelineRun>) -> Self {
        let player = Self {
            runs: Arc::default(),
            auto_finish: Arc::default(),
            api,
            stopped: Arc::default(),
        };
        tokio::spawn(watch(
            player.api.clone(),
            player.runs.clone(),
            player.auto_finish.clone(),
            player.stopped.clone(),
        ));
        player
    }

    pub fn auto_finish(&self, after: Option<Duration>) {
        *self.auto_finish.lock().unwrap() = after;
    }

    /// Finishes every live, unfinished run, `concurrency` at a time.
    pub async fn finish_all(&self, concurrency: usize) {
        let names: Vec<(String, String)> = {
            let runs = self.runs.lock().unwrap();
            runs.live
                .iter()
                .filter(|(_, key)| !runs.finished.contains_key(*key))
                .map(|(name, key)| (name.clone(), key.clone()))
                .collect()
        };
        futures::stream::iter(names)
            .for_each_concurrent(concurrency, |(name, key)| {
                let (api, runs) = (self.api.clone(), self.runs.clone());
                async move { finish(&api, &runs, &name, &key).await }
            })
            .await;
    }

    pub fn live(&self) -> usize {
        self.runs.lock().unwrap().live.len()
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

async fn finish(api: &Api<PipelineRun>, runs: &Mutex<Runs>, name: &str, key: &str) {
    tekton::finish_run(api, name, true, "done", json!({ "echo": key })).await;
    runs.lock()
        .unwrap()
        .finished
        .insert(key.to_owned(), Instant::now());
}

async fn watch(
    api: Api<PipelineRun>,
    runs: Arc<Mutex<Runs>>,
    auto_finish: Arc<Mutex<Option<Duration>>>,
    stopped: Arc<AtomicBool>,
) {
    let stream = watcher::watcher(api.clone(), watcher::Config::default());
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        if stopped.load(Ordering::Relaxed) {
            return;
        }
        match event {
            Ok(Event::Apply(run) | Event::InitApply(run)) => {
                let Some(key) = run.annotations().get(annotations::REQUEST).cloned() else {
                    continue;
                };
                let first = {
                    let mut seen = runs.lock().unwrap();
                    seen.live.insert(run.name_any(), key.clone());
                    let first = !seen.created.contains_key(&key);
                    seen.created.entry(key.clone()).or_insert_with(Instant::now);
                    first
                };
                let delay = *auto_finish.lock().unwrap();
                if let (true, Some(delay), RunState::Running) = (first, delay, relay::state(&run)) {
                    let (api, runs) = (api.clone(), runs.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        finish(&api, &runs, &run.name_any(), &key).await;
                    });
                }
            }
            Ok(Event::Delete(run)) => {
                runs.lock().unwrap().live.remove(&run.name_any());
            }
            Ok(_) => {}
            Err(err) => eprintln!("tekton stand-in: watch interrupted: {err}"),
        }
    }
}
