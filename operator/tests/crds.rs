//! crds/ is what the types generate; the examples validate against the generated schemas;
//! every CEL rule has a Rust twin and refuses what it should.

mod common;

use ferrocast_operator::crd::{crd_files, MediaApp, StreamAuth, CEL_RULES};
use ferrocast_operator::validate::validate;
use kube::CustomResourceExt;
use serde_json::Value;

#[test]
fn crds_directory_equals_crdgen_output() {
    let dir = common::workspace().join("crds");
    let files = crd_files();
    for (name, yaml) in &files {
        let on_disk = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert!(
            on_disk == *yaml,
            "crds/{name} differs from the types; run `cargo run -p ferrocast-operator --bin crdgen`"
        );
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    let mut expected: Vec<String> = files.iter().map(|(n, _)| n.to_string()).collect();
    expected.sort();
    assert_eq!(present, expected, "crds/ holds exactly one file per CRD");
}

fn crd_json(kind: &str) -> Value {
    let crd = match kind {
        "MediaApp" => MediaApp::crd(),
        "StreamAuth" => StreamAuth::crd(),
        other => panic!("no CRD for {other}"),
    };
    serde_json::to_value(crd).unwrap()
}

#[test]
fn examples_validate_against_the_generated_schemas() {
    let m = common::examples();
    let mut checked = 0;
    for doc in &m.documents {
        let kind = doc["kind"].as_str().unwrap();
        if kind == "Secret" {
            continue;
        }
        if let Err(errors) = validate(&crd_json(kind), doc) {
            panic!("{kind} {}: {errors:?}", doc["metadata"]["name"]);
        }
        checked += 1;
    }
    assert_eq!((m.media_apps.len(), m.stream_auths.len()), (4, 3));
    assert_eq!(checked, 7);
}

fn rules_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                out.extend(rules.iter().filter_map(|r| r["rule"].as_str().map(String::from)));
            }
            map.values().for_each(|c| rules_in(c, out));
        }
        Value::Array(items) => items.iter().for_each(|c| rules_in(c, out)),
        _ => {}
    }
}

#[test]
fn every_cel_rule_in_the_crds_has_a_rust_twin_and_every_twin_is_used() {
    let mut found = Vec::new();
    rules_in(&crd_json("MediaApp"), &mut found);
    rules_in(&crd_json("StreamAuth"), &mut found);
    found.sort();
    found.dedup();
    let mut twins: Vec<String> = CEL_RULES.iter().map(|r| r.rule.to_string()).collect();
    twins.sort();
    assert_eq!(found, twins);
}

/// (case, manifest, a fragment of the expected error)
const REFUSED: &[(&str, &str, &str)] = &[
    ("key auth without authRef", "kind: MediaApp\nmetadata: {name: a}\nspec: {publish: {auth: key}}", "authRef (a StreamAuth) is required"),
    ("empty authRef name", "kind: MediaApp\nmetadata: {name: a}\nspec: {play: {auth: sign, authRef: {name: ''}}}", "shorter than 1"),
    ("authRef as a bare name", "kind: MediaApp\nmetadata: {name: a}\nspec: {play: {auth: sign, authRef: studio}}", "expected object"),
    ("app name charset", "kind: MediaApp\nmetadata: {name: a}\nspec: {app: 'live/x'}", "app must be 1-128 characters"),
    ("app name ..", "kind: MediaApp\nmetadata: {name: a}\nspec: {app: '..'}", "app must be 1-128 characters"),
    ("app name too long", "kind: MediaApp\nmetadata: {name: a}\nspec: {app: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'}", "longer than 128"),
    ("unknown auth mode", "kind: MediaApp\nmetadata: {name: a}\nspec: {publish: {auth: password, authRef: x}}", "is not one of"),
    ("port out of range", "kind: MediaApp\nmetadata: {name: a}\nspec: {service: {ports: {rtmp: 70000}}}", "above the maximum"),
    ("port zero", "kind: MediaApp\nmetadata: {name: a}\nspec: {service: {ports: {http: 0}}}", "below the minimum"),
    ("ports clash", "kind: MediaApp\nmetadata: {name: a}\nspec: {service: {ports: {rtmp: 8000}}}", "ports must all differ"),
    ("source ranges on ClusterIP", "kind: MediaApp\nmetadata: {name: a}\nspec: {service: {type: ClusterIP, loadBalancerSourceRanges: [10.0.0.0/8]}}", "only apply to type LoadBalancer"),
    ("load balancer class on NodePort", "kind: MediaApp\nmetadata: {name: a}\nspec: {service: {type: NodePort, loadBalancerClass: service.k8s.aws/nlb}}", "loadBalancerClass only applies"),
    ("traffic policy on ClusterIP", "kind: MediaApp\nmetadata: {name: a}\nspec: {service: {type: ClusterIP, externalTrafficPolicy: Local}}", "externalTrafficPolicy only applies"),
    ("unknown service type", "kind: MediaApp\nmetadata: {name: a}\nspec: {service: {type: ExternalName}}", "is not one of"),
    ("generated certificate without hosts", "kind: MediaApp\nmetadata: {name: a}\nspec: {tls: {enabled: true}}", "needs at least one host"),
    ("bad host", "kind: MediaApp\nmetadata: {name: a}\nspec: {tls: {hosts: ['a b.example.com']}}", "hosts must be DNS names"),
    ("wildcard in the middle", "kind: MediaApp\nmetadata: {name: a}\nspec: {tls: {hosts: ['a.*.example.com']}}", "hosts must be DNS names"),
    ("https webhook", "kind: MediaApp\nmetadata: {name: a}\nspec: {webhooks: [{url: 'https://hooks.example.com/x'}]}", "webhook URLs must be http://"),
    ("unknown webhook event", "kind: MediaApp\nmetadata: {name: a}\nspec: {webhooks: [{url: 'http://h/x', events: [onPublish]}]}", "is not one of"),
    ("bad CIDR", "kind: MediaApp\nmetadata: {name: a}\nspec: {publish: {allow: [10.0.0.0/33]}}", "entries must be CIDRs"),
    ("bad play deny entry", "kind: MediaApp\nmetadata: {name: a}\nspec: {play: {deny: [everyone]}}", "entries must be CIDRs"),
    ("app-wide allow (moved under publish and play)", "kind: MediaApp\nmetadata: {name: a}\nspec: {allow: [10.0.0.0/8]}", ".spec.allow: unknown field"),
    ("service type None (an absent service means none)", "kind: MediaApp\nmetadata: {name: a}\nspec: {service: {type: None}}", "is not one of"),
    ("unknown field", "kind: MediaApp\nmetadata: {name: a}\nspec: {gop: true}", ".spec.gop: unknown field"),
    ("wrong type", "kind: MediaApp\nmetadata: {name: a}\nspec: {gopCache: 'yes'}", "expected boolean"),
    ("empty StreamAuth", "kind: StreamAuth\nmetadata: {name: s}\nspec: {}", "configure at least one of"),
    ("sign without secrets", "kind: StreamAuth\nmetadata: {name: s}\nspec: {sign: {secretRefs: []}}", "needs at least 1 items"),
    ("secret ref without key", "kind: StreamAuth\nmetadata: {name: s}\nspec: {sign: {secretRefs: [{name: x}]}}", "key: required"),
    ("unknown algorithm", "kind: StreamAuth\nmetadata: {name: s}\nspec: {tokens: {algorithm: none, keySecretRefs: [{name: x, key: k}]}}", "is not one of"),
];

#[test]
fn cel_rules_and_schema_constraints_refuse_bad_manifests() {
    for (case, yaml, want) in REFUSED {
        let mut doc: Value = serde_yaml::from_str(yaml).unwrap();
        doc["apiVersion"] = "ferrocast.io/v1alpha1".into();
        let kind = doc["kind"].as_str().unwrap().to_string();
        let errors = validate(&crd_json(&kind), &doc).expect_err(case);
        assert!(errors.iter().any(|e| e.contains(want)), "{case}: {errors:?}");
    }
}

#[test]
fn minimal_resources_are_valid_with_defaults() {
    for yaml in [
        "kind: MediaApp\nmetadata: {name: live}\nspec: {}",
        "kind: MediaApp\nmetadata: {name: live}\nspec: {service: {}, tls: {secretName: t}}",
        "kind: MediaApp\nmetadata: {name: live}\nspec: {tls: {enabled: false}, publish: {allow: ['10.0.0.0/8', '192.0.2.1', '2001:db8::/32']}}",
        "kind: MediaApp\nmetadata: {name: live}\nspec: {publish: {auth: key, authRef: {name: studio}, allow: [198.51.100.0/24]}, play: {auth: none}}",
        "kind: StreamAuth\nmetadata: {name: s}\nspec: {keys: {secretRef: {name: k}}}",
    ] {
        let mut doc: Value = serde_yaml::from_str(yaml).unwrap();
        doc["apiVersion"] = "ferrocast.io/v1alpha1".into();
        let kind = doc["kind"].as_str().unwrap().to_string();
        assert_eq!(validate(&crd_json(&kind), &doc), Ok(()), "{yaml}");
    }
}

/// The names of the functions a CEL expression calls (`name(` and `.name(`).
fn cel_calls(rule: &str) -> Vec<String> {
    let mut calls = Vec::new();
    let mut word = String::new();
    for c in rule.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if c == '(' && !word.is_empty() {
            calls.push(word.clone());
        }
        word.clear();
    }
    calls
}

#[test]
fn cel_rules_only_call_functions_of_the_minimum_kubernetes() {
    use ferrocast_operator::crd::{CEL_FUNCTIONS_SINCE, MIN_KUBERNETES};
    for r in CEL_RULES {
        for call in cel_calls(r.rule) {
            if let Some((_, since)) = CEL_FUNCTIONS_SINCE.iter().find(|(f, _)| *f == call) {
                assert!(
                    *since <= MIN_KUBERNETES.1,
                    "{}: {call}() needs Kubernetes 1.{since}, the minimum is 1.{}",
                    r.on,
                    MIN_KUBERNETES.1
                );
            }
        }
    }
}

#[test]
fn chart_and_docs_claim_the_minimum_kubernetes_the_crds_need() {
    use ferrocast_operator::crd::MIN_KUBERNETES;
    let (major, minor) = MIN_KUBERNETES;
    let root = common::workspace();
    let chart = std::fs::read_to_string(root.join("charts/ferrocast/Chart.yaml")).unwrap();
    let kube_version = chart
        .lines()
        .find_map(|l| l.strip_prefix("kubeVersion:"))
        .expect("Chart.yaml kubeVersion")
        .trim()
        .trim_matches('"');
    assert_eq!(kube_version, format!(">={major}.{minor}.0-0"), "Chart.yaml kubeVersion");
    // Every "Kubernetes 1.NN" claim in the user-facing docs names the minimum.
    for doc in [
        "README.md",
        "docs/kubernetes.md",
        "docs/crds.md",
        "docs/operator.md",
        "charts/ferrocast/README.md",
        "tests/README.md",
    ] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        let mut claims = 0;
        for (i, _) in text.match_indices("Kubernetes 1.") {
            let digits: String = text[i + "Kubernetes 1.".len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            claims += 1;
            assert_eq!(digits, minor.to_string(), "{doc}: claims Kubernetes 1.{digits}");
        }
        if doc == "docs/kubernetes.md" || doc == "charts/ferrocast/README.md" {
            assert!(claims > 0, "{doc} states the minimum Kubernetes version");
        }
    }
}
