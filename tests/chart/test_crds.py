"""The chart's CRDs are the operator's: files/crds/ is a byte copy of crds/ (what `crdgen`
writes), and the rendered CRDs differ from it only by the keep annotation and the chart labels."""

from __future__ import annotations

from pathlib import Path

import yaml

from conftest import CHART, ROOT, VALUE_SETS, find, objects, strip

REPO_CRDS = ROOT / "crds"
CHART_CRDS = CHART / "files" / "crds"
EXPECTED_FILES = {"mediaapps.yaml", "streamauths.yaml"}
KEEP = "helm.sh/resource-policy"


def repo_crds() -> dict[str, Path]:
    assert REPO_CRDS.is_dir(), (
        f"{REPO_CRDS} does not exist: the operator's crdgen output is not merged yet, so the "
        "chart's CRDs cannot be checked")
    files = {p.name: p for p in REPO_CRDS.glob("*.yaml")}
    assert EXPECTED_FILES <= set(files), f"crds/ has {sorted(files)}, expected {sorted(EXPECTED_FILES)}"
    return files


def test_chart_copy_is_identical_to_crds():
    repo = repo_crds()
    chart = {p.name: p for p in CHART_CRDS.glob("*.yaml")}
    assert set(chart) == set(repo), f"charts/ferrocast/files/crds has {sorted(chart)}, crds/ has {sorted(repo)}"
    for name, path in repo.items():
        assert chart[name].read_bytes() == path.read_bytes(), (
            f"charts/ferrocast/files/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/ferrocast/files/crds/")


def test_rendered_crds_equal_crds_apart_from_keep_and_labels():
    repo = {}
    for path in repo_crds().values():
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert len(docs) == 1, f"{path}: one CRD per file expected"
        repo[docs[0]["metadata"]["name"]] = docs[0]
    rendered = {o["metadata"]["name"]: strip(o) for o in find(objects({}), "CustomResourceDefinition")}
    assert set(rendered) == set(repo) == {"mediaapps.ferrocast.io", "streamauths.ferrocast.io"}
    for name, crd in rendered.items():
        meta = crd["metadata"]
        assert meta["annotations"][KEEP] == "keep", name
        assert meta["labels"]["app.kubernetes.io/part-of"] == "ferrocast", name
        original = repo[name]
        # Take away what the chart adds; everything else must be exactly crdgen's.
        annotations = {k: v for k, v in meta["annotations"].items() if k != KEEP}
        labels = {k: v for k, v in meta["labels"].items() if k in (original["metadata"].get("labels") or {})}
        normalized = {**crd, "metadata": {k: v for k, v in meta.items() if k not in ("annotations", "labels")}}
        if annotations:
            normalized["metadata"]["annotations"] = annotations
        if labels:
            normalized["metadata"]["labels"] = labels
        assert normalized == original, f"{name}: the rendered CRD differs from crds/"


def test_keep_annotation_and_switch():
    not_kept = find(objects(VALUE_SETS["crds-not-kept"]), "CustomResourceDefinition")
    assert not_kept, "crds.keep=false still installs the CRDs"
    for crd in not_kept:
        assert KEEP not in (crd["metadata"].get("annotations") or {})
    assert not find(objects(VALUE_SETS["crds-off"]), "CustomResourceDefinition")
