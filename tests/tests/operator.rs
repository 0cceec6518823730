//! The contract between the operator and the server: the operator renders the ConfigMap and
//! Secret for the example resources, they are laid out as the kubelet mounts them (`..data`
//! symlinks), and the real `ferrocast` binary serves from them: the right stream key
//! publishes, a wrong one is refused. Then the StreamAuth's Secret changes, the operator
//! re-renders, the volume's symlink is swapped, and the new key works and the old one is
//! refused, by the same server process.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferrocast_operator::manifests::Manifests;
use ferrocast_operator::render::{render, Desired, Fleet, Inputs, CONFIG_KEY};
use ferrocast_server::config::Config;
use ferrocast_tests::kube_mount::KubeMount;
use ferrocast_tests::server::free_ports;
use ferrocast_tests::{publish_accepted, require_tool, workspace_root, Publisher, TestServer};
use k8s_openapi::ByteString;

const NS: &str = "streaming";

fn examples() -> Manifests {
    let mut m = Manifests::default();
    for f in [
        "mediaapp-key-loadbalancer.yaml",
        "mediaapp-sign-tls.yaml",
        "streamauth-rotation.yaml",
    ] {
        let text = std::fs::read_to_string(workspace_root().join("examples").join(f)).unwrap();
        m.add(&text, NS).unwrap();
    }
    // What the apiserver adds on create (owner references need the uid).
    for (i, a) in m.media_apps.iter_mut().enumerate() {
        a.metadata.uid = Some(format!("uid-{i}"));
        a.metadata.generation = Some(1);
    }
    m
}

/// The fleet as the chart deploys it, its Secret mounted at `secrets_dir`.
fn fleet(base: Config, secrets_dir: std::path::PathBuf) -> Fleet {
    Fleet {
        name: "ferrocast".into(),
        serves_unlabelled: true,
        unlabelled_elsewhere: Default::default(),
        lease: "ferrocast-operator".into(),
        namespace: NS.into(),
        watch_namespaces: Vec::new(),
        config_map: "ferrocast-server-config".into(),
        secret: "ferrocast-server-secrets".into(),
        selector: BTreeMap::from([("app.kubernetes.io/name".into(), "ferrocast".into())]),
        base,
        secrets_dir,
    }
}

fn inputs(m: &Manifests) -> Inputs {
    Inputs {
        media_apps: m.media_apps.clone(),
        stream_auths: m.stream_auths.clone(),
        secrets: m
            .secrets
            .iter()
            .map(|s| (s.metadata.name.clone().unwrap(), s.clone()))
            .collect(),
        api_token_key: Some("contract-test-api-token-key".into()),
        revision_salt: Some("contract-test-revision-salt".into()),
        cluster_secret: Some("contract-test-cluster-secret".into()),
        now: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    }
}

fn config_files(d: &Desired) -> BTreeMap<String, Vec<u8>> {
    d.config_map
        .data
        .clone()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect()
}

fn secret_files(d: &Desired) -> BTreeMap<String, Vec<u8>> {
    d.secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// `POST /api/v1/login`'s status.
async fn login(server: &TestServer, user: &str, password: &str) -> u16 {
    let url = format!("http://127.0.0.1:{}/api/v1/login", server.http_port);
    let body = serde_json::json!({"username": user, "password": password}).to_string();
    let resp = ferrocast_tests::http::request(
        "POST",
        &url,
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
        Duration::from_secs(10),
    )
    .await
    .expect("login answers");
    resp.status
}

/// `GET /config-status` of the admin port.
async fn config_status(server: &TestServer) -> serde_json::Value {
    let (_, body) = ferrocast_tests::http::get_text(&server.admin_url("/config-status"), Duration::from_secs(5))
        .await
        .expect("/config-status answers");
    serde_json::from_str(&body).expect("JSON")
}

async fn metrics(server: &TestServer) -> String {
    ferrocast_tests::http::get_text(&server.admin_url("/metrics"), Duration::from_secs(5))
        .await
        .expect("/metrics answers")
        .1
}

/// Polls `/config-status` until `done` holds (bounded: the server polls its files every 2 s).
async fn wait_config_status(server: &TestServer, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = config_status(server).await;
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "config status stays {status}; log:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The rendered fleet and its two mounted volumes.
struct Mounted {
    fleet: Fleet,
    config: KubeMount,
    secrets: KubeMount,
}

#[tokio::test]
async fn the_server_runs_on_the_rendered_examples_and_a_rotated_key_applies_live() {
    require_tool("ffmpeg");
    let mut manifests = examples();
    let mounted: Mutex<Option<Mounted>> = Mutex::new(None);
    let server = TestServer::builder()
        .start_with(|dir, [rtmp, http, admin, _, _]| {
            // Fleet-wide settings as a base config; the test only moves the listeners to
            // loopback test ports.
            let [rtmps, https] = free_ports::<2>()?;
            let base = Config::from_yaml(
                &format!("bind: 127.0.0.1\nrtmp: {{port: {rtmp}}}\nhttp: {{port: {http}}}\nadmin: {{port: {admin}}}\ntls: {{rtmps_port: {rtmps}, https_port: {https}}}\n"),
                "base",
            )?;
            let fleet = fleet(base, dir.join("secrets"));
            let desired = render(&fleet, &inputs(&examples()))?;
            let config = KubeMount::create(&dir.join("config"), &config_files(&desired))?;
            let secrets = KubeMount::create(&dir.join("secrets"), &secret_files(&desired))?;
            let path = config.path().join(CONFIG_KEY);
            *mounted.lock().unwrap() = Some(Mounted { fleet, config, secrets });
            Ok(path)
        })
        .await
        .expect("the server starts on the rendered config");
    let mut mounted = mounted.into_inner().unwrap().expect("mounted");
    let pid = server.server_pid().expect("server pid");

    // Both example apps are served, with the operator's file layout.
    let config_path = mounted.config.path().join(CONFIG_KEY);
    assert!(
        std::fs::symlink_metadata(&config_path)
            .unwrap()
            .file_type()
            .is_symlink(),
        "mounted as the kubelet does"
    );
    let running = Config::load(&config_path).unwrap();
    let mut apps: Vec<&str> = running.apps.iter().map(|a| a.name.as_str()).collect();
    apps.sort();
    assert_eq!(apps, ["events", "live"]);
    assert_eq!(
        running.tls.certificates.len(),
        1,
        "the events app's certificate from its TLS Secret"
    );

    // API users from the StreamAuth's Secret, through the rendered users file.
    assert_eq!(
        login(&server, "admin", "FAKE-admin-password").await,
        200,
        "the example's API user logs in"
    );
    assert_eq!(login(&server, "admin", "wrong").await, 401);

    let right = server.rtmp_url("cam1?key=FAKE-cam1-key-0000-change-me");
    let wrong = server.rtmp_url("cam1?key=FAKE-guess");
    assert!(
        publish_accepted(&right).await,
        "the example's key publishes\n{}",
        server.logs()
    );
    assert!(!publish_accepted(&wrong).await, "a wrong key is refused");
    // OBS style: the key as the stream name publishes under the public name.
    let _obs = Publisher::builder(&server.rtmp_url("FAKE-studio-key-0000-change-me"))
        .duration_secs(20)
        .start()
        .unwrap();
    server
        .wait_live("studio", Duration::from_secs(10))
        .await
        .expect("published as `studio`");

    // Rotate cam1's key in the StreamAuth's Secret and re-render, as the operator does on the change.
    let keys = manifests
        .secrets
        .iter_mut()
        .find(|s| s.metadata.name.as_deref() == Some("studio-stream-keys"))
        .unwrap();
    keys.data
        .as_mut()
        .unwrap()
        .insert("cam1".into(), ByteString(b"FAKE-cam1-key-0001-rotated".to_vec()));
    let before = render(&mounted.fleet, &inputs(&examples())).unwrap();
    let after = render(&mounted.fleet, &inputs(&manifests)).unwrap();
    let unrevised = |d: &Desired| {
        let mut c = d.config.clone();
        c.revision.id = None;
        c
    };
    assert_eq!(
        unrevised(&after),
        unrevised(&before),
        "a key rotation changes the Secret and the revision only"
    );
    assert_ne!(after.revision, before.revision);
    assert_eq!(config_status(&server).await["revision"], before.revision.as_str());

    // The kubelet may deliver the new ConfigMap before the new Secret: the server waits for
    // the files of its revision, says so, and keeps serving the running config.
    mounted.config.update(&config_files(&after)).unwrap();
    let status = wait_config_status(&server, |s| s.get("pending").is_some()).await;
    assert_eq!(status["revision"], before.revision.as_str(), "still the running config");
    assert_eq!(status["pending"]["revision"], after.revision.as_str());
    assert!(
        status["pending"]["reason"]
            .as_str()
            .unwrap()
            .contains("waiting for the secret files"),
        "{status}"
    );
    assert!(metrics(&server).await.contains("ferrocast_config_pending 1"));
    assert!(
        publish_accepted(&right).await,
        "the running config still serves its keys\n{}",
        server.logs()
    );
    // The Secret arrives: the waiting config is retried and applies, without a restart.
    mounted.secrets.update(&secret_files(&after)).unwrap();
    let status = wait_config_status(&server, |s| s["revision"] == after.revision.as_str()).await;
    assert!(status.get("pending").is_none(), "{status}");
    let text = metrics(&server).await;
    assert!(
        text.contains(&format!(
            "ferrocast_config_info{{hash=\"{}\",revision=\"{}\"}} 1",
            status["hash"].as_str().unwrap(),
            after.revision
        )),
        "{text}"
    );
    assert!(text.contains("ferrocast_config_pending 0"), "{text}");
    assert!(
        publish_accepted(&server.rtmp_url("cam1?key=FAKE-cam1-key-0001-rotated")).await,
        "the new key publishes\n{}",
        server.logs()
    );
    assert!(!publish_accepted(&right).await, "the replaced key is refused");
    assert_eq!(server.server_pid(), Some(pid), "same server process: no restart");
    assert_eq!(
        server.logs().matches("ferrocast listening").count(),
        1,
        "the server started once"
    );
}

#[tokio::test]
async fn an_empty_fleet_renders_a_config_the_server_runs_and_that_refuses_every_stream() {
    require_tool("ffmpeg");
    let server = TestServer::builder()
        .start_with(|dir, [rtmp, http, admin, _, _]| {
            let base = Config::from_yaml(
                &format!("bind: 127.0.0.1\nrtmp: {{port: {rtmp}}}\nhttp: {{port: {http}}}\nadmin: {{port: {admin}}}\n"),
                "base",
            )?;
            let fleet = fleet(base, dir.join("secrets"));
            let desired = render(&fleet, &inputs(&Manifests::default()))?;
            let config = KubeMount::create(&dir.join("config"), &config_files(&desired))?;
            KubeMount::create(&dir.join("secrets"), &secret_files(&desired))?;
            Ok(config.path().join(CONFIG_KEY))
        })
        .await
        .expect("the server starts with no apps");
    assert!(
        !publish_accepted(&server.rtmp_url("cam")).await,
        "no MediaApp: the default `live` app is not served"
    );
}

#[tokio::test]
async fn a_pod_listens_where_its_base_config_says_while_the_operators_config_lags() {
    require_tool("ffmpeg");
    let manifests = {
        let mut m = Manifests::default();
        m.add(
            "apiVersion: ferrocast.io/v1alpha1\nkind: MediaApp\nmetadata: {name: open}\nspec: {}\n",
            NS,
        )
        .unwrap();
        m.media_apps[0].metadata.uid = Some("uid-open".into());
        m
    };
    let rendered: Mutex<Option<(Fleet, KubeMount, KubeMount)>> = Mutex::new(None);
    let server = TestServer::builder()
        .start_with_args(|dir, [rtmp, http, admin, _, _]| {
            // The operator still renders from the previous release's base config (other
            // ports); the pod comes with the new one, as the chart mounts it.
            let [old_rtmp, old_http, old_admin] = free_ports::<3>()?;
            let old = Config::from_yaml(
                &format!("bind: 127.0.0.1\nrtmp: {{port: {old_rtmp}}}\nhttp: {{port: {old_http}}}\nadmin: {{port: {old_admin}}}\n"),
                "old base",
            )?;
            let new = format!("bind: 127.0.0.1\nrtmp: {{port: {rtmp}}}\nhttp: {{port: {http}}}\nadmin: {{port: {admin}}}\n");
            std::fs::write(dir.join("base.yaml"), &new)?;
            let fleet = fleet(old, dir.join("secrets"));
            let desired = render(&fleet, &inputs(&manifests))?;
            let config = KubeMount::create(&dir.join("config"), &config_files(&desired))?;
            let secrets = KubeMount::create(&dir.join("secrets"), &secret_files(&desired))?;
            let path = config.path().join(CONFIG_KEY);
            *rendered.lock().unwrap() = Some((fleet, config, secrets));
            Ok(vec![
                "--config".into(),
                path.display().to_string(),
                "--base-config".into(),
                dir.join("base.yaml").display().to_string(),
            ])
        })
        .await
        .expect("the server starts on the pod's listeners (its probes reach the admin port)");
    assert!(
        publish_accepted(&format!("rtmp://127.0.0.1:{}/open/cam", server.rtmp_port)).await,
        "the app from the operator's config is served on the pod's RTMP port\n{}",
        server.logs()
    );
    // The operator catches up (re-renders from the new base): a reload, not a restart, and
    // the listeners stay where they are.
    let (mut fleet, mut config, mut secrets) = rendered.into_inner().unwrap().unwrap();
    fleet.base = Config::load(&server.dir().join("base.yaml")).unwrap();
    let desired = render(&fleet, &inputs(&manifests)).unwrap();
    secrets.update(&secret_files(&desired)).unwrap();
    config.update(&config_files(&desired)).unwrap();
    let status = wait_config_status(&server, |s| s["revision"] == desired.revision.as_str()).await;
    assert!(status.get("pending").is_none(), "{status}");
    assert!(
        publish_accepted(&format!("rtmp://127.0.0.1:{}/open/cam2", server.rtmp_port)).await,
        "{}",
        server.logs()
    );
    assert_eq!(server.logs().matches("ferrocast listening").count(), 1, "no restart");
}
