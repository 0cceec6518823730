//! Ferrocast operator: turns `MediaApp` and `StreamAuth` custom resources into what the
//! stateless server fleet reads (one ConfigMap with the server config, one Secret with the
//! secret files it names), a Service per MediaApp, statuses, events and metrics.
//!
//! - [`crd`]: the custom resource types, printer columns and CEL rules.
//! - [`render`]: the pure reconcile, inputs to desired objects.
//! - [`scope`]: the namespaces served, and one watch over several namespaces.
//! - [`status`]: a MediaApp's status from the render, its Service and live counts.
//! - [`tls`]: self-signed certificates (rcgen) and certificate/key checks.
//! - [`validate`]: checks a manifest against the generated CRD schema and CEL rules.
//! - [`controller`]: watches, server-side apply, status patches, events, error policy.
//! - [`fleet`]: live stream and session counts read from the server pods.
//! - [`leader`]: leader election with a coordination.k8s.io Lease.
//! - [`manifests`]: multi-document YAML into resources, as the apiserver stores them.
//! - [`metrics`]: every metric the operator exports.
//! - [`cli`]: flags and environment variables.
//! - [`admin`]: the `/metrics`, `/healthz`, `/readyz` listener.

pub mod admin;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod fleet;
pub mod leader;
pub mod manifests;
pub mod metrics;
pub mod render;
pub mod scope;
pub mod status;
pub mod tls;
pub mod validate;

/// Errors at the operator's boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Render(#[from] render::RenderError),
    #[error("certificate for MediaApp {media_app}: {message}")]
    Certificate { media_app: String, message: String },
    #[error("lost the leader Lease")]
    LostLease,
}

impl Error {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeError",
            Error::Render(_) => "RenderError",
            Error::Certificate { .. } => "CertificateError",
            Error::LostLease => "LostLease",
        }
    }
}
