//! `policy bench`: how fast a policy set decides, on one core.
//!
//! Times single decisions through the same path the controller takes
//! (core checks, then every policy) and prints decisions per second and
//! latency percentiles.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::admission::{self, Facts};
use crate::cli::BenchArgs;
use crate::policy::Capture;

/// Figures of one run.
#[derive(Debug)]
pub struct Figures {
    pub decisions: usize,
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

pub fn run(args: &BenchArgs, out: &mut impl Write) -> anyhow::Result<Figures> {
    let policies = super::load_policies(&args.files)?;
    let config = super::read_config(&args.config)?;
    let requests = super::read_requests(&args.requests)?;
    anyhow::ensure!(args.iterations > 0, "--iterations must be positive");

    let facts = Facts {
        namespace: "internal-services",
        config: Some(&config.spec),
        pipeline_exists: Some(true),
    };
    let decide = |i: usize| {
        admission::decide(
            &requests[i % requests.len()],
            facts,
            &policies,
            Capture::default(),
        )
    };

    for (i, request) in requests.iter().enumerate() {
        let failures = decide(i).report.map(|r| r.failures).unwrap_or_default();
        anyhow::ensure!(
            failures.is_empty(),
            "request {} makes the policies fail ({}); fix them before measuring their speed",
            crate::run::request_key(request),
            failures
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for i in 0..args.iterations.min(10_000) {
        std::hint::black_box(decide(i));
    }

    let mut latencies = Vec::with_capacity(args.iterations);
    let started = Instant::now();
    for i in 0..args.iterations {
        let one = Instant::now();
        std::hint::black_box(decide(i));
        latencies.push(one.elapsed());
    }
    let total = started.elapsed();

    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let figures = Figures {
        decisions: args.iterations,
        per_second: args.iterations as f64 / total.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
    };
    writeln!(
        out,
        "policy set {} ({} files), {} requests in turn, one thread",
        policies.hash(),
        policies.files().len(),
        requests.len()
    )?;
    writeln!(
        out,
        "{} decisions in {:.2}s: {:.0} decisions/s, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        figures.decisions,
        total.as_secs_f64(),
        figures.per_second,
        micros(figures.p50),
        micros(figures.p99),
        micros(figures.max)
    )?;
    Ok(figures)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
