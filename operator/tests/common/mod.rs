//! Builders shared by the operator's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferrocast_operator::crd::{MediaApp, StreamAuth};
use ferrocast_operator::manifests::Manifests;
use ferrocast_operator::render::{Fleet, Inputs};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;

pub const NS: &str = "streaming";
/// The revision salt the fleet Secret holds in the tests.
pub const REVISION_SALT: &str = "fixed-revision-salt-for-tests";
/// 2027-01-15T08:00:00Z
pub const NOW: i64 = 1_800_000_000;

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// A namespace the fleet of [`fleet_watching`] serves besides its own.
pub const TEAM: &str = "team-a";

/// The fleet of [`fleet`], also serving the MediaApps and StreamAuths of `namespaces`.
pub fn fleet_watching(namespaces: &[&str]) -> Fleet {
    Fleet {
        watch_namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
        ..fleet()
    }
}

pub fn fleet() -> Fleet {
    Fleet {
        name: "ferrocast".into(),
        serves_unlabelled: true,
        unlabelled_elsewhere: Default::default(),
        lease: "ferrocast-operator".into(),
        namespace: NS.into(),
        watch_namespaces: Vec::new(),
        config_map: "ferrocast-server-config".into(),
        secret: "ferrocast-server-secrets".into(),
        selector: ferrocast_operator::cli::parse_selector(ferrocast_operator::cli::DEFAULT_SELECTOR).unwrap(),
        base: ferrocast_server::config::Config::default(),
        secrets_dir: "/etc/ferrocast/secrets".into(),
    }
}

/// Stamps what the apiserver sets on create: namespace, uid, generation, creation time
/// (`age` seconds before the test's now, so older objects sort first).
fn stamp(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, age: i64) {
    let name = meta.name.clone().unwrap_or_default();
    meta.namespace.get_or_insert_with(|| NS.into());
    meta.uid.get_or_insert_with(|| format!("uid-{name}"));
    meta.generation.get_or_insert(1);
    meta.creation_timestamp
        .get_or_insert_with(|| Time(k8s_openapi::jiff::Timestamp::from_second(NOW - age).unwrap()));
}

/// A MediaApp from YAML (`metadata` and `spec` only is enough).
pub fn media_app(yaml: &str, age: i64) -> MediaApp {
    let mut m: MediaApp = serde_yaml::from_str(&format!("apiVersion: ferrocast.io/v1alpha1\nkind: MediaApp\n{yaml}"))
        .expect("MediaApp YAML");
    stamp(&mut m.metadata, age);
    m
}

pub fn stream_auth(yaml: &str) -> StreamAuth {
    let mut s: StreamAuth =
        serde_yaml::from_str(&format!("apiVersion: ferrocast.io/v1alpha1\nkind: StreamAuth\n{yaml}"))
            .expect("StreamAuth YAML");
    stamp(&mut s.metadata, 1000);
    s
}

pub fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    let mut s = Secret {
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    s.metadata.name = Some(name.into());
    stamp(&mut s.metadata, 1000);
    s
}

/// A Secret of namespace `ns`.
pub fn secret_in(ns: &str, name: &str, data: &[(&str, &str)]) -> Secret {
    let mut s = secret(name, data);
    s.metadata.namespace = Some(ns.into());
    s
}

/// Inputs as the controller gathers them: Secrets keyed as the render looks them up (their
/// name in the fleet namespace, `<namespace>/<name>` elsewhere).
pub fn inputs(media_apps: Vec<MediaApp>, stream_auths: Vec<StreamAuth>, secrets: Vec<Secret>) -> Inputs {
    let fleet = fleet();
    Inputs {
        media_apps,
        stream_auths,
        secrets: secrets
            .into_iter()
            .map(|s| (fleet.key_of(&s.metadata), s))
            .collect::<BTreeMap<_, _>>(),
        api_token_key: Some("fixed-api-token-key-for-tests".into()),
        revision_salt: Some(REVISION_SALT.into()),
        cluster_secret: Some("fixed-cluster-secret-for-tests".into()),
        now: NOW,
    }
}

/// Every file in examples/, loaded as the apiserver would store it.
pub fn examples() -> Manifests {
    let mut m = Manifests::default();
    let dir = workspace().join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        m.add(&text, NS).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    for a in &mut m.media_apps {
        stamp(&mut a.metadata, 100);
    }
    for s in &mut m.stream_auths {
        stamp(&mut s.metadata, 100);
    }
    m
}
