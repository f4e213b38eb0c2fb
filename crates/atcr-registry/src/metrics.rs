//! The registry's own metrics (exposed by `atcr serve` at `/metrics`).

use prometheus::core::Collector;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge};

/// Push-path metrics.
#[derive(Clone)]
pub struct RegistryMetrics {
    /// Manifest pushes per group commit.
    pub batch_pushes: Histogram,
    /// Time of one group commit (journal, PDS commit, artifacts, index).
    pub batch_seconds: Histogram,
    /// Time of the PDS commit inside a group commit.
    pub pds_commit_seconds: Histogram,
    /// Group commits whose signature artifacts could not be made.
    pub artifact_failures: IntCounter,
    /// Upload requests streaming right now.
    pub uploads_in_progress: IntGauge,
    /// Failed `/auth/token` logins.
    pub login_failures: IntCounter,
    /// Garbage-collection runs completed.
    pub gc_runs: IntCounter,
    /// Blobs garbage collection deleted.
    pub gc_blobs: IntCounter,
    /// Bytes garbage collection reclaimed.
    pub gc_bytes: IntCounter,
    /// Duration of garbage-collection runs.
    pub gc_seconds: Histogram,
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric")
}

impl RegistryMetrics {
    /// Creates the metrics (unregistered).
    ///
    /// # Panics
    /// Never: names and buckets are constant and valid.
    pub fn new() -> Self {
        let secs = vec![
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ];
        Self {
            batch_pushes: histogram(
                "atcr_manifest_batch_pushes",
                "Manifest pushes written per group commit",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            ),
            batch_seconds: histogram(
                "atcr_manifest_batch_seconds",
                "Time of one group commit of manifest pushes",
                secs.clone(),
            ),
            pds_commit_seconds: histogram(
                "atcr_pds_commit_seconds",
                "Time of the owner's PDS commit for a group of pushes",
                secs,
            ),
            artifact_failures: IntCounter::new(
                "atcr_signature_artifact_failures_total",
                "Group commits whose signature artifacts could not be made",
            )
            .expect("valid metric"),
            uploads_in_progress: IntGauge::new(
                "atcr_uploads_in_progress",
                "Blob upload requests streaming now",
            )
            .expect("valid metric"),
            login_failures: IntCounter::new(
                "atcr_login_failures_total",
                "Failed logins at /auth/token",
            )
            .expect("valid metric"),
            gc_runs: IntCounter::new("atcr_gc_runs_total", "Garbage-collection runs completed")
                .expect("valid metric"),
            gc_blobs: IntCounter::new(
                "atcr_gc_blobs_reclaimed_total",
                "Blobs deleted by garbage collection",
            )
            .expect("valid metric"),
            gc_bytes: IntCounter::new(
                "atcr_gc_bytes_reclaimed_total",
                "Bytes reclaimed by garbage collection",
            )
            .expect("valid metric"),
            gc_seconds: histogram(
                "atcr_gc_seconds",
                "Duration of garbage-collection runs",
                vec![0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0],
            ),
        }
    }

    /// Every collector, for registration.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.batch_pushes.clone()),
            Box::new(self.batch_seconds.clone()),
            Box::new(self.pds_commit_seconds.clone()),
            Box::new(self.artifact_failures.clone()),
            Box::new(self.uploads_in_progress.clone()),
            Box::new(self.login_failures.clone()),
            Box::new(self.gc_runs.clone()),
            Box::new(self.gc_blobs.clone()),
            Box::new(self.gc_bytes.clone()),
            Box::new(self.gc_seconds.clone()),
        ]
    }
}

impl Default for RegistryMetrics {
    fn default() -> Self {
        Self::new()
    }
}
