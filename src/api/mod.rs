//! The custom resources this controller reads and writes.
//!
//! `InternalRequest` lives on the remote cluster and is the only object a
//! remote pipeline touches; `InternalServicesConfig` lives beside the
//! controller and says who may ask for what. Tekton's `Pipeline` and
//! `PipelineRun` are described only as far as this controller uses them, so
//! a newer Tekton does not break deserialisation.

pub mod config;
pub mod request;
pub mod tekton;

pub use config::{InternalServicesConfig, InternalServicesConfigSpec, VolumeClaim};
pub use request::{
    AdmissionRecord, InternalRequest, InternalRequestSpec, InternalRequestStatus, PipelineSource,
    ResolverParam, ResolverRef, Timeouts, reasons,
};
pub use tekton::{Pipeline, PipelineRun};

/// The API group shared by both of our kinds.
pub const GROUP: &str = "appstudio.redhat.com";

/// Name every `InternalServicesConfig` must have to be honoured.
pub const CONFIG_NAME: &str = "config";
