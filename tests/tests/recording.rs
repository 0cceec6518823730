//! Recording against real tools: FLV, faststart MP4 and fMP4 files read back by ffprobe and
//! decoded by ffmpeg (H.264+AAC from Debian's FFmpeg, HEVC+AAC and AV1+Opus from FFmpeg 9),
//! segmenting at keyframes, a kill -9 mid-recording, SIGTERM, uploads to moto's S3 server
//! (with an outage), the records API with postRecord/doneRecord delivered to a receiver, and
//! an unwritable path that is counted while players keep real time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrocast_tests::env::tools_dir;
use ferrocast_tests::fixtures::ffprobe;
use ferrocast_tests::http::{get_text, request, BodyEvent};
use ferrocast_tests::modern::{decode, encoder_slot, modern_ffmpeg, start_publisher};
use ferrocast_tests::process::run_bounded;
use ferrocast_tests::server::free_ports;
use ferrocast_tests::webhook::{self, Hit};
use ferrocast_tests::{argon2_phc, unique_name, FlvPlayer, Proc, TempDir, TestServer, TestServerBuilder};
use serde_json::Value;

/// A config with one app per `(name, record settings)` entry and `extra` top-level YAML.
fn config(ports: [u16; 5], apps: &[(&str, String)], extra: &str) -> String {
    let [rtmp, http, admin, ..] = ports;
    let mut y = format!(
        "bind: 127.0.0.1\nrtmp: {{port: {rtmp}}}\nhttp: {{port: {http}}}\nadmin: {{port: {admin}}}\n\
         hub: {{publisher_grace_secs: 1, shutdown_grace_secs: 20}}\napps:\n"
    );
    for (name, record) in apps {
        y.push_str(&format!("  - name: {name}\n    record: {record}\n"));
    }
    y.push_str(extra);
    y
}

async fn start(apps: &[(&str, String)], extra: &str) -> TestServer {
    let apps: Vec<(String, String)> = apps.iter().map(|(a, r)| (a.to_string(), r.clone())).collect();
    let extra = extra.to_string();
    TestServerBuilder::default()
        .start_with(move |dir, ports| {
            let borrowed: Vec<(&str, String)> = apps.iter().map(|(a, r)| (a.as_str(), r.clone())).collect();
            let path = dir.join("ferrocast.yaml");
            std::fs::write(&path, config(ports, &borrowed, &extra))?;
            Ok(path)
        })
        .await
        .unwrap()
}

fn rtmp(server: &TestServer, app: &str, name: &str) -> String {
    format!("rtmp://127.0.0.1:{}/{app}/{name}", server.rtmp_port)
}

/// Every finished recording of `app/name` under `root` (files still being written as MP4s
/// carry `.frag` and are not listed).
fn recordings(root: &Path, app: &str, name: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join(app).join(name))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| {
        let s = p.to_string_lossy();
        s.ends_with(".mp4") || s.ends_with(".flv")
    });
    v.sort();
    v
}

/// Waits until the server logged `n` closed files of `/app/name`.
async fn wait_closed(server: &TestServer, app: &str, name: &str, n: usize, d: Duration) {
    let needle = format!("stream=/{app}/{name} path=");
    let deadline = Instant::now() + d;
    loop {
        let logs = server.logs();
        let closed = logs
            .lines()
            .filter(|l| l.contains("recording file closed") && l.contains(&needle))
            .count();
        if closed >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} closed recordings of /{app}/{name} expected within {d:?}; log:\n{}",
            tail(&logs)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tail(s: &str) -> &str {
    &s[s.len().saturating_sub(6000)..]
}

/// The top-level box types of an MP4 file.
fn top_boxes(path: &Path) -> Vec<String> {
    let b = std::fs::read(path).unwrap();
    let mut at = 0usize;
    let mut kinds = Vec::new();
    while at + 8 <= b.len() {
        let size = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        let size = if size == 1 {
            u64::from_be_bytes(b[at + 8..at + 16].try_into().unwrap()) as usize
        } else {
            size
        };
        kinds.push(String::from_utf8_lossy(&b[at + 4..at + 8]).into_owned());
        if size < 8 {
            break;
        }
        at += size;
    }
    kinds
}

/// ffprobe's container duration and stream codec names.
async fn probe(path: &Path) -> (f64, Vec<String>) {
    let p = ffprobe(&path.display().to_string(), &["-show_format"], 60)
        .await
        .unwrap();
    let duration = p["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("{}: no duration: {p}", path.display()));
    let codecs = p["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap_or("?").to_string())
        .collect();
    (duration, codecs)
}

/// Asserts a finished recording of a `secs`-second publish: ffprobe reads it with the
/// published codecs and a duration within 0.5 s, every frame decodes, and an MP4 has its
/// moov before its mdat.
async fn check_recording(path: &Path, secs: f64, video: &str, audio: &str) {
    let what = path.display().to_string();
    let (duration, codecs) = probe(path).await;
    assert_eq!(codecs, [video, audio], "{what}: codecs");
    assert!(
        (duration - secs).abs() <= 0.5,
        "{what}: duration {duration} s, published {secs} s"
    );
    let report = decode(&modern_ffmpeg(), &what, None, 120).await.unwrap();
    report.assert_decoded(&what, video, Some((640, 360)), audio, (secs * 30.0 * 0.97) as u64);
    if what.ends_with(".mp4") {
        let boxes = top_boxes(path);
        let moov = boxes.iter().position(|b| b == "moov");
        let mdat = boxes.iter().position(|b| b == "mdat");
        assert!(moov.is_some() && mdat.is_some(), "{what}: boxes {boxes:?}");
        assert!(moov < mdat, "{what}: moov after mdat: {boxes:?}");
    }
}

#[tokio::test]
async fn h264_and_aac_are_recorded_as_flv_mp4_and_fmp4() {
    let root = TempDir::new("rec-h264").unwrap();
    let rec = |format: &str| format!("{{mode: always, format: {format}, path: {:?}}}", root.path());
    let server = start(&[("flv", rec("flv")), ("mp4", rec("mp4")), ("fmp4", rec("fmp4"))], "").await;
    let name = unique_name("cam");
    let logs = TempDir::new("rec-pub").unwrap();
    let mut publishers = Vec::new();
    for app in ["flv", "mp4", "fmp4"] {
        publishers.push(start_publisher(&rtmp(&server, app, &name), "h264", "aac", 20, &logs).unwrap());
    }
    for p in &mut publishers {
        let status = p.wait_within(Duration::from_secs(45)).await;
        assert!(status.is_some_and(|s| s.success()), "publisher: {}", p.log_text());
    }
    for app in ["flv", "mp4", "fmp4"] {
        wait_closed(&server, app, &name, 1, Duration::from_secs(20)).await;
        let files = recordings(root.path(), app, &name);
        assert_eq!(files.len(), 1, "{app}: one file per publish: {files:?}");
        check_recording(&files[0], 20.0, "h264", "aac").await;
    }
    assert!(
        !std::fs::read_dir(root.path().join("mp4").join(&name))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".frag")),
        "the crash-safe fMP4 of the MP4 is gone once it closed"
    );
}

#[tokio::test]
async fn hevc_aac_and_av1_opus_from_ffmpeg_9_are_recorded_as_mp4_and_fmp4() {
    let root = TempDir::new("rec-modern").unwrap();
    let rec = |format: &str| format!("{{mode: always, format: {format}, path: {:?}}}", root.path());
    let server = start(&[("mp4", rec("mp4")), ("fmp4", rec("fmp4"))], "").await;
    let logs = TempDir::new("rec-pub").unwrap();
    for (video, audio) in [("hevc", "aac"), ("av1", "opus")] {
        let name = unique_name(video);
        let mut publishers = Vec::new();
        let mut slots = Vec::new();
        for app in ["mp4", "fmp4"] {
            slots.push(encoder_slot().await);
            publishers.push(start_publisher(&rtmp(&server, app, &name), video, audio, 20, &logs).unwrap());
        }
        for p in &mut publishers {
            let status = p.wait_within(Duration::from_secs(60)).await;
            assert!(status.is_some_and(|s| s.success()), "publisher: {}", p.log_text());
        }
        drop(slots);
        for app in ["mp4", "fmp4"] {
            wait_closed(&server, app, &name, 1, Duration::from_secs(20)).await;
            let files = recordings(root.path(), app, &name);
            assert_eq!(files.len(), 1, "{app} {video}: {files:?}");
            check_recording(&files[0], 20.0, video, audio).await;
        }
    }
}

/// `(pts_time, flags)` of the first video packet of a file.
async fn first_video_packet(path: &Path) -> (f64, String) {
    let args: Vec<String> = [
        "-v",
        "error",
        "-select_streams",
        "v:0",
        "-show_entries",
        "packet=pts_time,flags",
        "-read_intervals",
        "%+#1",
        "-of",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([path.display().to_string()])
    .collect();
    let out = run_bounded("ffprobe", &args, 30).await.unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &v["packets"][0];
    (
        p["pts_time"].as_str().and_then(|t| t.parse().ok()).unwrap_or(-1.0),
        p["flags"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn segment_secs_cuts_a_30_second_publish_into_3_files_at_keyframes() {
    let root = TempDir::new("rec-seg").unwrap();
    let server = start(
        &[(
            "live",
            format!(
                "{{mode: always, format: mp4, segment_secs: 10, path: {:?}}}",
                root.path()
            ),
        )],
        "",
    )
    .await;
    let name = unique_name("seg");
    let logs = TempDir::new("rec-pub").unwrap();
    let mut p = start_publisher(&rtmp(&server, "live", &name), "h264", "aac", 30, &logs).unwrap();
    let status = p.wait_within(Duration::from_secs(60)).await;
    assert!(status.is_some_and(|s| s.success()), "publisher: {}", p.log_text());
    wait_closed(&server, "live", &name, 3, Duration::from_secs(20)).await;
    let files = recordings(root.path(), "live", &name);
    assert_eq!(files.len(), 3, "{files:?}");
    let mut total = 0.0;
    for f in &files {
        let (duration, codecs) = probe(f).await;
        assert_eq!(codecs, ["h264", "aac"], "{}", f.display());
        assert!(
            (duration - 10.0).abs() <= 0.6,
            "{}: {duration} s, segments of 10 s",
            f.display()
        );
        total += duration;
        let (_, flags) = first_video_packet(f).await;
        assert!(
            flags.starts_with('K'),
            "{}: first video packet flags {flags:?}",
            f.display()
        );
        assert!(top_boxes(f).iter().position(|b| b == "moov") < top_boxes(f).iter().position(|b| b == "mdat"));
    }
    assert!((total - 30.0).abs() <= 0.6, "segments add up to {total} s");
}

#[tokio::test]
async fn kill_9_leaves_a_playable_fmp4_and_a_restart_finalizes_the_mp4() {
    let root = TempDir::new("rec-kill").unwrap();
    let apps = [
        ("f", format!("{{mode: always, format: fmp4, path: {:?}}}", root.path())),
        ("m", format!("{{mode: always, format: mp4, path: {:?}}}", root.path())),
    ];
    let mut server = start(&apps, "").await;
    let name = unique_name("crash");
    let logs = TempDir::new("rec-pub").unwrap();
    let mut pf = start_publisher(&rtmp(&server, "f", &name), "h264", "aac", 30, &logs).unwrap();
    let mut pm = start_publisher(&rtmp(&server, "m", &name), "h264", "aac", 30, &logs).unwrap();
    // Let both record for a while, then crash the server.
    let deadline = Instant::now() + Duration::from_secs(15);
    while recordings(root.path(), "f", &name).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opened = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    server.kill();
    let recorded = opened.elapsed().as_secs_f64();
    server.wait_exit(Duration::from_secs(5)).await;
    pf.kill();
    pm.kill();

    let fmp4 = recordings(root.path(), "f", &name);
    assert_eq!(fmp4.len(), 1, "{fmp4:?}");
    let what = fmp4[0].display().to_string();
    let report = decode(&modern_ffmpeg(), &what, None, 60).await.unwrap();
    // At most the last fragment (1 s) and what was in flight are lost.
    let min_frames = ((recorded - 2.5) * 30.0) as u64;
    report.assert_decoded(&what, "h264", Some((640, 360)), "aac", min_frames);

    let mp4_dir = root.path().join("m").join(&name);
    let frags: Vec<_> = std::fs::read_dir(&mp4_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        frags.len() == 1 && frags[0].to_string_lossy().ends_with(".mp4.frag"),
        "an MP4 being written is a crash-safe fMP4 until it closes: {frags:?}"
    );
    // A restarted server finalizes what the crashed one left.
    let server = start(&apps, "").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while recordings(root.path(), "m", &name).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mp4 = recordings(root.path(), "m", &name);
    assert_eq!(
        mp4.len(),
        1,
        "restart finalized the MP4: {mp4:?}\n{}",
        tail(&server.logs())
    );
    assert!(!frags[0].exists(), "the fMP4 it was made from is gone");
    let boxes = top_boxes(&mp4[0]);
    assert_eq!(boxes.iter().position(|b| b == "moov"), Some(1), "{boxes:?}");
    let what = mp4[0].display().to_string();
    let report = decode(&modern_ffmpeg(), &what, None, 60).await.unwrap();
    report.assert_decoded(&what, "h264", Some((640, 360)), "aac", min_frames);
    // The fMP4 was trimmed after its last complete fragment and still plays.
    let report = decode(&modern_ffmpeg(), &fmp4[0].display().to_string(), None, 60)
        .await
        .unwrap();
    report.assert_decoded("trimmed fMP4", "h264", Some((640, 360)), "aac", min_frames);
}

#[tokio::test]
async fn sigterm_finalizes_a_recording_in_progress() {
    let root = TempDir::new("rec-term").unwrap();
    let mut server = start(
        &[(
            "live",
            format!("{{mode: always, format: mp4, path: {:?}}}", root.path()),
        )],
        "",
    )
    .await;
    let name = unique_name("term");
    let logs = TempDir::new("rec-pub").unwrap();
    let mut p = start_publisher(&rtmp(&server, "live", &name), "h264", "aac", 30, &logs).unwrap();
    let dir = root.path().join("live").join(&name);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !dir.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(25)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit: {status:?}\n{}",
        tail(&server.logs())
    );
    p.kill();
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(files.len(), 1, "only the finished MP4 remains: {files:?}");
    assert!(files[0].to_string_lossy().ends_with(".mp4"));
    assert_eq!(top_boxes(&files[0]).iter().position(|b| b == "moov"), Some(1));
    let what = files[0].display().to_string();
    let report = decode(&modern_ffmpeg(), &what, None, 60).await.unwrap();
    report.assert_decoded(&what, "h264", Some((640, 360)), "aac", 4 * 30);
}

/// moto's standalone S3 server on a loopback address of its own.
struct Moto {
    proc: Option<Proc>,
    host: String,
    port: u16,
    dir: TempDir,
}

impl Moto {
    async fn start() -> Moto {
        let host = format!("127.0.0.{}", 2 + rand::random::<u8>() % 250);
        let [port] = free_ports::<1>().unwrap();
        let mut m = Moto {
            proc: None,
            host,
            port,
            dir: TempDir::new("moto").unwrap(),
        };
        m.up().await;
        m
    }

    fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// Starts the server (its state starts empty) and creates the bucket `records`.
    async fn up(&mut self) {
        let bin = tools_dir().join("venv").join("bin").join("moto_server");
        assert!(
            bin.is_file(),
            "missing tool moto_server (PyPI moto[server]==5.2.5 in .tools/venv): run scripts/test.sh"
        );
        let args = vec!["-H".to_string(), self.host.clone(), "-p".into(), self.port.to_string()];
        let n = rand::random::<u32>();
        self.proc = Some(
            Proc::spawn(
                "moto_server",
                &bin.display().to_string(),
                &args,
                600,
                &self.dir.join(&format!("moto-{n}.log")),
            )
            .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let url = format!("{}/records", self.endpoint());
            if let Ok(mut r) = request("PUT", &url, &[], Some(b""), Duration::from_secs(2)).await {
                let _ = r.read_to_end(Duration::from_secs(2)).await;
                if r.status == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "moto did not start: {}", self.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn down(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill_and_wait().await;
        }
    }

    fn log(&self) -> String {
        self.proc.as_ref().map(|p| p.log_text()).unwrap_or_default()
    }

    /// The object's bytes, if it exists, read with boto3 (moto's own dependency: a real,
    /// independent S3 client signing its requests).
    async fn object(&self, key: &str) -> Option<Vec<u8>> {
        let python = tools_dir().join("venv").join("bin").join("python");
        let out = self.dir.join(&format!("object-{}", rand::random::<u32>()));
        let script = format!(
            "import boto3, sys\n\
             s3 = boto3.client('s3', endpoint_url={:?}, aws_access_key_id='x', aws_secret_access_key='y', region_name='us-east-1')\n\
             try:\n    body = s3.get_object(Bucket='records', Key={key:?})['Body'].read()\n\
             except s3.exceptions.NoSuchKey:\n    sys.exit(3)\n\
             open({:?}, 'wb').write(body)\n",
            self.endpoint(),
            out.display().to_string()
        );
        let result = run_bounded(&python.display().to_string(), &["-c".to_string(), script], 30)
            .await
            .ok()?;
        if !result.status.success() {
            return None;
        }
        let bytes = std::fs::read(&out).ok();
        let _ = std::fs::remove_file(&out);
        bytes
    }
}

/// `name{labels}` -> value from `/metrics`.
async fn metric(server: &TestServer, series: &str) -> f64 {
    let (_, text) = get_text(&server.admin_url("/metrics"), Duration::from_secs(5))
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(s, _)| *s == series)
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn uploads_reach_s3_and_survive_a_storage_outage() {
    let mut moto = Moto::start().await;
    let root = TempDir::new("rec-s3").unwrap();
    let creds = TempDir::new("rec-creds").unwrap();
    std::fs::write(creds.join("id"), "AKIDTEST\n").unwrap();
    std::fs::write(creds.join("secret"), "not-a-real-secret\n").unwrap();
    let upload = |remove: bool| {
        format!(
            "{{mode: always, format: mp4, path: {:?}, upload: {{endpoint: {:?}, bucket: records, prefix: rec/, \
             access_key_id_file: {:?}, secret_access_key_file: {:?}, remove_local: {remove}, max_backoff_secs: 2}}}}",
            root.path(),
            moto.endpoint(),
            creds.join("id"),
            creds.join("secret")
        )
    };
    let server = start(&[("keep", upload(false)), ("gone", upload(true))], "").await;
    let logs = TempDir::new("rec-pub").unwrap();

    // Both apps upload; "gone" removes its local copy once the object is in place.
    let (a, b) = (unique_name("a"), unique_name("b"));
    let mut pa = start_publisher(&rtmp(&server, "keep", &a), "h264", "aac", 5, &logs).unwrap();
    let mut pb = start_publisher(&rtmp(&server, "gone", &b), "h264", "aac", 5, &logs).unwrap();
    assert!(pa
        .wait_within(Duration::from_secs(30))
        .await
        .is_some_and(|s| s.success()));
    assert!(pb
        .wait_within(Duration::from_secs(30))
        .await
        .is_some_and(|s| s.success()));
    wait_closed(&server, "keep", &a, 1, Duration::from_secs(20)).await;
    let local = recordings(root.path(), "keep", &a);
    assert_eq!(local.len(), 1);
    let file = local[0].file_name().unwrap().to_string_lossy().into_owned();
    let key = format!("rec/keep/{a}/{file}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let object = loop {
        if let Some(o) = moto.object(&key).await {
            break o;
        }
        assert!(
            Instant::now() < deadline,
            "{key} never uploaded\n{}",
            tail(&server.logs())
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(object, std::fs::read(&local[0]).unwrap(), "the object is the file");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !recordings(root.path(), "gone", &b).is_empty()
        || std::fs::read_dir(root.path().join("gone").join(&b)).is_err()
    {
        assert!(
            Instant::now() < deadline,
            "gone/{b} kept its local copy\n{}",
            tail(&server.logs())
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        metric(&server, "ferrocast_record_uploads_total{app=\"keep\",result=\"ok\"}").await,
        1.0
    );

    // Storage goes down while a recording is made: the upload fails, is retried, and lands
    // whole once storage is back.
    moto.down().await;
    let c = unique_name("c");
    let mut pc = start_publisher(&rtmp(&server, "keep", &c), "h264", "aac", 5, &logs).unwrap();
    assert!(pc
        .wait_within(Duration::from_secs(30))
        .await
        .is_some_and(|s| s.success()));
    wait_closed(&server, "keep", &c, 1, Duration::from_secs(20)).await;
    let retries = "ferrocast_record_uploads_total{app=\"keep\",result=\"retry\"}";
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&server, retries).await < 2.0 {
        assert!(
            Instant::now() < deadline,
            "no retried uploads\n{}",
            tail(&server.logs())
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        metric(&server, "ferrocast_record_uploads_pending").await,
        1.0,
        "the file waits for storage"
    );
    moto.up().await;
    let local = recordings(root.path(), "keep", &c);
    assert_eq!(local.len(), 1);
    let key = format!("rec/keep/{c}/{}", local[0].file_name().unwrap().to_string_lossy());
    let deadline = Instant::now() + Duration::from_secs(30);
    let object = loop {
        if let Some(o) = moto.object(&key).await {
            break o;
        }
        assert!(
            Instant::now() < deadline,
            "{key} not uploaded after the outage\n{}",
            tail(&server.logs())
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(object, std::fs::read(&local[0]).unwrap(), "nothing lost");
    let fetched = root.path().join("fetched.mp4");
    std::fs::write(&fetched, &object).unwrap();
    check_recording(&fetched, 5.0, "h264", "aac").await;
    assert!(
        !server.logs().contains("not-a-real-secret"),
        "the secret access key is never logged"
    );
    moto.down().await;
}

/// A webhook receiver answering 200 to everything.
async fn receiver() -> (String, Arc<Mutex<Vec<Hit>>>) {
    webhook::receiver(|_| Some(200), Duration::ZERO).await
}

/// `METHOD /api/v1{path}` with a token: (status, JSON, or the text as a JSON string).
async fn api(server: &TestServer, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let (status, bytes) = server.api(method, path, token, body).await;
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, json)
}

#[tokio::test]
async fn api_starts_stops_lists_downloads_ranges_and_deletes_with_events() {
    let root = TempDir::new("rec-api").unwrap();
    let users = TempDir::new("rec-users").unwrap();
    std::fs::write(users.join("admin"), argon2_phc("pw")).unwrap();
    let (hook, got) = receiver().await;
    let extra = format!(
        "api: {{users_dir: {:?}}}\nwebhooks: {{hooks: [{{url: {hook:?}, events: [postRecord, doneRecord]}}]}}\n",
        users.path()
    );
    let server = start(
        &[("live", format!("{{mode: api, format: mp4, path: {:?}}}", root.path()))],
        &extra,
    )
    .await;
    let (_, login) = api(
        &server,
        "POST",
        "/login",
        None,
        Some(r#"{"username":"admin","password":"pw"}"#),
    )
    .await;
    let token = login["data"]["token"].as_str().unwrap().to_string();
    let t = Some(token.as_str());
    let name = unique_name("api");
    let logs = TempDir::new("rec-pub").unwrap();

    let (status, _) = api(&server, "GET", "/records", None, None).await;
    assert_eq!(status, 401, "the records API needs a token");
    let (status, _) = api(&server, "POST", &format!("/streams/live/{name}/record"), t, None).await;
    assert_eq!(status, 404, "an unpublished stream cannot be recorded");

    // The SSE feed carries the recording events too.
    let sse_url = format!("http://127.0.0.1:{}/api/v1/events", server.http_port);
    let sse_auth = format!("Bearer {token}");
    let mut sse = request(
        "GET",
        &sse_url,
        &[("Authorization", &sse_auth)],
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(sse.status, 200);
    let mut p = start_publisher(&rtmp(&server, "live", &name), "h264", "aac", 20, &logs).unwrap();
    server.wait_live(&name, Duration::from_secs(10)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        recordings(root.path(), "live", &name).is_empty() && !root.path().join("live").join(&name).exists(),
        "mode api records nothing until asked"
    );
    let (status, body) = api(&server, "POST", &format!("/streams/live/{name}/record"), t, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = api(&server, "POST", &format!("/streams/live/{name}/record"), t, None).await;
    assert_eq!(status, 400, "already recording");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (_, list) = api(&server, "GET", &format!("/records?stream={name}"), t, None).await;
    assert_eq!(list["data"][0]["state"], "recording", "{list}");
    let (status, body) = api(&server, "DELETE", &format!("/streams/live/{name}/record"), t, None).await;
    assert_eq!(status, 200, "{body}");
    wait_closed(&server, "live", &name, 1, Duration::from_secs(10)).await;
    let (_, list) = api(&server, "GET", &format!("/records?app=live&stream={name}"), t, None).await;
    let records = list["data"].as_array().unwrap().clone();
    assert_eq!(records.len(), 1, "{list}");
    let rec = &records[0];
    assert_eq!(
        (rec["state"].as_str(), rec["format"].as_str()),
        (Some("local"), Some("mp4"))
    );
    let id = rec["id"].as_str().unwrap().to_string();
    let path = recordings(root.path(), "live", &name)[0].clone();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(rec["size"].as_u64(), Some(bytes.len() as u64));
    let (_, none) = api(
        &server,
        "GET",
        &format!("/records?stream={name}&from=4102444800"),
        t,
        None,
    )
    .await;
    assert_eq!(none["data"].as_array().map(Vec::len), Some(0), "time filter: {none}");

    // Ranged download.
    let auth = format!("Bearer {token}");
    let url = format!("http://127.0.0.1:{}/api/v1/records/{id}", server.http_port);
    let mut r = request(
        "GET",
        &url,
        &[("Authorization", &auth), ("Range", "bytes=100-1123")],
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let (body, _) = r.read_to_end(Duration::from_secs(10)).await.unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 100-1123/{}", bytes.len()).as_str())
    );
    assert_eq!(body, &bytes[100..1124]);
    let mut r = request("GET", &url, &[("Authorization", &auth)], None, Duration::from_secs(5))
        .await
        .unwrap();
    let (body, _) = r.read_to_end(Duration::from_secs(10)).await.unwrap();
    assert_eq!((r.status, body.len()), (200, bytes.len()));
    assert_eq!(body, bytes);
    let mut r = request(
        "GET",
        &url,
        &[("Authorization", &auth), ("Range", &format!("bytes={}-", bytes.len()))],
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let _ = r.read_to_end(Duration::from_secs(5)).await;
    assert_eq!(r.status, 416);
    for bad in [
        "..~..~passwd",
        "live~x~..%2F..%2Fetc%2Fpasswd",
        "live~cam~20261130T000000Z.mp4",
    ] {
        let (status, _) = api(&server, "GET", &format!("/records/{bad}"), t, None).await;
        assert_eq!(status, 404, "{bad}");
    }

    // Events.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (post, done) = loop {
        let events: Vec<Value> = got.lock().unwrap().iter().map(Hit::json).collect();
        let find = |e: &str| {
            events
                .iter()
                .find(|v| v["event"] == e && v["name"] == name.as_str())
                .cloned()
        };
        if let (Some(p), Some(d)) = (find("postRecord"), find("doneRecord")) {
            break (p, d);
        }
        assert!(Instant::now() < deadline, "events: {events:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(post["id"], id.as_str());
    assert_eq!(done["path"].as_str(), Some(path.display().to_string().as_str()));
    assert_eq!(done["size"].as_u64(), Some(bytes.len() as u64));
    assert_eq!(done["codecs"], serde_json::json!(["h264", "aac"]));
    let duration = done["duration"].as_f64().unwrap();
    let (probed, _) = probe(&path).await;
    assert!(
        (duration - probed).abs() < 0.1,
        "doneRecord says {duration} s, ffprobe {probed} s"
    );
    assert!(duration > 4.0, "{duration}");

    let mut feed = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(feed.contains("event: postRecord") && feed.contains("event: doneRecord")) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "SSE feed without the recording events: {feed}");
        if let Ok(BodyEvent::Data(d)) = tokio::time::timeout(left, sse.next_event()).await {
            feed.push_str(&String::from_utf8_lossy(&d));
        }
    }
    assert!(feed.contains(&format!("\"id\":\"{id}\"")), "{feed}");

    // Delete.
    let (status, _) = api(&server, "DELETE", &format!("/records/{id}"), t, None).await;
    assert_eq!(status, 200);
    assert!(!path.exists());
    let (status, _) = api(&server, "GET", &format!("/records/{id}"), t, None).await;
    assert_eq!(status, 404);
    p.kill();
}

#[tokio::test]
async fn an_unwritable_path_is_counted_and_players_keep_real_time() {
    let dir = TempDir::new("rec-bad").unwrap();
    // A path below a regular file cannot be created, even by root.
    std::fs::write(dir.join("not-a-dir"), "x").unwrap();
    let bad = dir.join("not-a-dir").join("records");
    let server = start(
        &[("live", format!("{{mode: always, format: fmp4, path: {bad:?}}}"))],
        "",
    )
    .await;
    let name = unique_name("bad");
    let logs = TempDir::new("rec-pub").unwrap();
    let mut p = start_publisher(&rtmp(&server, "live", &name), "h264", "aac", 25, &logs).unwrap();
    server.wait_live(&name, Duration::from_secs(10)).await.unwrap();
    let mut player = FlvPlayer::http(&server.flv_url(&name), Duration::from_secs(5))
        .await
        .unwrap();
    // Catch up with the cached GOP first, then measure.
    player.read_for(Duration::from_secs(2)).await.unwrap();
    let started = Instant::now();
    let tags = player.read_for(Duration::from_secs(12)).await.unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let video: Vec<u32> = tags.iter().filter(|t| t.is_video()).map(|t| t.timestamp).collect();
    let media = f64::from(video.last().unwrap() - video.first().unwrap()) / 1000.0;
    assert!(
        media >= elapsed - 1.5,
        "the player got {media} s of media in {elapsed} s while recording failed"
    );
    let failures = metric(&server, "ferrocast_record_failures_total{app=\"live\",reason=\"io\"}").await;
    assert!(failures >= 2.0, "creating the file failed and was retried: {failures}");
    assert!(server.logs().contains("recording file not created"));
    p.kill();
}

/// The `record:` of an app with `format` uploading to `moto`. Without `creds` (a directory
/// with files `id` and `secret`) requests are unsigned, which moto accepts for uploads (but
/// not for reads of a private bucket, as S3).
fn uploading(root: &Path, moto: &Moto, format: &str, remove_local: bool, creds: Option<&Path>) -> String {
    let creds = creds.map_or(String::new(), |c| {
        format!(
            ", access_key_id_file: {:?}, secret_access_key_file: {:?}",
            c.join("id"),
            c.join("secret")
        )
    });
    format!(
        "{{mode: always, format: {format}, path: {:?}, upload: {{endpoint: {:?}, bucket: records, prefix: rec/, \
         remove_local: {remove_local}, max_backoff_secs: 1{creds}}}}}",
        root,
        moto.endpoint(),
    )
}

/// Waits for the object `key` in moto.
async fn wait_object(moto: &Moto, key: &str, server: &TestServer, d: Duration) -> Vec<u8> {
    let deadline = Instant::now() + d;
    loop {
        if let Some(o) = moto.object(key).await {
            return o;
        }
        assert!(
            Instant::now() < deadline,
            "{key} never uploaded\n{}",
            tail(&server.logs())
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The doneRecord events of stream `name` received so far.
fn done_records(got: &Arc<Mutex<Vec<Hit>>>, name: &str) -> Vec<Value> {
    got.lock()
        .unwrap()
        .iter()
        .map(Hit::json)
        .filter(|v| v["event"] == "doneRecord" && v["name"] == name)
        .collect()
}

#[tokio::test]
async fn a_restarted_server_uploads_what_a_previous_run_left_and_announces_each_file_once() {
    let mut moto = Moto::start().await;
    // Storage is down for the whole first run: nothing it records gets uploaded.
    moto.down().await;
    let root = TempDir::new("rec-restart").unwrap();
    let (hook, got) = receiver().await;
    let extra = format!("webhooks: {{hooks: [{{url: {hook:?}, events: [doneRecord]}}]}}\n");
    let creds = TempDir::new("rec-creds").unwrap();
    std::fs::write(creds.join("id"), "AKIDTEST\n").unwrap();
    std::fs::write(creds.join("secret"), "not-a-real-secret\n").unwrap();
    let apps = [("keep", uploading(root.path(), &moto, "mp4", false, Some(creds.path())))];
    let mut server = start(&apps, &extra).await;
    let logs = TempDir::new("rec-pub").unwrap();
    // `done` is recorded and closed (its upload failing); `cut` is still being written when
    // the server is killed.
    let (done, cut) = (unique_name("done"), unique_name("cut"));
    let mut pd = start_publisher(&rtmp(&server, "keep", &done), "h264", "aac", 4, &logs).unwrap();
    let mut pc = start_publisher(&rtmp(&server, "keep", &cut), "h264", "aac", 30, &logs).unwrap();
    assert!(pd
        .wait_within(Duration::from_secs(30))
        .await
        .is_some_and(|s| s.success()));
    wait_closed(&server, "keep", &done, 1, Duration::from_secs(20)).await;
    let retries = "ferrocast_record_uploads_total{app=\"keep\",result=\"retry\"}";
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&server, retries).await < 1.0 {
        assert!(Instant::now() < deadline, "no failed upload\n{}", tail(&server.logs()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.kill();
    server.wait_exit(Duration::from_secs(5)).await;
    pc.kill();
    assert!(done_records(&got, &done).is_empty() && done_records(&got, &cut).is_empty());
    let cut_dir = root.path().join("keep").join(&cut);
    assert!(
        std::fs::read_dir(&cut_dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".mp4.frag")),
        "the killed server left an MP4 in its fMP4 form"
    );

    // Storage is back; a new server finishes the MP4, uploads both files and announces each.
    moto.up().await;
    let mut server = start(&apps, &extra).await;
    for name in [&done, &cut] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while recordings(root.path(), "keep", name).is_empty() {
            assert!(Instant::now() < deadline, "{name}: no MP4\n{}", tail(&server.logs()));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let local = recordings(root.path(), "keep", name);
        assert_eq!(local.len(), 1, "{local:?}");
        let file = local[0].file_name().unwrap().to_string_lossy().into_owned();
        let key = format!("rec/keep/{name}/{file}");
        let object = wait_object(&moto, &key, &server, Duration::from_secs(30)).await;
        assert_eq!(
            object,
            std::fs::read(&local[0]).unwrap(),
            "{key}: the object is the file"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while done_records(&got, name).is_empty() {
            assert!(Instant::now() < deadline, "{name}: no doneRecord");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let events = done_records(&got, name);
        assert_eq!(events.len(), 1, "{events:?}");
        let e = &events[0];
        assert_eq!(e["key"].as_str(), Some(key.as_str()), "{e}");
        assert_eq!(e["size"].as_u64(), Some(object.len() as u64), "{e}");
        assert_eq!(e["codecs"], serde_json::json!(["h264", "aac"]), "{e}");
        let (probed, _) = probe(&local[0]).await;
        let duration = e["duration"].as_f64().unwrap();
        assert!(
            (duration - probed).abs() < 0.2 && duration > 2.0,
            "{name}: doneRecord says {duration} s, ffprobe {probed} s"
        );
    }
    server.sigterm();
    server.wait_exit(Duration::from_secs(25)).await;

    // Another restart: the local copies stay (remove_local: false) but are known uploaded.
    let server = start(&apps, &extra).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.logs().contains("recordings left behind swept") {
        assert!(Instant::now() < deadline, "no sweep at start\n{}", tail(&server.logs()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(metric(&server, "ferrocast_record_uploads_pending").await, 0.0);
    assert_eq!(
        metric(&server, "ferrocast_record_uploads_total{app=\"keep\",result=\"ok\"}").await,
        0.0,
        "nothing is uploaded again\n{}",
        tail(&server.logs())
    );
    assert_eq!(done_records(&got, &done).len(), 1, "no second doneRecord");
    assert_eq!(done_records(&got, &cut).len(), 1, "no second doneRecord");

    // Without its note, a file cannot be told from another pod's file of the same name (same
    // size or not): the object there is kept and the file goes up under the next name.
    let mut server = server;
    server.sigterm();
    server.wait_exit(Duration::from_secs(25)).await;
    let local = recordings(root.path(), "keep", &done).remove(0);
    let note = PathBuf::from(format!("{}.upload", local.display()));
    assert!(note.is_file(), "an uploaded file has its note");
    std::fs::remove_file(&note).unwrap();
    let file = local.file_name().unwrap().to_string_lossy().into_owned();
    let first_key = format!("rec/keep/{done}/{file}");
    let first = moto.object(&first_key).await.unwrap();
    let server = start(&apps, &extra).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while done_records(&got, &done).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "not uploaded again\n{}",
            tail(&server.logs())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second_key = format!("rec/keep/{done}/{}-2.mp4", file.trim_end_matches(".mp4"));
    assert_eq!(done_records(&got, &done)[1]["key"].as_str(), Some(second_key.as_str()));
    assert_eq!(
        moto.object(&first_key).await.unwrap(),
        first,
        "the object there is not replaced"
    );
    assert_eq!(moto.object(&second_key).await.unwrap(), std::fs::read(&local).unwrap());
    moto.down().await;
}

#[tokio::test]
async fn sigterm_uploads_the_recordings_it_finalizes() {
    let mut moto = Moto::start().await;
    let root = TempDir::new("rec-term-up").unwrap();
    let mut server = start(&[("live", uploading(root.path(), &moto, "mp4", false, None))], "").await;
    let name = unique_name("termup");
    let logs = TempDir::new("rec-pub").unwrap();
    let mut p = start_publisher(&rtmp(&server, "live", &name), "h264", "aac", 30, &logs).unwrap();
    let dir = root.path().join("live").join(&name);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !dir.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(25)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit: {status:?}\n{}",
        tail(&server.logs())
    );
    p.kill();
    let local = recordings(root.path(), "live", &name);
    assert_eq!(local.len(), 1, "{local:?}");
    let file = local[0].file_name().unwrap().to_string_lossy().into_owned();
    // The server is gone: the object is there because it was uploaded before the exit.
    let object = moto.object(&format!("rec/live/{name}/{file}")).await;
    assert_eq!(
        object.as_deref(),
        Some(std::fs::read(&local[0]).unwrap().as_slice()),
        "the last file was uploaded within the shutdown grace\n{}",
        tail(&server.logs())
    );
    moto.down().await;
}

#[tokio::test]
async fn uploaded_records_are_listed_downloaded_with_ranges_and_deleted_from_the_bucket() {
    let mut moto = Moto::start().await;
    let root = TempDir::new("rec-api-s3").unwrap();
    let users = TempDir::new("rec-users").unwrap();
    std::fs::write(users.join("admin"), argon2_phc("pw")).unwrap();
    let creds = TempDir::new("rec-creds").unwrap();
    std::fs::write(creds.join("id"), "AKIDTEST\n").unwrap();
    std::fs::write(creds.join("secret"), "not-a-real-secret\n").unwrap();
    let extra = format!("api: {{users_dir: {:?}}}\n", users.path());
    let record = uploading(root.path(), &moto, "flv", true, Some(creds.path()));
    let server = start(&[("up", record)], &extra).await;
    let (_, login) = api(
        &server,
        "POST",
        "/login",
        None,
        Some(r#"{"username":"admin","password":"pw"}"#),
    )
    .await;
    let token = login["data"]["token"].as_str().unwrap().to_string();
    let t = Some(token.as_str());
    let name = unique_name("bucket");
    let logs = TempDir::new("rec-pub").unwrap();
    let mut p = start_publisher(&rtmp(&server, "up", &name), "h264", "aac", 4, &logs).unwrap();
    assert!(p
        .wait_within(Duration::from_secs(30))
        .await
        .is_some_and(|s| s.success()));

    // Uploaded, and the local copy removed: the record is served from the bucket.
    let deadline = Instant::now() + Duration::from_secs(30);
    let rec = loop {
        let (_, list) = api(&server, "GET", &format!("/records?app=up&stream={name}"), t, None).await;
        if let Some(r) = list["data"]
            .as_array()
            .and_then(|a| a.first())
            .filter(|r| r["local"] == false)
        {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "{list}\n{}", tail(&server.logs()));
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        recordings(root.path(), "up", &name).is_empty(),
        "the local copy is gone"
    );
    assert_eq!(rec["state"], "uploaded", "{rec}");
    assert_eq!(rec["format"], "flv", "{rec}");
    assert_eq!(rec["bucket"], "records", "{rec}");
    let id = rec["id"].as_str().unwrap().to_string();
    let key = rec["key"].as_str().unwrap().to_string();
    let object = moto.object(&key).await.expect("the listed object exists");
    assert_eq!(rec["size"].as_u64(), Some(object.len() as u64));

    let auth = format!("Bearer {token}");
    let url = format!("http://127.0.0.1:{}/api/v1/records/{id}", server.http_port);
    let get = |range: Option<&'static str>| {
        let (url, auth) = (url.clone(), auth.clone());
        async move {
            let mut headers = vec![("Authorization", auth.as_str())];
            if let Some(r) = range {
                headers.push(("Range", r));
            }
            let mut r = request("GET", &url, &headers, None, Duration::from_secs(5))
                .await
                .unwrap();
            let (body, _) = r.read_to_end(Duration::from_secs(10)).await.unwrap();
            (
                r.status,
                r.header("content-range").map(str::to_string),
                r.header("content-type").map(str::to_string),
                body,
            )
        }
    };
    let (status, _, content_type, body) = get(None).await;
    assert_eq!((status, content_type.as_deref()), (200, Some("video/x-flv")));
    assert_eq!(body, object, "the download is the object");
    let (status, range, _, body) = get(Some("bytes=10-99")).await;
    assert_eq!(status, 206);
    assert_eq!(range, Some(format!("bytes 10-99/{}", object.len())));
    assert_eq!(body, &object[10..100]);
    let (status, _, _, body) = get(Some("bytes=99-10")).await;
    assert_eq!((status, body.len()), (200, object.len()), "an invalid range is ignored");
    let (status, _, _, _) = get(Some("bytes=99999999-")).await;
    assert_eq!(status, 416, "a valid range past the end");

    // `to` is exclusive: a record started at `start` is before start + 1 s, not before start.
    let start = rec["start"].as_u64().unwrap() / 1000;
    let count = |q: String| {
        let server = &server;
        async move {
            let (_, list) = api(server, "GET", &q, t, None).await;
            list["data"].as_array().map(Vec::len).unwrap()
        }
    };
    assert_eq!(count(format!("/records?stream={name}&to={start}")).await, 0);
    assert_eq!(count(format!("/records?stream={name}&to={}", start + 1)).await, 1);
    assert_eq!(
        count(format!("/records?stream={name}&from={start}&to={}", start + 1)).await,
        1
    );

    let (status, body) = api(&server, "DELETE", &format!("/records/{id}"), t, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(moto.object(&key).await.is_none(), "the object was deleted");
    assert_eq!(count(format!("/records?stream={name}")).await, 0);
    let (status, _) = api(&server, "GET", &format!("/records/{id}"), t, None).await;
    assert_eq!(status, 404);
    moto.down().await;
}
