"""Docs stay true to the chart: the chart README lists every value (and no value that does not
exist), and the manifests and values in docs/kubernetes.md are valid."""

from __future__ import annotations

import copy
import re

import jsonschema
import kubernetes_validate
import yaml

from conftest import CHART, KUBE_VERSIONS, ROOT, VALUE_SETS, find, helm, objects, one, strip

README = CHART / "README.md"


def readme_keys() -> set[str]:
    """Keys of the tables under "## Values"."""
    section = README.read_text().split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", section, re.M))


def value_paths(values: dict, documented: set[str], prefix: str = "") -> tuple[set[str], set[str]]:
    """(leaves to document, every path that exists). A map documented as a whole (resources,
    securityContext...) is one leaf unless its keys are documented one by one."""
    leaves, paths = set(), set()
    for k, v in values.items():
        key = prefix + k
        paths.add(key)
        has_documented_children = any(d.startswith(key + ".") for d in documented)
        if isinstance(v, dict) and v and (has_documented_children or key not in documented):
            sub_leaves, sub_paths = value_paths(v, documented, key + ".")
            leaves |= sub_leaves
            paths |= sub_paths
        else:
            leaves.add(key)
    return leaves, paths


def test_readme_lists_every_value_and_only_real_ones():
    documented = readme_keys()
    leaves, paths = value_paths(yaml.safe_load((CHART / "values.yaml").read_text()), documented)
    assert len(documented) > 100
    assert sorted(leaves - documented) == [], "values missing from charts/ferrocast/README.md"
    assert sorted(documented - paths) == [], "README documents values that do not exist"


def test_readme_lists_every_alert():
    text = README.read_text()
    rule = (CHART / "templates" / "prometheusrule.yaml").read_text()
    alerts = set(re.findall(r'"name" "(Ferrocast\w+)"', rule))
    assert len(alerts) == 11
    for a in alerts:
        assert f"| `{a}` |" in text, f"{a} is not in the README's alert table"


# --- docs/kubernetes.md -------------------------------------------------------------------------

DOC = ROOT / "docs" / "kubernetes.md"


def yaml_blocks() -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```", DOC.read_text(), re.M | re.S)


def values_blocks() -> dict[str, dict]:
    """Blocks starting with `# values: NAME` are chart values files."""
    out = {}
    for block in yaml_blocks():
        first = block.splitlines()[0]
        if first.startswith("# values: "):
            out[first.removeprefix("# values: ")] = yaml.safe_load(block)
    return out


def manifest_objects() -> list[dict]:
    objs = []
    for block in yaml_blocks():
        for doc in yaml.safe_load_all(block):
            if isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc:
                objs.append(doc)
    return objs


def crd_schema(kind: str) -> dict:
    """The openAPIV3Schema of crds/<plural>.yaml as a strict JSON schema: objects with
    properties refuse unknown fields, as `kubectl apply` (strict field validation) does."""
    path = ROOT / "crds" / f"{kind.lower()}s.yaml"
    assert path.is_file(), f"{path} does not exist: the operator's crdgen output is not merged yet, so the {kind} examples cannot be checked"
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])

    def strict(s):
        if isinstance(s, dict):
            if s.get("type") == "object" and "properties" in s and not s.get("x-kubernetes-preserve-unknown-fields"):
                s.setdefault("additionalProperties", False)
            if s.get("nullable"):
                t = s.get("type")
                if isinstance(t, str):
                    s["type"] = [t, "null"]
            for v in s.values():
                strict(v)
        elif isinstance(s, list):
            for v in s:
                strict(v)
    strict(schema)
    # apiVersion, kind and metadata are the API server's, not in the CRD schema.
    schema.setdefault("properties", {}).update({"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                                 "metadata": {"type": "object"}})
    return schema


def test_docs_values_files_are_valid_and_render_valid_objects():
    blocks = values_blocks()
    assert {"monitoring.yaml", "dashboards.yaml", "aws.yaml", "gke.yaml", "aks.yaml", "metallb.yaml"} <= set(blocks)
    with helm.Chart.load(CHART) as chart:
        for name, values in blocks.items():
            chart.validate_schema(values)
            for o in objects(values):
                if o["kind"] not in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
                    kubernetes_validate.validate(strip(o), KUBE_VERSIONS[-1], strict=True)
    aws = one(objects(blocks["aws.yaml"]), "Service", "ferrocast-server")
    assert aws["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"] == "ip"
    assert aws["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]


def test_docs_manifests_are_valid():
    objs = manifest_objects()
    kinds = {o["kind"] for o in objs}
    assert {"Secret", "StreamAuth", "MediaApp"} <= kinds, kinds
    for o in objs:
        what = f"docs/kubernetes.md: {o['kind']} {o['metadata']['name']}"
        if o["apiVersion"].startswith("ferrocast.io/"):
            try:
                jsonschema.validate(o, crd_schema(o["kind"]))
            except jsonschema.ValidationError as e:
                raise AssertionError(f"{what}: {e.message} at {list(e.absolute_path)}") from None
        else:
            kubernetes_validate.validate(o, KUBE_VERSIONS[-1], strict=True)


def test_docs_name_the_objects_the_chart_creates():
    text = DOC.read_text()
    names = set(re.findall(r"(?:svc/|svc\s+|deployment/|configmap\s+|Services?\s+)`?(ferrocast-[a-z-]+)", text))
    assert {"ferrocast-server", "ferrocast-operator", "ferrocast-dashboard", "ferrocast-server-headless",
            "ferrocast-operator-metrics"} <= names, names
    rendered = {o["metadata"]["name"] for o in objects(VALUE_SETS["servicemonitor"])}
    assert names <= rendered, f"docs name objects the chart does not create: {sorted(names - rendered)}"
    assert "helm install ferrocast charts/ferrocast --namespace streaming" in text


def test_docs_tell_helm_template_and_argo_cd_users_to_turn_the_crds_off():
    """The chart skips CRDs another release owns by looking them up in the cluster; rendering
    without one (`helm template`, Argo CD) finds nothing, so every release renders them. The
    docs must say to set crds.enabled=false there."""
    assert find(objects({"fullnameOverride": "studio-b"}), "CustomResourceDefinition"), \
        "a render without a cluster cannot see who owns the CRDs"
    for doc in (README, DOC):
        text = " ".join(doc.read_text().split())
        for needle in ("helm template", "Argo CD", "crds.enabled"):
            assert needle in text, f"{doc.name} lacks {needle!r}"
        assert re.search(r"helm template.{0,200}crds\.enabled(=|: )false", text), \
            f"{doc.name} does not tell helm template users to set crds.enabled false"
