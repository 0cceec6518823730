"""Shared fixtures of the chart tests: paths, the rendered chart for named value sets, and
validators. Run with the project venv: `.tools/venv/bin/python -m pytest tests/chart`
(scripts/test.sh installs what they need; tests/tests/chart.rs runs them from `cargo test`)."""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path

import pytest

try:
    import helm_python as helm
except ImportError as e:  # never skip: name the tool
    raise SystemExit(f"missing tool helm-python-sdk (import helm_python): run scripts/test.sh ({e})")
try:
    import kubernetes_validate
except ImportError as e:
    raise SystemExit(f"missing tool kubernetes-validate: run scripts/test.sh ({e})")
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ferrocast"
RELEASE = "ferrocast"
NAMESPACE = "streaming"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion, ">=1.N.0-0") and the newest
# kubernetes-validate knows: every object must be valid on both.
MIN_KUBE_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"].removeprefix(">=").removesuffix("-0")
KUBE_VERSIONS = [MIN_KUBE_VERSION, kubernetes_validate.utils.latest_version()]

# Named value sets: each is rendered, linted, validated and its base config checked.
VALUE_SETS: dict[str, dict] = {
    "default": {},
    "tls": {"server": {"tls": {"enabled": True}}},
    "servicemonitor": {
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"},
                               "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_node_name"],
                                                "targetLabel": "node"}]},
            "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        },
    },
    "podmonitor": {"metrics": {"podMonitor": {"enabled": True}}},
    "hpa": {"server": {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12,
                                       "targetMemoryUtilizationPercentage": 80}}},
    "crds-off": {"crds": {"enabled": False}},
    "networkpolicy": {"networkPolicy": {"enabled": True, "metricsFrom": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}},
    "second-release": {"fullnameOverride": "studio-b", "crds": {"enabled": False},
                       "operator": {"serveUnlabelled": False}},
    "crds-not-kept": {"crds": {"keep": False}},
    # The release namespace in the list is left out (it has the fleet's own Role).
    "watch-namespaces": {"operator": {"watchNamespaces": ["team-a", "team-b", NAMESPACE]}},
    "nodeport": {"server": {"service": {"type": "NodePort",
                                        "nodePorts": {"rtmp": 31935, "http": 30080}}}},
    "clusterip": {"server": {"service": {"type": "ClusterIP"}}},
    "proxy-protocol": {"server": {"tls": {"enabled": True},
                                  "proxyProtocol": {"enabled": True, "listeners": ["rtmp", "http"],
                                                    "trustedCidrs": ["10.0.0.0/16"]}}},
    "loadbalancer-aws": {
        "server": {
            "tls": {"enabled": True},
            "service": {
                "annotations": {
                    "service.beta.kubernetes.io/aws-load-balancer-type": "external",
                    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
                    "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing",
                },
                "loadBalancerSourceRanges": ["203.0.113.0/24", "198.51.100.7/32"],
                "loadBalancerClass": "service.k8s.aws/nlb",
                "externalTrafficPolicy": "Local",
            },
        },
    },
    "tuned": {
        "fullnameOverride": "media",
        "commonLabels": {"team": "video"},
        "image": {"repository": "registry.example.com/ferrocast", "tag": "1.2.3"},
        "imagePullSecrets": [{"name": "regcred"}],
        "operator": {"replicas": 2, "logJson": False, "extraEnv": [{"name": "RUST_LOG", "value": "debug"}],
                     "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                                    "whenUnsatisfiable": "ScheduleAnyway"}],
                     "extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}],
                     "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/ssl/corp", "readOnly": True}]},
        "server": {
            "replicas": 3,
            "ports": {"rtmp": 11935, "http": 18000, "admin": 19090, "rtmps": 11936, "https": 18443},
            "shutdown": {"preStopSleepSeconds": 20, "drainSeconds": 60, "graceSeconds": 120},
            "config": {
                "bind": "::",
                "log": {"level": "debug"},
                "hub": {"publisher_grace_secs": 20, "play_wait_secs": 10},
                "webhooks": {"on_timeout": "allow",
                             "hooks": [{"url": "http://hooks.media.svc/ferrocast",
                                        "events": ["prePublish", "donePublish"],
                                        "secret_file": "/etc/ferrocast/hooks/hmac"}]},
            },
            "extraVolumes": [{"name": "hooks", "secret": {"secretName": "hooks-hmac"}}],
            "extraVolumeMounts": [{"name": "hooks", "mountPath": "/etc/ferrocast/hooks", "readOnly": True}],
            "topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone",
                                           "whenUnsatisfiable": "DoNotSchedule"}],
            "podDisruptionBudget": {"minAvailable": 2},
            "nodeSelector": {"node-role/media": "true"},
            "tolerations": [{"key": "media", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "grafana": {"dashboards": {"label": "my_dashboards", "labelValue": "yes",
                                   "annotations": {"grafana_folder": "Streaming"}}},
    },
}


def merged_values(overrides: dict) -> dict:
    """The chart defaults with `overrides` applied, as Helm merges them."""
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(copy.deepcopy(overrides))


@functools.lru_cache(maxsize=None)
def _render(key: str) -> dict[str, str]:
    values = json.loads(key)
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(values: dict) -> dict[str, str]:
    """Template path -> rendered text, with the real Helm engine (cached per value set)."""
    return _render(json.dumps(values, sort_keys=True))


def objects(values: dict) -> list[dict]:
    """Every Kubernetes object the chart renders for `values` (NOTES.txt left out)."""
    out = []
    for path, text in sorted(render(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                doc.setdefault("__template__", path)
                out.append(doc)
    return out


def strip(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k != "__template__"}


def find(objs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[dict], kind: str, name: str) -> dict:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}: {[o['metadata']['name'] for o in find(objs, kind)]}"
    return found[0]


@functools.lru_cache(maxsize=None)
def monitoring_schema(kind: str) -> dict:
    return json.loads((Path(__file__).parent / "schemas" / f"{kind.lower()}.json").read_text())


def server_bin() -> Path:
    env = os.environ.get("FERROCAST_BIN")
    p = Path(env) if env else ROOT / "target" / "debug" / "ferrocast"
    if not p.is_file():
        raise AssertionError(f"server binary {p} not found: run `cargo build --bins` (or set FERROCAST_BIN)")
    return p


@pytest.fixture(params=sorted(VALUE_SETS), ids=sorted(VALUE_SETS))
def value_set(request) -> tuple[str, dict]:
    return request.param, VALUE_SETS[request.param]
