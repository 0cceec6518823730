//! What a config reload may change, and what the server says about the config it runs.
//!
//! - [`StartSettings`]: listeners, logging and hub settings are read once at start. With
//!   `--base-config` they come from that file (in Kubernetes, the chart's ConfigMap that comes
//!   with the pod), so a pod's listeners always match its probes and Service ports, whatever
//!   the generated `--config` says at that moment.
//! - [`revision_ready`]: a generated config names the revision its secret files belong to; it
//!   applies only once those files have arrived.
//! - [`ConfigStatus`]: the revision and hash in service, and a newer config on disk that is
//!   waiting or refused (with why), served on the admin port at `/config-status` and as
//!   metrics, so no pod stays on a stale config without saying so.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::Config;

/// The settings a reload never changes, pinned from the base config given at start.
#[derive(Debug, Clone)]
pub struct StartSettings(Config);

impl StartSettings {
    pub fn new(base: Config) -> StartSettings {
        StartSettings(base)
    }

    /// `config` with the start-only settings (bind address, log, RTMP, HTTP and admin
    /// listeners, hub, TLS ports) replaced by the base config's.
    pub fn apply(&self, mut config: Config) -> Config {
        let base = &self.0;
        config.bind = base.bind;
        config.log = base.log.clone();
        config.rtmp = base.rtmp.clone();
        config.http = base.http.clone();
        config.admin = base.admin.clone();
        config.hub = base.hub.clone();
        config.tls.rtmps_port = base.tls.rtmps_port;
        config.tls.https_port = base.tls.https_port;
        config
    }
}

/// `Ok` when the secret files of `config`'s revision are in place (or it names no revision
/// file); otherwise why the config has to wait.
pub fn revision_ready(config: &Config) -> Result<(), String> {
    let (Some(id), Some(file)) = (&config.revision.id, &config.revision.file) else {
        return Ok(());
    };
    let on_disk = std::fs::read_to_string(file).map_err(|e| {
        format!(
            "waiting for the secret files of revision {id}: cannot read {}: {e}",
            file.display()
        )
    })?;
    let on_disk = on_disk.trim();
    if on_disk == id {
        Ok(())
    } else {
        Err(format!(
            "waiting for the secret files of revision {id}: {} holds revision {}",
            file.display(),
            shorten(on_disk)
        ))
    }
}

/// A revision read from a file is echoed only if it looks like one (it is not secret, but a
/// wrong file could hold anything).
fn shorten(s: &str) -> String {
    if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
        s.to_string()
    } else {
        "(unreadable)".into()
    }
}

/// Hex SHA-256 (first 16 bytes) of the effective config, as the server prints it.
pub fn config_hash(config: &Config) -> String {
    let digest = Sha256::digest(config.to_yaml().as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The config in service and any newer one that is not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigStatus {
    /// `revision.id` of the config in service (empty when it has none).
    pub revision: String,
    /// [`config_hash`] of the config in service.
    pub hash: String,
    /// A config on disk that is not in service: waiting for its files, or refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    /// The TLS listeners listening now (`rtmps`, `https`): a config with certificates opens
    /// them shortly after it applies, and a port that cannot be bound leaves them closed.
    pub tls_listening: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pending {
    /// Its `revision.id` (empty when it has none or did not parse).
    pub revision: String,
    /// Why it is not in service; retried whenever any file it names changes.
    pub reason: String,
}

impl ConfigStatus {
    pub fn running(config: &Config) -> ConfigStatus {
        ConfigStatus {
            revision: config.revision.id.clone().unwrap_or_default(),
            hash: config_hash(config),
            pending: None,
            tls_listening: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, "test").unwrap()
    }

    #[test]
    fn start_settings_pin_listeners_and_keep_everything_else() {
        let start = StartSettings::new(config(
            "rtmp: {port: 11935}\nhttp: {port: 18000}\nadmin: {port: 19090}\ntls: {rtmps_port: 11936, https_port: 18443}\nhub: {play_wait_secs: 7}\n",
        ));
        let generated = config(
            "rtmp: {port: 1935}\nadmin: {port: 9090}\napps: [{name: studio}]\nrevision: {id: r2}\nwebhooks: {timeout_ms: 900}\n",
        );
        let c = start.apply(generated);
        assert_eq!((c.rtmp.port, c.http.port, c.admin.port), (11935, 18000, 19090));
        assert_eq!(
            (c.tls.rtmps_port, c.tls.https_port, c.hub.play_wait_secs),
            (11936, 18443, 7)
        );
        assert_eq!(c.apps[0].name, "studio", "apps come from the generated config");
        assert_eq!(c.revision.id.as_deref(), Some("r2"));
        assert_eq!(
            c.webhooks.timeout_ms, 900,
            "reloadable settings come from the generated config"
        );
    }

    #[test]
    fn a_config_waits_until_its_revision_file_matches() {
        let dir = std::env::temp_dir().join(format!("ferrocast-revision-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("revision");
        let c = config(&format!("revision: {{id: r2, file: {}}}\n", file.display()));
        assert!(revision_ready(&c).unwrap_err().contains("cannot read"), "no file yet");
        std::fs::write(&file, "r1\n").unwrap();
        let err = revision_ready(&c).unwrap_err();
        assert!(err.contains("holds revision r1"), "{err}");
        std::fs::write(&file, "r2\n").unwrap();
        assert_eq!(revision_ready(&c), Ok(()));
        std::fs::write(&file, "not a revision: k-SECRET\n").unwrap();
        assert!(
            !revision_ready(&c).unwrap_err().contains("SECRET"),
            "odd content is not echoed"
        );
        assert_eq!(
            revision_ready(&config("revision: {id: r9}\n")),
            Ok(()),
            "no file: nothing to wait for"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_hash_follows_the_config() {
        let a = config("apps: [{name: a}]\n");
        assert_eq!(config_hash(&a), config_hash(&a.clone()));
        assert_ne!(config_hash(&a), config_hash(&config("apps: [{name: b}]\n")));
        assert_eq!(config_hash(&a).len(), 32);
    }
}
