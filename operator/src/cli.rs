//! The operator's command line: every flag also reads an environment variable (the Helm
//! chart sets those). A flag wins over its variable.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

pub const USAGE: &str = "\
ferrocast-operator: reconciles MediaApp and StreamAuth resources into the Ferrocast fleet's
ConfigMap, Secret and Services

USAGE:
    ferrocast-operator [OPTIONS]

OPTIONS (each also read from the environment variable shown):
    --namespace NS            FERROCAST_NAMESPACE         namespace of the fleet and its resources
                                                          (default: $POD_NAMESPACE, else `default`)
    --watch-namespaces A,B    FERROCAST_WATCH_NAMESPACES  further namespaces whose MediaApps and
                                                          StreamAuths the fleet serves (default:
                                                          none; the fleet stays in --namespace)
    --fleet NAME              FERROCAST_FLEET             the fleet's name: per-app Services are
                                                          NAME-<mediaapp>, the field manager
                                                          NAME-operator (default: ferrocast)
    --serve-unlabelled BOOL   FERROCAST_SERVE_UNLABELLED  also serve MediaApps and StreamAuths
                                                          without a ferrocast.io/fleet label
                                                          (default: true; one fleet per namespace)
    --server-selector SEL     FERROCAST_SERVER_SELECTOR   labels of the server pods, k=v,k=v
                              (default: app.kubernetes.io/name=ferrocast,app.kubernetes.io/component=server)
    --config-map NAME         FERROCAST_CONFIG_MAP        (default: ferrocast-server-config)
    --secret NAME             FERROCAST_SECRET            (default: ferrocast-server-secrets)
    --base-config FILE        FERROCAST_BASE_CONFIG       fleet-wide server settings (server format)
    --server-admin-port PORT  FERROCAST_SERVER_ADMIN_PORT server pods' admin port (default: 9090)
    --metrics-addr ADDR       FERROCAST_METRICS_ADDR      /metrics /healthz /readyz (default: 0.0.0.0:8080)
    --log-json                FERROCAST_LOG_JSON          log JSON lines (true/1)
    --lease-name NAME         FERROCAST_LEASE_NAME        leader Lease (default: ferrocast-operator);
                                                          identity from $POD_NAME, else the host name
    -h, --help                this help
    -V, --version             version
";

/// Parsed options.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub namespace: String,
    /// Further namespaces served (never the fleet namespace itself; no duplicates).
    pub watch_namespaces: Vec<String>,
    pub fleet: String,
    pub serve_unlabelled: bool,
    pub server_selector: BTreeMap<String, String>,
    pub config_map: String,
    pub secret: String,
    pub base_config: Option<PathBuf>,
    pub server_admin_port: u16,
    pub metrics_addr: SocketAddr,
    pub log_json: bool,
    pub lease_name: String,
    pub identity: String,
}

#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Box<Options>),
    Help,
    Version,
}

pub const DEFAULT_SELECTOR: &str = "app.kubernetes.io/name=ferrocast,app.kubernetes.io/component=server";

/// Parses `k=v,k=v` (equality only: a Service selector is a plain label map).
pub fn parse_selector(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("selector part {part:?} is not key=value"))?;
        let (k, v) = (k.trim(), v.trim().trim_start_matches('='));
        if k.is_empty() || k.contains('!') || v.contains(['=', '!', '(', ')', ' ']) {
            return Err(format!("selector part {part:?}: only key=value equality is supported"));
        }
        map.insert(k.to_string(), v.to_string());
    }
    if map.is_empty() {
        return Err("the server selector is empty; it must select the server pods".into());
    }
    Ok(map)
}

/// Whether `s` is a namespace name (a DNS-1123 label).
fn is_namespace_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Parses `a,b` into namespaces to watch besides `fleet_namespace` (which is left out when
/// listed, as are duplicates).
pub fn parse_namespaces(s: &str, fleet_namespace: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for ns in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !is_namespace_name(ns) {
            return Err(format!(
                "--watch-namespaces: {ns:?} is not a namespace name (1-63 lowercase letters, digits and -)"
            ));
        }
        if ns != fleet_namespace && !out.iter().any(|o| o == ns) {
            out.push(ns.to_string());
        }
    }
    Ok(out)
}

/// The selector in the API's `labelSelector` query form.
pub fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses arguments (without the program name) and the environment (`env` looks a name up).
pub fn parse(args: impl IntoIterator<Item = String>, env: impl Fn(&str) -> Option<String>) -> Result<Command, String> {
    let mut flags: BTreeMap<&str, String> = BTreeMap::new();
    let mut log_json = None;
    let mut args = args.into_iter();
    const VALUED: &[&str] = &[
        "--namespace",
        "--watch-namespaces",
        "--fleet",
        "--serve-unlabelled",
        "--server-selector",
        "--config-map",
        "--secret",
        "--base-config",
        "--server-admin-port",
        "--metrics-addr",
        "--lease-name",
    ];
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--log-json" => log_json = Some(true),
            other => {
                let (flag, inline) = match other.split_once('=') {
                    Some((f, v)) => (f, Some(v.to_string())),
                    None => (other, None),
                };
                let Some(flag) = VALUED.iter().find(|f| **f == flag) else {
                    return Err(format!("unknown argument {other:?} (see --help)"));
                };
                let value = match inline {
                    Some(v) => v,
                    None => args.next().ok_or_else(|| format!("{flag} needs a value"))?,
                };
                flags.insert(flag, value);
            }
        }
    }
    let get = |flag: &str, var: &str| flags.get(flag).cloned().or_else(|| env(var).filter(|v| !v.is_empty()));
    let namespace = get("--namespace", "FERROCAST_NAMESPACE")
        .or_else(|| env("POD_NAMESPACE").filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "default".into());
    let watch_namespaces = parse_namespaces(
        &get("--watch-namespaces", "FERROCAST_WATCH_NAMESPACES").unwrap_or_default(),
        &namespace,
    )?;
    let server_selector = parse_selector(
        &get("--server-selector", "FERROCAST_SERVER_SELECTOR").unwrap_or_else(|| DEFAULT_SELECTOR.into()),
    )?;
    let server_admin_port = match get("--server-admin-port", "FERROCAST_SERVER_ADMIN_PORT") {
        Some(p) => p
            .parse()
            .map_err(|_| format!("--server-admin-port: {p:?} is not a port"))?,
        None => 9090,
    };
    let metrics_addr = match get("--metrics-addr", "FERROCAST_METRICS_ADDR") {
        Some(a) => a
            .parse()
            .map_err(|_| format!("--metrics-addr: {a:?} is not an address such as 0.0.0.0:8080"))?,
        None => SocketAddr::from(([0, 0, 0, 0], 8080)),
    };
    let log_json = log_json.unwrap_or_else(|| {
        env("FERROCAST_LOG_JSON").is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
    });
    let fleet = get("--fleet", "FERROCAST_FLEET").unwrap_or_else(|| "ferrocast".into());
    // A DNS label of at most 40 characters, so `<fleet>-<mediaapp>` Service names fit.
    if fleet.is_empty()
        || fleet.len() > 40
        || !fleet.starts_with(|c: char| c.is_ascii_lowercase())
        || fleet.ends_with('-')
        || !fleet
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "--fleet: {fleet:?} must be 1-40 lowercase letters, digits and -, starting with a letter"
        ));
    }
    let serve_unlabelled = match get("--serve-unlabelled", "FERROCAST_SERVE_UNLABELLED") {
        None => true,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" => true,
            "0" | "false" | "no" => false,
            _ => return Err(format!("--serve-unlabelled: {v:?} is not true or false")),
        },
    };
    let identity = env("POD_NAME")
        .filter(|v| !v.is_empty())
        .or_else(|| env("HOSTNAME").filter(|v| !v.is_empty()))
        .unwrap_or_else(|| format!("ferrocast-operator-{}", std::process::id()));
    Ok(Command::Run(Box::new(Options {
        namespace,
        watch_namespaces,
        fleet,
        serve_unlabelled,
        server_selector,
        config_map: get("--config-map", "FERROCAST_CONFIG_MAP").unwrap_or_else(|| "ferrocast-server-config".into()),
        secret: get("--secret", "FERROCAST_SECRET").unwrap_or_else(|| "ferrocast-server-secrets".into()),
        base_config: get("--base-config", "FERROCAST_BASE_CONFIG").map(PathBuf::from),
        server_admin_port,
        metrics_addr,
        log_json,
        lease_name: get("--lease-name", "FERROCAST_LEASE_NAME").unwrap_or_else(|| "ferrocast-operator".into()),
        identity,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Options, String> {
        let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        match parse(args.iter().map(|s| s.to_string()), |k| env.get(k).cloned())? {
            Command::Run(o) => Ok(*o),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let o = run(&[], &[("POD_NAME", "op-0")]).unwrap();
        assert_eq!(o.namespace, "default");
        assert!(o.watch_namespaces.is_empty(), "only the fleet namespace by default");
        assert_eq!((o.fleet.as_str(), o.serve_unlabelled), ("ferrocast", true));
        assert_eq!(
            selector_string(&o.server_selector),
            "app.kubernetes.io/component=server,app.kubernetes.io/name=ferrocast"
        );
        assert_eq!(
            (o.config_map.as_str(), o.secret.as_str()),
            ("ferrocast-server-config", "ferrocast-server-secrets")
        );
        assert_eq!(
            (o.server_admin_port, o.metrics_addr.to_string()),
            (9090, "0.0.0.0:8080".to_string())
        );
        assert_eq!(
            (o.lease_name.as_str(), o.identity.as_str(), o.log_json, o.base_config),
            ("ferrocast-operator", "op-0", false, None)
        );
    }

    #[test]
    fn env_vars_apply_and_flags_win() {
        let env = [
            ("POD_NAMESPACE", "pod-ns"),
            ("FERROCAST_NAMESPACE", "streaming"),
            ("FERROCAST_SERVER_SELECTOR", "app=fc, tier=edge"),
            ("FERROCAST_CONFIG_MAP", "cm"),
            ("FERROCAST_SECRET", "sec"),
            ("FERROCAST_BASE_CONFIG", "/etc/base.yaml"),
            ("FERROCAST_SERVER_ADMIN_PORT", "19090"),
            ("FERROCAST_METRICS_ADDR", "127.0.0.1:9000"),
            ("FERROCAST_LOG_JSON", "true"),
            ("FERROCAST_LEASE_NAME", "lease"),
        ];
        let o = run(&[], &env).unwrap();
        assert_eq!(o.namespace, "streaming");
        assert_eq!(
            o.server_selector,
            BTreeMap::from([("app".into(), "fc".into()), ("tier".into(), "edge".into())])
        );
        assert_eq!(
            (o.config_map.as_str(), o.secret.as_str(), o.lease_name.as_str()),
            ("cm", "sec", "lease")
        );
        assert_eq!(o.base_config, Some(PathBuf::from("/etc/base.yaml")));
        assert_eq!(
            (o.server_admin_port, o.metrics_addr.port(), o.log_json),
            (19090, 9000, true)
        );
        let o = run(&["--namespace", "flag-ns", "--config-map=cm2", "--log-json"], &env).unwrap();
        assert_eq!((o.namespace.as_str(), o.config_map.as_str()), ("flag-ns", "cm2"));
        // Watched namespaces: trimmed, deduplicated, without the fleet's own.
        let env = [
            ("FERROCAST_NAMESPACE", "streaming"),
            ("FERROCAST_WATCH_NAMESPACES", " team-a, team-b,,team-a ,streaming"),
        ];
        assert_eq!(run(&[], &env).unwrap().watch_namespaces, ["team-a", "team-b"]);
        assert_eq!(
            run(&["--watch-namespaces", "studio"], &env).unwrap().watch_namespaces,
            ["studio"],
            "the flag wins"
        );
        assert_eq!(run(&[], &[("POD_NAMESPACE", "pod-ns")]).unwrap().namespace, "pod-ns");
    }

    #[test]
    fn bad_input_is_refused_with_a_message() {
        for (args, want) in [
            (vec!["--nope"], "unknown argument"),
            (vec!["--namespace"], "needs a value"),
            (vec!["--server-admin-port", "x"], "not a port"),
            (vec!["--metrics-addr", "8080"], "not an address"),
            (vec!["--server-selector", "app in (a,b)"], "key=value"),
            (vec!["--server-selector", "app!=x"], "equality"),
            (vec!["--server-selector", ","], "empty"),
            (vec!["--fleet", "Media_1"], "lowercase"),
            (vec!["--serve-unlabelled", "maybe"], "true or false"),
            (
                vec!["--watch-namespaces", "team-a,Team_B"],
                "\"Team_B\" is not a namespace name",
            ),
            (vec!["--watch-namespaces", "a/b"], "not a namespace name"),
        ] {
            let err = run(&args, &[]).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
        assert_eq!(parse(["--help".to_string()], |_| None), Ok(Command::Help));
    }
}
