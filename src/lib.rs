//! internal-services: serve InternalRequests made on a remote cluster by
//! running Tekton Pipelines on a private one, under Rhai admission policies.
//!
//! The pure parts (admission, run building, relay, status) hold no
//! Kubernetes I/O and are tested without a cluster; `controller` wires them
//! to the two API servers.
#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod cli;
pub mod clusters;
pub mod commands;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod leader;
pub mod metrics;
pub mod policy;
pub mod policy_watch;
pub mod relay;
pub mod run;
pub mod selector;
pub mod shutdown;
pub mod status;
pub mod telemetry;
