//! Prometheus metrics: every metric name the server exports is defined here, once.
//!
//! Session metrics are updated as sessions change; per-stream series are refreshed from the
//! hub at each scrape, so the series of a stream that ended disappear with it. Streams that
//! were never published (players waiting on a name) have none.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::hub::Hub;
use crate::session::{Protocol, Role};

pub const STREAMS_ACTIVE: &str = "ferrocast_streams_active";
pub const SESSIONS_ACTIVE: &str = "ferrocast_sessions_active";
pub const SESSIONS_TOTAL: &str = "ferrocast_sessions_total";
pub const STREAM_BYTES_IN: &str = "ferrocast_stream_bytes_in_total";
pub const STREAM_BYTES_OUT: &str = "ferrocast_stream_bytes_out_total";
pub const STREAM_PUBLISH_BITRATE: &str = "ferrocast_stream_publish_bitrate_bits_per_second";
pub const STREAM_PLAYERS: &str = "ferrocast_stream_players";
pub const STREAM_FRAMES_DROPPED: &str = "ferrocast_stream_frames_dropped_total";
pub const STREAM_GOP_CACHE_BYTES: &str = "ferrocast_stream_gop_cache_bytes";
pub const STREAM_RING_BYTES: &str = "ferrocast_stream_ring_bytes";
pub const AUTH_FAILURES: &str = "ferrocast_auth_failures_total";
pub const WEBHOOK_CALLS: &str = "ferrocast_webhook_calls_total";
pub const WEBHOOK_DROPPED: &str = "ferrocast_webhook_deliveries_dropped_total";
pub const RELAY_COUNT: &str = "ferrocast_relay_count";
pub const RELAY_RECONNECTS: &str = "ferrocast_relay_reconnects_total";
pub const RELAY_BYTES_IN: &str = "ferrocast_relay_bytes_in_total";
pub const RELAY_BYTES_OUT: &str = "ferrocast_relay_bytes_out_total";
pub const RELAY_LOOPS_REFUSED: &str = "ferrocast_relay_loops_refused_total";
/// 1, labelled with the `revision` and `hash` of the config in service.
pub const CONFIG_INFO: &str = "ferrocast_config_info";
/// 1 while a newer config on disk is not in service (waiting for its files, or refused).
pub const CONFIG_PENDING: &str = "ferrocast_config_pending";
/// 1 while the TLS listener (`listener`: rtmps, https) listens, 0 while it does not.
pub const TLS_LISTENING: &str = "ferrocast_tls_listening";
/// Config reloads by result (`applied`, `refused`).
pub const CONFIG_RELOADS: &str = "ferrocast_config_reloads_total";
pub const HLS_REQUESTS: &str = "ferrocast_hls_requests_total";
pub const HLS_BYTES: &str = "ferrocast_hls_bytes_total";
pub const HLS_SEGMENTS: &str = "ferrocast_hls_segments_total";
pub const STREAM_HLS_BYTES: &str = "ferrocast_stream_hls_bytes";
pub const STREAM_HLS_VIEWERS: &str = "ferrocast_stream_hls_viewers";
pub const RECORDINGS_ACTIVE: &str = "ferrocast_recordings_active";
pub const RECORD_BYTES: &str = "ferrocast_record_bytes_written_total";
pub const RECORD_FILES: &str = "ferrocast_record_files_total";
pub const RECORD_FAILURES: &str = "ferrocast_record_failures_total";
pub const RECORD_UPLOADS: &str = "ferrocast_record_uploads_total";
pub const RECORD_UPLOAD_BYTES: &str = "ferrocast_record_upload_bytes_total";
pub const RECORD_UPLOADS_PENDING: &str = "ferrocast_record_uploads_pending";
pub const TRANSCODES_RUNNING: &str = "ferrocast_transcodes_running";
pub const TRANSCODE_RESTARTS: &str = "ferrocast_transcode_restarts_total";
pub const TRANSCODES_REFUSED: &str = "ferrocast_transcodes_refused_total";
pub const TRANSCODE_FAILURES: &str = "ferrocast_transcode_failures_total";
pub const TRANSCODE_CPU_SECONDS: &str = "ferrocast_transcode_cpu_seconds_total";
pub const TRANSCODE_FFMPEG_SPEED: &str = "ferrocast_transcode_ffmpeg_speed_ratio";
pub const TRANSCODE_FPS: &str = "ferrocast_transcode_fps";
pub const TRANSCODE_SPEED: &str = "ferrocast_transcode_speed_ratio";

pub struct Metrics {
    registry: Registry,
    /// Held by a scrape from refreshing the per-stream series until they are encoded:
    /// concurrent scrapes (an HA Prometheus pair) would otherwise see each other's reset
    /// counters half re-added, and counters would jump backwards.
    scrape: std::sync::Mutex<()>,
    streams_active: IntGaugeVec,
    sessions_active: IntGaugeVec,
    sessions_total: IntCounterVec,
    stream_bytes_in: IntCounterVec,
    stream_bytes_out: IntCounterVec,
    stream_bitrate: IntGaugeVec,
    stream_players: IntGaugeVec,
    stream_dropped: IntCounterVec,
    stream_gop_bytes: IntGaugeVec,
    stream_ring_bytes: IntGaugeVec,
    pub auth_failures: IntCounterVec,
    pub webhook_calls: IntCounterVec,
    pub webhook_dropped: IntCounter,
    /// Relays by mode (pull, push) and state; kept in step by the relay module.
    pub relay_count: IntGaugeVec,
    pub relay_reconnects: IntCounterVec,
    pub relay_bytes_in: IntCounterVec,
    pub relay_bytes_out: IntCounterVec,
    /// Relay connections refused here because their hop path showed a loop.
    pub relay_loops_refused: IntCounter,
    config_info: IntGaugeVec,
    config_pending: prometheus::IntGauge,
    config_reloads: IntCounterVec,
    tls_listening: IntGaugeVec,
    /// HLS and DASH requests answered, by app and kind (playlist, mpd, init, segment, part, ts).
    pub hls_requests: IntCounterVec,
    /// HLS and DASH response bytes, by app.
    pub hls_bytes: IntCounterVec,
    /// Segments the HLS segmenters completed, by app.
    pub hls_segments: IntCounterVec,
    /// Bytes a stream's HLS segmenter holds (set by the segmenters, removed when they stop).
    pub stream_hls_bytes: IntGaugeVec,
    /// Distinct HLS/DASH sessions that requested something of the stream lately.
    pub stream_hls_viewers: IntGaugeVec,
    /// Recordings being written, by app.
    pub recordings_active: IntGaugeVec,
    /// Bytes written to recording files, by app.
    pub record_bytes: IntCounterVec,
    /// Recording files closed, by app and format.
    pub record_files: IntCounterVec,
    /// Recording failures by app and reason (`io`, `behind`, `codec`, `finalize`).
    pub record_failures: IntCounterVec,
    /// Upload attempts by app and result (`ok`, `retry`, `failed`).
    pub record_uploads: IntCounterVec,
    pub record_upload_bytes: IntCounterVec,
    /// Finished files waiting for their upload.
    pub record_uploads_pending: prometheus::IntGauge,
    /// ffmpeg processes running now, by app.
    pub transcodes_running: IntGaugeVec,
    /// ffmpeg restarts after it died, stalled or fell behind, by app.
    pub transcode_restarts: IntCounterVec,
    /// Sources not transcoded because `transcoding.max_processes` were running, by app.
    pub transcodes_refused: IntCounterVec,
    /// Transcodes given up after ffmpeg failed quickly again and again, by app.
    pub transcode_failures: IntCounterVec,
    /// CPU seconds (user + system) of a source's ffmpeg processes, by app and stream.
    pub transcode_cpu_seconds: prometheus::CounterVec,
    /// ffmpeg's own `speed` (media time per wall time, every output), by app and stream.
    pub transcode_ffmpeg_speed: prometheus::GaugeVec,
    /// Frames per second a rendition comes out at, by app, stream and rendition.
    pub transcode_fps: prometheus::GaugeVec,
    /// Media time a rendition advances per wall time (below 1: the encoder falls behind).
    pub transcode_speed: prometheus::GaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

/// Registers a float metric vector built by `make`.
fn float_vec<T>(
    r: &Registry,
    make: impl FnOnce(Opts) -> prometheus::Result<(T, Box<dyn prometheus::core::Collector>)>,
    name: &str,
    help: &str,
) -> T {
    let (v, c) = make(Opts::new(name, help)).expect("valid metric");
    r.register(c).expect("unique metric");
    v
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let _ = r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        }
        let webhook_dropped = IntCounter::new(
            WEBHOOK_DROPPED,
            "Webhook deliveries dropped because the queue was full or retries ran out",
        )
        .expect("valid metric");
        r.register(Box::new(webhook_dropped.clone())).expect("unique metric");
        Metrics {
            streams_active: gauge(&r, STREAMS_ACTIVE, "Streams with a live publisher", &["app"]),
            sessions_active: gauge(
                &r,
                SESSIONS_ACTIVE,
                "Publishing and playing sessions",
                &["app", "protocol", "role"],
            ),
            sessions_total: counter(
                &r,
                SESSIONS_TOTAL,
                "Publish and play sessions started",
                &["app", "protocol", "role"],
            ),
            stream_bytes_in: counter(
                &r,
                STREAM_BYTES_IN,
                "Media bytes received from the stream's publishers",
                &["app", "stream"],
            ),
            stream_bytes_out: counter(
                &r,
                STREAM_BYTES_OUT,
                "Media bytes sent to the stream's players",
                &["app", "stream"],
            ),
            stream_bitrate: gauge(
                &r,
                STREAM_PUBLISH_BITRATE,
                "Ingest bitrate of the stream over the last seconds",
                &["app", "stream"],
            ),
            stream_players: gauge(&r, STREAM_PLAYERS, "Players attached to the stream", &["app", "stream"]),
            stream_dropped: counter(
                &r,
                STREAM_FRAMES_DROPPED,
                "Frames skipped by players that fell behind",
                &["app", "stream"],
            ),
            stream_gop_bytes: gauge(
                &r,
                STREAM_GOP_CACHE_BYTES,
                "Bytes held in the stream's GOP cache",
                &["app", "stream"],
            ),
            stream_ring_bytes: gauge(
                &r,
                STREAM_RING_BYTES,
                "Bytes held in the stream's reader ring (frames and their encodings; many shared with the GOP cache)",
                &["app", "stream"],
            ),
            auth_failures: counter(
                &r,
                AUTH_FAILURES,
                "Publish and play requests refused",
                &["app", "reason"],
            ),
            webhook_calls: counter(
                &r,
                WEBHOOK_CALLS,
                "Webhook deliveries by event and result",
                &["event", "result"],
            ),
            webhook_dropped,
            scrape: std::sync::Mutex::new(()),
            relay_count: gauge(&r, RELAY_COUNT, "Relays by mode and state", &["mode", "state"]),
            relay_reconnects: counter(
                &r,
                RELAY_RECONNECTS,
                "Relay reconnect attempts after a failure",
                &["mode"],
            ),
            relay_bytes_in: counter(
                &r,
                RELAY_BYTES_IN,
                "Bytes relays received from sources and targets",
                &["mode"],
            ),
            relay_bytes_out: counter(
                &r,
                RELAY_BYTES_OUT,
                "Bytes relays sent to targets and sources",
                &["mode"],
            ),
            relay_loops_refused: {
                let c = IntCounter::new(RELAY_LOOPS_REFUSED, "Relay connections refused because they would loop")
                    .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            config_info: gauge(
                &r,
                CONFIG_INFO,
                "The config in service: 1, labelled with its revision and hash",
                &["revision", "hash"],
            ),
            config_pending: {
                let g = prometheus::IntGauge::new(
                    CONFIG_PENDING,
                    "1 while a newer config on disk is not in service (see /config-status)",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            config_reloads: counter(&r, CONFIG_RELOADS, "Config reloads by result", &["result"]),
            tls_listening: gauge(
                &r,
                TLS_LISTENING,
                "1 while the TLS listener (rtmps, https) listens",
                &["listener"],
            ),
            hls_requests: counter(
                &r,
                HLS_REQUESTS,
                "HLS and DASH requests answered, by kind",
                &["app", "kind"],
            ),
            hls_bytes: counter(&r, HLS_BYTES, "HLS and DASH response bytes", &["app"]),
            hls_segments: counter(&r, HLS_SEGMENTS, "HLS segments completed by the segmenters", &["app"]),
            stream_hls_bytes: gauge(
                &r,
                STREAM_HLS_BYTES,
                "Bytes held by the stream's HLS segmenter (segments, parts, init segments)",
                &["app", "stream"],
            ),
            stream_hls_viewers: gauge(
                &r,
                STREAM_HLS_VIEWERS,
                "HLS and DASH sessions that requested the stream in the last 30 seconds",
                &["app", "stream"],
            ),
            recordings_active: gauge(&r, RECORDINGS_ACTIVE, "Recordings being written", &["app"]),
            record_bytes: counter(&r, RECORD_BYTES, "Bytes written to recording files", &["app"]),
            record_files: counter(&r, RECORD_FILES, "Recording files closed", &["app", "format"]),
            record_failures: counter(
                &r,
                RECORD_FAILURES,
                "Recording failures: io (disk full, unwritable path), behind (cut for falling behind), codec, finalize",
                &["app", "reason"],
            ),
            record_uploads: counter(
                &r,
                RECORD_UPLOADS,
                "Recording upload attempts by result (ok, retry)",
                &["app", "result"],
            ),
            record_upload_bytes: counter(&r, RECORD_UPLOAD_BYTES, "Bytes of recordings uploaded", &["app"]),
            record_uploads_pending: {
                let g =
                    prometheus::IntGauge::new(RECORD_UPLOADS_PENDING, "Finished recordings waiting for their upload")
                        .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            transcodes_running: gauge(&r, TRANSCODES_RUNNING, "ffmpeg transcode processes running", &["app"]),
            transcode_restarts: counter(
                &r,
                TRANSCODE_RESTARTS,
                "ffmpeg restarts after it died, stalled or fell behind",
                &["app"],
            ),
            transcodes_refused: counter(
                &r,
                TRANSCODES_REFUSED,
                "Sources not transcoded because transcoding.max_processes were running",
                &["app"],
            ),
            transcode_failures: counter(
                &r,
                TRANSCODE_FAILURES,
                "Transcodes given up (until the source is published anew) after ffmpeg failed quickly, without output, several times in a row",
                &["app"],
            ),
            transcode_cpu_seconds: float_vec(
                &r,
                |o| prometheus::CounterVec::new(o, &["app", "stream"]).map(|c| (c.clone(), Box::new(c) as _)),
                TRANSCODE_CPU_SECONDS,
                "CPU seconds used by the source's ffmpeg processes",
            ),
            transcode_ffmpeg_speed: float_vec(
                &r,
                |o| prometheus::GaugeVec::new(o, &["app", "stream"]).map(|c| (c.clone(), Box::new(c) as _)),
                TRANSCODE_FFMPEG_SPEED,
                "ffmpeg's speed: media time encoded per wall time",
            ),
            transcode_fps: float_vec(
                &r,
                |o| {
                    prometheus::GaugeVec::new(o, &["app", "stream", "rendition"]).map(|c| (c.clone(), Box::new(c) as _))
                },
                TRANSCODE_FPS,
                "Frames per second a rendition comes out at",
            ),
            transcode_speed: float_vec(
                &r,
                |o| {
                    prometheus::GaugeVec::new(o, &["app", "stream", "rendition"]).map(|c| (c.clone(), Box::new(c) as _))
                },
                TRANSCODE_SPEED,
                "Media time a rendition advances per wall time",
            ),
            registry: r,
        }
    }

    /// Publishes the config status: the one series of the config in service, and whether a
    /// newer one waits.
    pub fn config_status(&self, status: &crate::reload::ConfigStatus) {
        self.config_info.reset();
        self.config_info
            .with_label_values(&[&status.revision, &status.hash])
            .set(1);
        self.config_pending.set(i64::from(status.pending.is_some()));
    }

    /// Publishes whether the RTMPS and HTTPS listeners listen (they open and close together).
    pub fn tls_listening(&self, listening: bool) {
        for listener in ["rtmps", "https"] {
            self.tls_listening
                .with_label_values(&[listener])
                .set(i64::from(listening));
        }
    }

    /// Counts a reload that applied (`true`) or was refused.
    pub fn config_reload(&self, applied: bool) {
        self.config_reloads
            .with_label_values(&[if applied { "applied" } else { "refused" }])
            .inc();
    }

    pub fn session_started(&self, app: &str, protocol: Protocol, role: Role) {
        let labels = [app, protocol.as_str(), role.as_str()];
        self.sessions_active.with_label_values(&labels).inc();
        self.sessions_total.with_label_values(&labels).inc();
    }

    pub fn session_ended(&self, app: &str, protocol: Protocol, role: Role) {
        self.sessions_active
            .with_label_values(&[app, protocol.as_str(), role.as_str()])
            .dec();
    }

    /// Refreshes the per-stream series from the hub and renders the text exposition format.
    pub fn render(&self, hub: &Hub) -> String {
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());

        for v in [
            &self.stream_bitrate,
            &self.stream_players,
            &self.stream_gop_bytes,
            &self.stream_ring_bytes,
            &self.streams_active,
        ] {
            v.reset();
        }
        for v in [&self.stream_bytes_in, &self.stream_bytes_out, &self.stream_dropped] {
            v.reset();
        }
        for app in hub.apps().iter() {
            self.streams_active.with_label_values(&[&app.name]).set(0);
        }
        for s in hub.streams() {
            let info = s.info();
            // A stream only players wait on has no series: anyone can name one.
            if info.publisher.is_none() && s.stats.frames_in.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                continue;
            }
            let labels = [s.key.app.as_str(), s.key.name.as_str()];
            if info.publisher.is_some() {
                self.streams_active.with_label_values(&[&s.key.app]).inc();
            }
            use std::sync::atomic::Ordering::Relaxed;
            self.stream_bytes_in
                .with_label_values(&labels)
                .inc_by(s.stats.bytes_in.load(Relaxed));
            self.stream_bytes_out
                .with_label_values(&labels)
                .inc_by(s.stats.bytes_out.load(Relaxed));
            self.stream_dropped
                .with_label_values(&labels)
                .inc_by(s.stats.frames_dropped.load(Relaxed));
            self.stream_players
                .with_label_values(&labels)
                .set(s.stats.readers.load(Relaxed) as i64);
            self.stream_bitrate
                .with_label_values(&labels)
                .set((info.bitrate_kbps * 1000) as i64);
            self.stream_gop_bytes
                .with_label_values(&labels)
                .set(s.gop_bytes() as i64);
            self.stream_ring_bytes
                .with_label_values(&labels)
                .set(s.ring_bytes() as i64);
        }
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// Two scrapes at once must each see every stream's counter exactly as the hub has it:
    /// not missing (reset by the other scrape) nor doubled (re-added by both).
    #[test]
    fn concurrent_scrapes_see_each_counter_once() {
        let hub = Hub::new(crate::hub::HubSettings::from_config(&crate::config::Config::default()));
        let mut publishers = Vec::new();
        for i in 0..50 {
            let key = crate::hub::StreamKey::new("live", &format!("s{i}")).unwrap();
            let info = crate::hub::PublisherInfo {
                session_id: i,
                protocol: "rtmp",
                remote: "127.0.0.1:1".into(),
                started: std::time::SystemTime::now(),
            };
            publishers.push(hub.publish(&key, info).unwrap());
            hub.stream(&key).unwrap().stats.bytes_in.store(1000, Ordering::Relaxed);
        }
        let metrics = Metrics::new();
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    for _ in 0..300 {
                        let text = metrics.render(&hub);
                        let values: Vec<&str> = text
                            .lines()
                            .filter(|l| l.starts_with(STREAM_BYTES_IN))
                            .filter_map(|l| l.rsplit_once(' ').map(|(_, v)| v))
                            .collect();
                        assert_eq!(values.len(), 50, "series missing");
                        assert!(values.iter().all(|v| *v == "1000"), "{values:?}");
                    }
                });
            }
        });
    }
}
