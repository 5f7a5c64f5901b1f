//! Test and demo support: a real control plane, the controller as a
//! process, fixtures, and a stand-in for Tekton.
//!
//! Shared by the integration tests and the local demo; every helper is not
//! used by every one of them.
#![allow(dead_code)]

pub mod control_plane;
pub mod controller;
pub mod fixtures;
pub mod tekton;

pub use control_plane::ControlPlane;
