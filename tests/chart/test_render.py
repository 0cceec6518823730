"""The chart rendered with the real Helm engine: lint, strict schema validation of every object,
the base config accepted by the real server binary, and what each value set must produce."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

from conftest import (CHART, KUBE_VERSIONS, NAMESPACE, RELEASE, VALUE_SETS, find, helm,
                      merged_values, monitoring_schema, objects, one, render, server_bin, strip)

MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def test_lint_strict_has_no_findings(value_set):
    name, values = value_set
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    assert report["errors"] == [], f"{name}: {report}"
    # Severity 1 is informational ("icon is recommended"); warnings and errors must not occur.
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], f"{name}: {report['messages']}"


def test_every_object_is_valid_strictly(value_set):
    name, values = value_set
    objs = objects(values)
    assert objs, f"{name}: nothing rendered"
    for o in objs:
        obj = strip(o)
        what = f"{name}: {o['kind']} {o['metadata'].get('name')} ({o['__template__']})"
        if o["kind"] in MONITORING_KINDS:
            # Not in kubernetes-validate: checked against strict subsets of the
            # prometheus-operator CRD schemas (tests/chart/schemas), unknown fields refused.
            try:
                jsonschema.validate(obj, monitoring_schema(o["kind"]))
            except jsonschema.ValidationError as e:
                pytest.fail(f"{what}: {e.message} at {list(e.absolute_path)}")
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except ValidationError as e:
                pytest.fail(f"{what} on Kubernetes {version}: {e.message} at {list(e.absolute_path)}")
            except SchemaNotFoundError as e:
                pytest.fail(f"{what}: {e.message}")


def test_every_object_is_namespaced_in_the_release_namespace(value_set):
    """...but the operator's Role and RoleBinding in each watched namespace."""
    name, values = value_set
    watched = set(merged_values(values)["operator"]["watchNamespaces"]) - {NAMESPACE}
    for o in objects(values):
        if o["kind"] == "CustomResourceDefinition":
            assert "namespace" not in o["metadata"], o["metadata"]
        elif o["kind"] in ("Role", "RoleBinding") and o["metadata"]["namespace"] in watched:
            continue
        else:
            assert o["metadata"].get("namespace") == NAMESPACE, f"{name}: {o['kind']} {o['metadata']['name']}"


def base_config(values: dict) -> dict:
    objs = objects(values)
    fullname = merged_values(values).get("fullnameOverride") or RELEASE
    cm = one(objs, "ConfigMap", f"{fullname}-server-base")
    return yaml.safe_load(cm["data"]["ferrocast.yaml"]), cm["data"]["ferrocast.yaml"]


def test_base_config_is_accepted_by_the_server(value_set):
    name, values = value_set
    _, text = base_config(values)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ferrocast.yaml"
        path.write_text(text)
        out = subprocess.run([server_bin(), "--check-config", path], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"{name}: ferrocast --check-config refused the base config:\n{out.stderr}\n{text}"
    assert "ok" in out.stdout


def test_base_config_matches_the_pods(value_set):
    """Ports, probes and the drain time come from one set of values, so they cannot disagree."""
    name, values = value_set
    v = merged_values(values)
    config, _ = base_config(values)
    s = v["server"]
    assert config["rtmp"]["port"] == s["ports"]["rtmp"]
    assert config["http"]["port"] == s["ports"]["http"]
    assert config["admin"]["port"] == s["ports"]["admin"]
    assert "bind" not in config["admin"], "probes need the admin listener on the pod address"
    assert config["tls"] == {"rtmps_port": s["ports"]["rtmps"], "https_port": s["ports"]["https"]}
    assert config["hub"]["drain_secs"] == s["shutdown"]["drainSeconds"]
    assert config["hub"]["shutdown_grace_secs"] == s["shutdown"]["graceSeconds"]
    # The pods are one fleet: peers from the headless Service, the secret from the fleet Secret.
    fullname = v.get("fullnameOverride") or RELEASE
    assert config["cluster"]["dns"].startswith(f"{fullname}-server-headless.")
    assert config["cluster"]["dns"].endswith(f".svc.cluster.local:{s['ports']['admin']}")
    assert config["cluster"]["secret_file"] == "/etc/ferrocast/secrets/cluster.secret"
    assert "apps" not in config, "apps come from MediaApps, written by the operator"
    for key, value in (s["config"].get("hub") or {}).items():
        assert config["hub"][key] == value, f"{name}: server.config.hub.{key} lost"

    fullname = v.get("fullnameOverride") or RELEASE
    deploy = one(objects(values), "Deployment", f"{fullname}-server")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["rtmp"] == config["rtmp"]["port"]
    assert ports["http"] == config["http"]["port"]
    assert ports["admin"] == config["admin"]["port"]
    # Always declared: the operator's per-app Services target these names (a MediaApp can bring
    # TLS without server.tls.enabled), and a named target follows a port change pod by pod.
    assert (ports["rtmps"], ports["https"]) == (config["tls"]["rtmps_port"], config["tls"]["https_port"])


def test_proxy_protocol_values_render_into_the_server_config():
    """server.proxyProtocol turns PROXY protocol on; while client addresses are hidden (Cluster
    traffic policy without it) the per-address connection limits are lifted to the totals."""
    config, _ = base_config(VALUE_SETS["proxy-protocol"])
    assert config["proxy_protocol"] == {"listeners": ["rtmp", "http"], "trusted_cidrs": ["10.0.0.0/16"],
                                        "header_timeout_secs": 5}
    assert "max_connections_per_ip" not in config["rtmp"], "client addresses are real: server default"
    hidden, _ = base_config({})
    assert "proxy_protocol" not in hidden
    assert hidden["rtmp"]["max_connections_per_ip"] == hidden["rtmp"]["max_connections"]
    assert hidden["http"]["max_connections_per_ip"] == hidden["http"]["max_connections"]
    local, _ = base_config({"server": {"service": {"externalTrafficPolicy": "Local"}}})
    assert "max_connections_per_ip" not in local["http"], "Local keeps client addresses"
    chosen, _ = base_config({"server": {"config": {"http": {"max_connections_per_ip": 50}}}})
    assert chosen["http"]["max_connections_per_ip"] == 50, "an explicit value stays"


def test_proxy_protocol_needs_trusted_addresses():
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError) as e:
            chart.render({"server": {"proxyProtocol": {"enabled": True}}}, name=RELEASE, namespace=NAMESPACE,
                         is_install=True)
    assert "/server/proxyProtocol/trustedCidrs" in str(e.value), str(e.value)


def test_bad_values_are_refused_with_a_clear_message():
    cases = [
        ({"server": {"replicas": "three"}}, "/server/replicas", "want integer"),
        ({"server": {"service": {"type": "Ingress"}}}, "/server/service/type", "'LoadBalancer', 'NodePort', 'ClusterIP'"),
        ({"server": {"ports": {"rtmp": 70000}}}, "/server/ports/rtmp", "maximum"),
        ({"server": {"config": {"rtmp": {"port": 1936}}}}, "/server/config/rtmp", "'port' not allowed"),
        ({"server": {"config": {"apps": [{"name": "live"}]}}}, "/server/config", "'apps' not allowed"),
        ({"server": {"config": {"webhooks": {"hooks": [{"url": "https://x.example"}]}}}},
         "/server/config/webhooks/hooks/0/url", "does not match"),
        ({"server": {"config": {"log": {"format": "xml"}}}}, "/server/config/log/format", "'human', 'json'"),
        ({"server": {"service": {"loadBalancerSourceRanges": ["everyone"]}}},
         "/server/service/loadBalancerSourceRanges/0", "does not match"),
        ({"server": {"service": {"nodePorts": {"rtmp": 1935}}}}, "/server/service/nodePorts/rtmp", "minimum"),
        ({"server": {"replica": 2}}, "/server", "'replica' not allowed"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy", "'Always', 'IfNotPresent', 'Never'"),
        ({"crds": {"enabled": "yes"}}, "/crds/enabled", "want boolean"),
        ({"operator": {"watchNamespaces": ["Team_A"]}}, "/operator/watchNamespaces/0", "does not match"),
        ({"operator": {"watchNamespaces": "team-a,team-b"}}, "/operator/watchNamespaces", "want array"),
        ({"metrics": {"serviceMonitor": {"interval": "half a minute"}}}, "/metrics/serviceMonitor/interval", "does not match"),
        ({"metrics": {"prometheusRule": {"disabled": ["NoSuchAlert"]}}}, "/metrics/prometheusRule/disabled/0", "must be one of"),
    ]
    with helm.Chart.load(CHART) as chart:
        for values, where, message in cases:
            with pytest.raises(helm.HelmValuesError) as e:
                chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            text = str(e.value)
            assert where in text and message in text, f"{values}: unclear message:\n{text}"


def test_inconsistent_values_fail_rendering_with_a_reason():
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmError) as e:
            chart.render({"metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}},
                         name=RELEASE, namespace=NAMESPACE, is_install=True)
        assert "serviceMonitor or podMonitor, not both" in str(e.value)
        with pytest.raises(helm.HelmError) as e:
            chart.render({"server": {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}}},
                         name=RELEASE, namespace=NAMESPACE, is_install=True)
        assert "targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" in str(e.value)


def test_value_sets_cover_the_cases_the_issue_names():
    assert {"default", "tls", "servicemonitor", "hpa", "crds-off", "nodeport"} <= set(VALUE_SETS)


def test_notes_tell_how_to_reach_rtmp_and_publish():
    for name, values, must in [
        ("default", {}, ["get svc ferrocast-server", ".status.loadBalancer.ingress[0].ip",
                         "rtmp://$FERROCAST_HOST:$RTMP_PORT/live/first", "RTMP_PORT=1935", "ffplay"]),
        ("nodeport", VALUE_SETS["nodeport"], ['{.spec.ports[?(@.name=="rtmp")].nodePort}', "/live/first"]),
        ("clusterip", VALUE_SETS["clusterip"], ["port-forward svc/ferrocast-server 1935:1935"]),
        ("tuned", VALUE_SETS["tuned"], ["The server fleet", "label my_dashboards=yes"]),
    ]:
        notes = render(values)["ferrocast/templates/NOTES.txt"]
        for text in must:
            assert text in notes, f"{name}: NOTES.txt lacks {text!r}:\n{notes}"
    assert "The server fleet" not in render({"server": {"replicas": 1}})["ferrocast/templates/NOTES.txt"]


def test_notes_tell_how_to_remove_what_the_operator_made_after_uninstall():
    """Per-app LoadBalancer Services outlive the release (their MediaApps stay): the notes
    name them and give this release's cleanup selector, never another release's."""
    for name, values, fullname, lease in [("default", {}, "ferrocast", "ferrocast-operator"),
                                          ("second-release", VALUE_SETS["second-release"], "studio-b", "studio-b-operator")]:
        notes = render(values)["ferrocast/templates/NOTES.txt"]
        for text in ["per-app Services",
                     f"kubectl -n {NAMESPACE} delete svc,configmap,secret -l app.kubernetes.io/managed-by=ferrocast-operator,ferrocast.io/fleet={fullname}\n",
                     f"kubectl -n {NAMESPACE} delete lease {lease}\n"]:
            assert text in notes, f"{name}: NOTES.txt lacks {text!r}:\n{notes}"


def test_kubernetes_validate_cli_accepts_the_default_render(tmp_path):
    """The same check through the `kubernetes-validate --strict` command line, as CI tools run it."""
    import sys
    docs = [strip(o) for o in objects({}) if o["kind"] not in MONITORING_KINDS]
    path = tmp_path / "ferrocast.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    cli = Path(sys.executable).parent / "kubernetes-validate"
    for version in KUBE_VERSIONS:
        out = subprocess.run([cli, "--strict", "--quiet", "-k", version, path], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"kubernetes-validate --strict -k {version}:\n{out.stdout}{out.stderr}"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**docs[0], "spec": {"bogus": 1}} if "spec" in docs[0] else {**docs[0], "bogus": 1}))
    out = subprocess.run([cli, "--strict", "--quiet", bad], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0, "an unknown field must be refused"


# Server settings that values never set: the chart derives them from server.ports,
# server.shutdown and server.proxyProtocol, and the operator from MediaApps and StreamAuths (it replaces apps and TLS
# certificates and points the API at the users and token key of a StreamAuth).
SETTINGS_NOT_IN_VALUES = {
    "rtmp.port", "http.port", "admin.port", "admin.bind", "hub.shutdown_grace_secs", "hub.drain_secs",
    # The fleet: from the headless Service and the operator's fleet Secret.
    "cluster.peers", "cluster.dns", "cluster.dns_refresh_secs", "cluster.secret_file", "cluster.pod_name",
    "cluster.lookup_timeout_ms", "cluster.lookup_cache_ms",
    "tls.rtmps_port", "tls.https_port", "tls.certificates", "apps",
    "api.users_dir", "api.users_file", "api.jwt_secret_file", "revision.id", "revision.file",
    # From server.proxyProtocol.
    "proxy_protocol.listeners", "proxy_protocol.trusted_cidrs", "proxy_protocol.header_timeout_secs",
}


def test_values_schema_knows_every_server_setting():
    """server.config in values.schema.json follows the server's config format: a setting the
    server gains (or loses) must be added to (or removed from) the schema and the README."""
    out = subprocess.run([server_bin(), "--print-config"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr

    def paths(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from paths(v, f"{prefix}{k}.")
            else:
                yield prefix + k

    def schema_paths(s, prefix=""):
        for k, v in s.get("properties", {}).items():
            if v.get("type") == "object" and "properties" in v:
                yield from schema_paths(v, f"{prefix}{k}.")
            else:
                yield prefix + k

    server = set(paths(yaml.safe_load(out.stdout)))
    assert SETTINGS_NOT_IN_VALUES <= server, f"settings gone from the server: {sorted(SETTINGS_NOT_IN_VALUES - server)}"
    with helm.Chart.load(CHART) as chart:
        schema = chart.schema["properties"]["server"]["properties"]["config"]
    in_schema = set(schema_paths(schema))
    assert sorted(server - SETTINGS_NOT_IN_VALUES - in_schema) == [], "server settings values.schema.json refuses"
    assert sorted(in_schema - server) == [], "values.schema.json allows settings the server does not know"
