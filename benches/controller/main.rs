//! The controller's speed and footprint against the API servers' own
//! ceiling, measured in one run on a real control plane:
//!
//!     cargo bench --bench controller
//!
//! It starts etcd and both API servers with audit logs, runs the release
//! binary as a separate process exactly as deployed (signed in as its own
//! user, so the audit log tells its requests from the load's), plays
//! Tekton, and prints one table. Throughput is also given as a share of
//! the ceiling measured minutes before on the same machine, so a slow or
//! busy machine moves both alike.

#[path = "../../tests/support/mod.rs"]
mod support;

mod audit;
mod phases;
mod procfs;
mod requests;
mod table;
mod tekton;

use std::time::Instant;

use phases::Bench;
use support::ControlPlane;
use table::Table;

fn main() {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let table = runtime.block_on(async {
        let plane = ControlPlane::start_audited().await;
        let mut bench = Bench::prepare(&plane).await;
        let mut table = Table::default();

        bench.idle_memory(&mut table);
        bench.policy_cost(&mut table);
        bench.ceiling(&mut table).await;
        bench.burst(&mut table).await;
        bench.latency(&mut table).await;
        bench.reload(&mut table).await;
        bench.footprint(&mut table).await;
        table
    });
    table.print();
    println!(
        "\nwhole benchmark: {:.0} s on {} cores",
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}
