//! Prometheus metrics of the operator: every metric name it exports is defined here, once.
//! The chart's dashboard and alerts use these names.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub const RECONCILIATIONS: &str = "ferrocast_operator_reconciliations_total";
pub const RECONCILE_ERRORS: &str = "ferrocast_operator_reconcile_errors_total";
pub const RECONCILE_DURATION: &str = "ferrocast_operator_reconcile_duration_seconds";
pub const MANAGED_OBJECTS: &str = "ferrocast_operator_managed_objects";
pub const MEDIAAPP_READY: &str = "ferrocast_operator_mediaapp_ready";
pub const MEDIAAPP_LIVE_STREAMS: &str = "ferrocast_operator_mediaapp_live_streams";
pub const MEDIAAPP_SESSIONS: &str = "ferrocast_operator_mediaapp_sessions";
pub const LEADER: &str = "ferrocast_operator_leader";
pub const CERTIFICATE_EXPIRY: &str = "ferrocast_operator_certificate_expiry_timestamp_seconds";
pub const SERVES_UNLABELLED: &str = "ferrocast_operator_serves_unlabelled";

/// Every metric family name, including labelled ones that have no series yet (those do not
/// appear in a registry's `gather()`).
pub const NAMES: &[&str] = &[
    RECONCILIATIONS,
    RECONCILE_ERRORS,
    RECONCILE_DURATION,
    MANAGED_OBJECTS,
    MEDIAAPP_READY,
    MEDIAAPP_LIVE_STREAMS,
    MEDIAAPP_SESSIONS,
    LEADER,
    CERTIFICATE_EXPIRY,
    SERVES_UNLABELLED,
];

/// The operator's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// {kind: MediaApp|StreamAuth, result: success|error}
    pub reconciliations: IntCounterVec,
    /// {kind, reason}: the not-ready reason or error kind.
    pub reconcile_errors: IntCounterVec,
    /// {kind}
    pub reconcile_duration: HistogramVec,
    /// {kind: ConfigMap|Secret|Service}
    pub managed_objects: IntGaugeVec,
    /// {mediaapp}
    pub mediaapp_ready: IntGaugeVec,
    /// {mediaapp}
    pub mediaapp_live_streams: IntGaugeVec,
    /// {mediaapp, role: publisher|player}
    pub mediaapp_sessions: IntGaugeVec,
    pub leader: IntGauge,
    /// {mediaapp}: notAfter of the certificate the fleet serves for it.
    pub certificate_expiry: IntGaugeVec,
    /// 1 while this fleet serves resources without a fleet label; 0 when it is not configured
    /// to, or an older fleet of the namespace does.
    pub serves_unlabelled: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn register<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let duration = HistogramVec::new(
            HistogramOpts::new(RECONCILE_DURATION, "Time one reconcile took")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["kind"],
        )
        .expect("valid metric");
        Metrics {
            reconciliations: counter(
                RECONCILIATIONS,
                "Reconciles run, by kind and result",
                &["kind", "result"],
            ),
            reconcile_errors: counter(
                RECONCILE_ERRORS,
                "Reconciles that failed or found the object not ready, by reason",
                &["kind", "reason"],
            ),
            reconcile_duration: register(&r, duration),
            managed_objects: gauge(MANAGED_OBJECTS, "Objects the operator manages, by kind", &["kind"]),
            mediaapp_ready: gauge(MEDIAAPP_READY, "1 when the MediaApp is Ready", &["mediaapp"]),
            mediaapp_live_streams: gauge(
                MEDIAAPP_LIVE_STREAMS,
                "Streams with a live publisher across the fleet",
                &["mediaapp"],
            ),
            mediaapp_sessions: gauge(
                MEDIAAPP_SESSIONS,
                "Sessions across the fleet, by role",
                &["mediaapp", "role"],
            ),
            certificate_expiry: gauge(
                CERTIFICATE_EXPIRY,
                "When the TLS certificate served for the MediaApp expires, Unix seconds",
                &["mediaapp"],
            ),
            leader: register(
                &r,
                IntGauge::new(LEADER, "1 while this replica holds the leader Lease").expect("valid metric"),
            ),
            serves_unlabelled: register(
                &r,
                IntGauge::new(
                    SERVES_UNLABELLED,
                    "1 while this fleet serves MediaApps and StreamAuths without a fleet label",
                )
                .expect("valid metric"),
            ),
            registry: r,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Starts timing a reconcile of `kind`; the time is recorded when the guard drops.
    pub fn time(&self, kind: &str) -> Histogram {
        self.reconcile_duration.with_label_values(&[kind])
    }

    /// Counts a finished reconcile; `not_ready` is the reason an object was left not ready.
    pub fn reconciled(&self, kind: &str, not_ready: Option<&str>) {
        self.reconciliations.with_label_values(&[kind, "success"]).inc();
        if let Some(reason) = not_ready {
            self.reconcile_errors.with_label_values(&[kind, reason]).inc();
        }
    }

    /// Counts a reconcile that failed with an error of `reason`.
    pub fn failed(&self, kind: &str, reason: &str) {
        self.reconciliations.with_label_values(&[kind, "error"]).inc();
        self.reconcile_errors.with_label_values(&[kind, reason]).inc();
    }

    /// Forgets the series of a MediaApp that no longer exists.
    pub fn forget_mediaapp(&self, name: &str) {
        let _ = self.mediaapp_ready.remove_label_values(&[name]);
        let _ = self.mediaapp_live_streams.remove_label_values(&[name]);
        let _ = self.certificate_expiry.remove_label_values(&[name]);
        for role in ["publisher", "player"] {
            let _ = self.mediaapp_sessions.remove_label_values(&[name, role]);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_list_every_family_and_labelled_series_appear_once_used() {
        let m = Metrics::new();
        m.reconciled("MediaApp", Some("ServicePending"));
        m.failed("StreamAuth", "Kube");
        m.reconcile_duration.with_label_values(&["MediaApp"]).observe(0.01);
        m.managed_objects.with_label_values(&["ConfigMap"]).set(1);
        m.mediaapp_ready.with_label_values(&["live"]).set(1);
        m.mediaapp_live_streams.with_label_values(&["live"]).set(2);
        m.mediaapp_sessions.with_label_values(&["live", "player"]).set(3);
        m.leader.set(1);
        m.certificate_expiry.with_label_values(&["live"]).set(1_800_000_000);
        let mut gathered: Vec<String> = m.registry().gather().iter().map(|f| f.name().to_string()).collect();
        gathered.sort();
        let mut names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
        names.sort();
        assert_eq!(gathered, names);
        let text = m.render();
        assert!(
            text.contains(r#"ferrocast_operator_reconcile_errors_total{kind="MediaApp",reason="ServicePending"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ferrocast_operator_reconciliations_total{kind="StreamAuth",result="error"} 1"#),
            "{text}"
        );
        m.forget_mediaapp("live");
        assert!(!m.render().contains(r#"mediaapp="live""#));
    }
}
