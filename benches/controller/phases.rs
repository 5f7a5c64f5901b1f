//! The benchmark's phases, in the order they run: policy cost in process,
//! then on the control plane the raw write ceiling, a burst of requests,
//! latency at a steady rate, policy reload latency, and the footprint with
//! ten thousand completed requests tracked.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use internal_services::api::{InternalRequest, PipelineRun};
use internal_services::cli::{BenchArgs, PolicyFiles};
use internal_services::commands::bench as policy_bench;
use internal_services::policy::{self, PolicySet, SourceFile};

use crate::audit::{Counts, Mark};
use crate::procfs;
use crate::requests::{self, Outcomes, PIPELINE};
use crate::support::ControlPlane;
use crate::support::control_plane::{CONTROLLER_USER, repo_root};
use crate::support::controller::{ControllerOptions, ControllerProcess};
use crate::support::fixtures::Case;
use crate::table::{Table, ms, percentiles};
use crate::tekton::Player;

const BINARY: &str = env!("CARGO_BIN_EXE_internal-services");
const BURST: usize = 1_000;
const BURST_NAMESPACES: usize = 20;
const LATENCY_SAMPLES: usize = 500;
const LATENCY_RATE: f64 = 25.0;
/// Completed requests tracked when the footprint is taken
/// (`BENCH_TRACKED` overrides it for quicker experiments).
fn tracked() -> usize {
    std::env::var("BENCH_TRACKED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}
const RELOADS: usize = 20;
const POLICY_CONFIGMAP: &str = "bench-policies";
const CONCURRENCY: usize = 64;
const PATIENCE: Duration = Duration::from_secs(300);

pub struct Bench<'a> {
    plane: &'a ControlPlane,
    case: Case,
    teams: Vec<String>,
    controller: Option<ControllerProcess>,
    player: Player,
    outcomes: Outcomes,
    internal_kubeconfig: PathBuf,
    remote_kubeconfig: PathBuf,
    writes_per_request: f64,
    ceiling: f64,
    next: usize,
}

impl<'a> Bench<'a> {
    /// The controller's namespace, 20 remote namespaces, the config, the
    /// Pipeline, the policy ConfigMap, and the controller itself.
    pub async fn prepare(plane: &'a ControlPlane) -> Bench<'a> {
        let case = Case::new(plane, "bench").await;
        let mut teams = Vec::new();
        for i in 0..BURST_NAMESPACES {
            teams.push(case.remote_namespace(&format!("team-{i:02}")).await);
        }
        let allowed: Vec<&str> = teams.iter().map(String::as_str).collect();
        case.create_config(&allowed, false).await;
        case.create_pipeline(PIPELINE).await;
        apply_policies(&case, &shipped_policies()).await;

        let token = plane.controller_token();
        let internal_kubeconfig =
            plane.kubeconfig_with_token(&plane.internal, "bench-internal.kubeconfig", &token);
        let remote_kubeconfig =
            plane.kubeconfig_with_token(&plane.remote, "bench-remote.kubeconfig", &token);
        let player = Player::start(case.runs());
        let outcomes = Outcomes::watch(case.remote.clone(), &case.id);
        let mut bench = Bench {
            plane,
            case,
            teams,
            controller: None,
            player,
            outcomes,
            internal_kubeconfig,
            remote_kubeconfig,
            writes_per_request: 0.0,
            ceiling: 0.0,
            next: 0,
        };
        bench.start_controller().await;
        bench
    }

    /// Resident memory of the controller before any request.
    pub fn idle_memory(&self, table: &mut Table) {
        let (_, now) = procfs::memory(self.controller.as_ref().unwrap().pid());
        table.row(
            "footprint",
            "controller RSS at start, no request yet",
            mib(now),
            "-",
        );
    }

    /// Starts the release binary as deployed; returns the time to ready.
    async fn start_controller(&mut self) -> Duration {
        let mut options = ControllerOptions::new(Path::new(BINARY), &self.case.namespace);
        options.request_selector = Some(self.case.selector());
        options.identity = "bench-controller".to_owned();
        options.internal_kubeconfig = Some(self.internal_kubeconfig.clone());
        options.remotes = vec![("remote".to_owned(), self.remote_kubeconfig.clone())];
        options.log_filter = Some("info".to_owned());
        options.extra_args = vec!["--policy-configmap".into(), POLICY_CONFIGMAP.into()];
        // Flags to try, such as `--concurrency 32`; the figures are for none.
        if let Ok(extra) = std::env::var("BENCH_CONTROLLER_ARGS") {
            options
                .extra_args
                .extend(extra.split_whitespace().map(str::to_owned));
        }

        let started = Instant::now();
        let controller = ControllerProcess::start(self.plane, options);
        loop {
            if controller.get("/readyz").await.0 == 200 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "controller not ready"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ready = started.elapsed();
        self.controller = Some(controller);
        ready
    }

    /// Decisions per second and latency of the shipped policy set, in
    /// this process, on one thread.
    pub fn policy_cost(&self, table: &mut Table) {
        let root = repo_root();
        let examples = root.join("examples/requests");
        let run = |requests: Vec<PathBuf>| {
            let args = BenchArgs {
                files: PolicyFiles {
                    policies: root.join("policies"),
                    configmap: None,
                },
                config: root.join("examples/config.yaml"),
                iterations: 200_000,
                requests,
            };
            policy_bench::run(&args, &mut Vec::new()).expect("policy bench")
        };
        let mixed = run(["admitted", "bad-digest", "not-allowed"]
            .iter()
            .map(|n| examples.join(format!("{n}.yaml")))
            .collect());
        let admitted = run(vec![examples.join("admitted.yaml")]);
        let figure = |f: &policy_bench::Figures| {
            format!(
                "{:.0}/s, p50 {:.1} µs, p99 {:.1} µs",
                f.per_second,
                f.p50.as_secs_f64() * 1e6,
                f.p99.as_secs_f64() * 1e6
            )
        };
        let target = "≥ 100k/s per core, p99 ≤ 20 µs";
        table.row(
            "policy",
            "shipped set, the 3 examples in turn",
            figure(&mixed),
            target,
        );
        table.row(
            "policy",
            "shipped set, admitted request (every rule runs)",
            figure(&admitted),
            target,
        );
    }

    /// The API servers' own write rate for the kinds of writes a request's
    /// lifecycle makes: patch a request, patch its status, create a run,
    /// delete it.
    ///
    /// Three rounds; the median is the ceiling, so that one round disturbed
    /// by the machine does not set it.
    pub async fn ceiling(&mut self, table: &mut Table) {
        let scratch = self.case.remote_namespace("scratch").await;
        let items = 1_000;
        let names: Vec<(String, String)> = (0..items)
            .map(|i| (scratch.clone(), format!("raw-{i}")))
            .collect();
        requests::create_all(&self.case.remote, "not-served", names, CONCURRENCY).await;

        let mut rounds = Vec::new();
        for round in 0..3 {
            let started = Instant::now();
            futures::stream::iter(0..items)
                .for_each_concurrent(CONCURRENCY, |i| {
                    let (remote, internal) = (self.case.requests(&scratch), self.case.runs());
                    let namespace = self.case.namespace.clone();
                    let name = format!("raw-{i}");
                    async move { raw_lifecycle(&remote, &internal, &namespace, &name, round).await }
                })
                .await;
            rounds.push((items * 4) as f64 / started.elapsed().as_secs_f64());
        }
        rounds.sort_by(f64::total_cmp);
        self.ceiling = rounds[1];
        table.row(
            "ceiling",
            "raw writes by a plain client (request patch, status patch, run create, run delete), median of 3",
            format!(
                "{:.0} writes/s (rounds {:.0}, {:.0}, {:.0})",
                self.ceiling, rounds[0], rounds[1], rounds[2]
            ),
            "-",
        );
    }

    /// A burst of requests from 20 namespaces: until every one has a run,
    /// then, once Tekton finished them all, until every request is
    /// terminal and every run deleted.
    pub async fn burst(&mut self, table: &mut Table) {
        self.player.auto_finish(None);
        let mark = Mark::now(&self.plane.dir);
        let names = self.names(BURST);
        let keys: Vec<String> = names.iter().map(|(ns, n)| format!("{ns}/{n}")).collect();

        let started = Instant::now();
        requests::create_all(&self.case.remote, &self.case.id, names, CONCURRENCY).await;
        let created = started.elapsed();
        wait_until("every burst request has a run", || self.has_runs(&keys)).await;
        let to_runs = started.elapsed();

        let finishing = Instant::now();
        self.player.finish_all(CONCURRENCY).await;
        wait_until("every burst request is terminal and its run gone", || {
            self.all_terminal(&keys) && self.player.live() == 0
        })
        .await;
        let to_done = finishing.elapsed();

        let counts = settled_counts(&mark).await;
        self.report_burst(table, created, to_runs, to_done, &counts);
    }

    fn report_burst(
        &mut self,
        table: &mut Table,
        created: Duration,
        to_runs: Duration,
        to_done: Duration,
        counts: &Counts,
    ) {
        let lifecycle: u64 = counts
            .writes
            .iter()
            .filter(|(resource, _)| {
                resource.starts_with("internalrequests") || resource.starts_with("pipelineruns")
            })
            .map(|(_, n)| n)
            .sum();
        self.writes_per_request = lifecycle as f64 / BURST as f64;
        let events = counts.writes.get("events").copied().unwrap_or(0) as f64 / BURST as f64;
        let rate = BURST as f64 / (to_runs + to_done).as_secs_f64();
        let possible = self.ceiling / (self.writes_per_request + events);

        table.row(
            "writes",
            "per request lifecycle, on the request and its run (audit log)",
            format!("{:.2}", self.writes_per_request),
            "≤ 6",
        );
        table.row(
            "writes",
            "per request lifecycle, Events on the request (audit log, once the queue is out)",
            format!("{events:.2}"),
            "-",
        );
        println!("  writes by resource over the burst: {:?}", counts.writes);
        table.row(
            "reads",
            "outside watches, whole burst (audit log)",
            format!("{} {:?}", counts.total_reads(), counts.reads),
            "0",
        );
        table.row(
            "burst",
            &format!("{BURST} requests created by the load (20 namespaces)"),
            format!("{:.1} s", created.as_secs_f64()),
            "-",
        );
        table.row(
            "burst",
            "until every request has a PipelineRun",
            format!(
                "{:.1} s ({:.0} runs/s)",
                to_runs.as_secs_f64(),
                BURST as f64 / to_runs.as_secs_f64()
            ),
            "-",
        );
        table.row(
            "burst",
            "after Tekton finished them: until all terminal, runs deleted",
            format!("{:.1} s", to_done.as_secs_f64()),
            "-",
        );
        table.row(
            "burst",
            "throughput, whole lifecycle",
            format!("{rate:.0} requests/s"),
            "-",
        );
        table.row(
            "burst",
            "share of the ceiling (ceiling ÷ writes per request)",
            format!("{:.2} of {possible:.0} requests/s", rate / possible),
            "≥ 0.9",
        );
        // The remote pipeline's create and Tekton's status write go to the
        // same servers: with them, what the ceiling allows at most.
        let with_load = self.ceiling / (self.writes_per_request + events + 2.0);
        table.row(
            "burst",
            "share of the ceiling, counting the load's own 2 writes per request",
            format!("{:.2} of {with_load:.0} requests/s", rate / with_load),
            "-",
        );
    }

    /// Single requests at a steady rate: created → run created, and run
    /// done → request status final.
    pub async fn latency(&mut self, table: &mut Table) {
        self.player.auto_finish(Some(Duration::from_millis(20)));
        let names = self.names(LATENCY_SAMPLES);
        let interval = Duration::from_secs_f64(1.0 / LATENCY_RATE);
        let mut created = HashMap::new();
        let mut ticks = tokio::time::interval(interval);
        for (namespace, name) in names {
            ticks.tick().await;
            let at =
                requests::create_all(&self.case.remote, &self.case.id, vec![(namespace, name)], 1)
                    .await;
            created.extend(at);
        }
        let keys: Vec<String> = created.keys().cloned().collect();
        wait_until("every latency request is terminal", || {
            self.all_terminal(&keys)
        })
        .await;

        let runs = self.player.runs.lock().unwrap();
        let mut to_run: Vec<Duration> = keys.iter().map(|k| runs.created[k] - created[k]).collect();
        let mut to_status: Vec<Duration> = keys
            .iter()
            .map(|k| {
                self.outcomes
                    .terminal_at(k)
                    .unwrap()
                    .saturating_duration_since(runs.finished[k])
            })
            .collect();
        drop(runs);
        let (a50, a95, a99) = percentiles(&mut to_run);
        let (b50, b95, b99) = percentiles(&mut to_status);
        let label = format!("{LATENCY_SAMPLES} requests at {LATENCY_RATE:.0}/s");
        table.row(
            "latency",
            &format!("created → PipelineRun created, {label}"),
            format!("p50 {} p95 {} p99 {}", ms(a50), ms(a95), ms(a99)),
            "p50 ≤ 20 ms, p99 ≤ 100 ms",
        );
        table.row(
            "latency",
            &format!("PipelineRun done → request final, {label}"),
            format!("p50 {} p95 {} p99 {}", ms(b50), ms(b95), ms(b99)),
            "p50 ≤ 20 ms",
        );
    }

    /// From a policy ConfigMap update to the first request decided by the
    /// new set.
    pub async fn reload(&mut self, table: &mut Table) {
        let mut samples = Vec::new();
        for round in 0..RELOADS {
            let mut files = shipped_policies();
            files.push(SourceFile::new(
                "99-bench.rhai",
                format!("// round {round}\nfn admit(request, config) {{ allow() }}\n"),
            ));
            let expected = PolicySet::build(files.clone(), None).set.hash().to_owned();
            apply_policies(&self.case, &files).await;
            let updated = Instant::now();
            loop {
                let (namespace, name) = self.names(1).remove(0);
                requests::create_all(
                    &self.case.remote,
                    &self.case.id,
                    vec![(namespace.clone(), name.clone())],
                    1,
                )
                .await;
                let key = format!("{namespace}/{name}");
                let hash = wait_for(|| self.outcomes.policy_set_of(&key)).await;
                if hash == expected {
                    samples.push(updated.elapsed());
                    break;
                }
            }
        }
        let (p50, _, p99) = percentiles(&mut samples);
        table.row(
            "policy",
            &format!("reload: ConfigMap update → first new decision, {RELOADS} rounds"),
            format!("p50 {} p99 {}", ms(p50), ms(p99)),
            "p99 ≤ 1 s",
        );
    }

    /// Memory and CPU with ten thousand completed requests tracked, and the
    /// time a restarted controller takes to be ready with all of them.
    pub async fn footprint(&mut self, table: &mut Table) {
        self.player.auto_finish(Some(Duration::from_millis(20)));
        while self.next < tracked() {
            let count = (tracked() - self.next).min(2_000);
            let names = self.names(count);
            let keys: Vec<String> = names.iter().map(|(ns, n)| format!("{ns}/{n}")).collect();
            requests::create_all(&self.case.remote, &self.case.id, names, CONCURRENCY).await;
            wait_until("every request so far is terminal", || {
                self.all_terminal(&keys)
            })
            .await;
        }
        wait_until("every run deleted", || self.player.live() == 0).await;

        let pid = self.controller.as_ref().unwrap().pid();
        let (peak, now) = procfs::memory(pid);
        let cpu = procfs::cpu_seconds(pid);
        let handled = self.outcomes.terminal_count();
        table.row(
            "footprint",
            &format!("controller peak RSS over the whole run ({handled} requests handled)"),
            mib(peak),
            "≤ 48 MiB",
        );
        table.row(
            "footprint",
            &format!("controller RSS now, {handled} completed requests tracked"),
            mib(now),
            "≤ 48 MiB",
        );
        table.row(
            "footprint",
            "controller CPU over the whole run",
            format!(
                "{cpu:.1} s ({:.2} ms per request)",
                cpu * 1000.0 / handled as f64
            ),
            "-",
        );

        self.controller.as_mut().unwrap().terminate();
        let ready = self.start_controller().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let pid = self.controller.as_ref().unwrap().pid();
        let (peak, now) = procfs::memory(pid);
        table.row(
            "footprint",
            &format!("restart: start → /readyz 200, {handled} requests present"),
            ms(ready),
            "-",
        );
        table.row(
            "footprint",
            "restart: peak RSS after listing them all",
            format!("{} (now {})", mib(peak), mib(now)),
            "≤ 48 MiB",
        );
    }

    /// The next `count` request names, spread over the namespaces.
    fn names(&mut self, count: usize) -> Vec<(String, String)> {
        let names = (self.next..self.next + count)
            .map(|i| {
                (
                    self.teams[i % self.teams.len()].clone(),
                    format!("r-{i:05}"),
                )
            })
            .collect();
        self.next += count;
        names
    }

    fn has_runs(&self, keys: &[String]) -> bool {
        let runs = self.player.runs.lock().unwrap();
        keys.iter().all(|k| runs.created.contains_key(k))
    }

    fn all_terminal(&self, keys: &[String]) -> bool {
        keys.iter().all(|k| self.outcomes.terminal_at(k).is_some())
    }
}

/// One lifecycle's worth of writes, by a plain client.
async fn raw_lifecycle(
    remote: &Api<InternalRequest>,
    internal: &Api<PipelineRun>,
    namespace: &str,
    name: &str,
    round: usize,
) {
    let params = PatchParams::default();
    let label = json!({ "metadata": { "labels": { "raw": round.to_string() } } });
    remote
        .patch(name, &params, &Patch::Merge(&label))
        .await
        .expect("patch request");
    let status = json!({ "status": { "pipelineRun": format!("x/{name}-{round}") } });
    remote
        .patch_status(name, &params, &Patch::Merge(&status))
        .await
        .expect("patch status");

    let mut run: PipelineRun = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": { "pipelineRef": { "name": PIPELINE } },
    }))
    .expect("a PipelineRun");
    run.metadata.namespace = Some(namespace.to_owned());
    internal
        .create(&PostParams::default(), &run)
        .await
        .expect("create run");
    internal
        .delete(name, &DeleteParams::background())
        .await
        .expect("delete run");
}

/// The controller's requests since `mark`, once its queued Events are out:
/// they trail the statuses in a burst, and belong to it.
async fn settled_counts(mark: &Mark) -> Counts {
    let mut last = mark.count_since(CONTROLLER_USER);
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = mark.count_since(CONTROLLER_USER);
        if now.writes.get("events") == last.writes.get("events") {
            return now;
        }
        last = now;
    }
    last
}

fn shipped_policies() -> Vec<SourceFile> {
    policy::read_dir(&repo_root().join("policies")).expect("read policies/")
}

async fn apply_policies(case: &Case, files: &[SourceFile]) {
    let data: BTreeMap<String, String> = files
        .iter()
        .map(|f| (f.name.clone(), f.text.to_string()))
        .collect();
    let configmap = ConfigMap {
        metadata: ObjectMeta {
            name: Some(POLICY_CONFIGMAP.to_owned()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    let api: Api<ConfigMap> = Api::namespaced(case.internal.clone(), &case.namespace);
    let params = PatchParams::apply("internal-services-bench").force();
    api.patch(POLICY_CONFIGMAP, &params, &Patch::Apply(&configmap))
        .await
        .expect("apply policies");
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < PATIENCE,
            "not done after {PATIENCE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn wait_for<T>(mut found: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = found() {
            return value;
        }
        assert!(started.elapsed() < PATIENCE, "a request was never decided");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
