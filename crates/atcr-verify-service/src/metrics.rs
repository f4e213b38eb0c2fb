//! Prometheus metrics of the service.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The service's metrics, in their own registry.
pub struct Metrics {
    registry: Registry,
    /// Decisions by endpoint, result (`allow`, `deny`, `error`) and reason.
    pub decisions: IntCounterVec,
    /// Time of one image's verification (seconds).
    pub latency: Histogram,
    /// Verifications running now.
    pub inflight: IntGauge,
    /// Verdict cache lookups by outcome (`hit`, `miss`), cumulative.
    pub cache: IntGaugeVec,
    /// Policy reloads by outcome.
    pub policy_reloads: IntCounterVec,
    /// 1 while the policy file in force is the one on disk.
    pub policy_ok: IntGauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new(
                "atcr_verify_decisions_total",
                "Decisions by endpoint, result and reason",
            ),
            &["endpoint", "result", "reason"],
        )
        .expect("static metric");
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "atcr_verify_verification_seconds",
                "Time to verify one image",
            )
            .buckets(vec![
                0.000_01, 0.000_1, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("static metric");
        let inflight = IntGauge::new("atcr_verify_inflight", "Verifications running now")
            .expect("static metric");
        let cache = IntGaugeVec::new(
            Opts::new(
                "atcr_verify_cache_lookups",
                "Verdict cache lookups by outcome (cumulative)",
            ),
            &["outcome"],
        )
        .expect("static metric");
        let policy_reloads = IntCounterVec::new(
            Opts::new(
                "atcr_verify_policy_reloads_total",
                "Policy file reloads by outcome",
            ),
            &["outcome"],
        )
        .expect("static metric");
        let policy_ok = IntGauge::new(
            "atcr_verify_policy_ok",
            "1 when the policy in force is the file on disk, 0 when a newer file was refused",
        )
        .expect("static metric");
        for c in [
            Box::new(decisions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(inflight.clone()),
            Box::new(cache.clone()),
            Box::new(policy_reloads.clone()),
            Box::new(policy_ok.clone()),
        ] {
            registry.register(c).expect("distinct metric names");
        }
        Self {
            registry,
            decisions,
            latency,
            inflight,
            cache,
            policy_reloads,
            policy_ok,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = vec![];
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
