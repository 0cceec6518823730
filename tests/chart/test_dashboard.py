"""The Grafana dashboard JSON: importable, every panel on the selectable Prometheus data source,
a tidy grid, every topic the issue asks for. (Its metric names are checked against the real
binaries by tests/tests/chart.rs.)"""

from __future__ import annotations

import json
import re

from conftest import CHART, objects, one

DASHBOARD = CHART / "dashboards" / "ferrocast.json"
DS = {"type": "prometheus", "uid": "${datasource}"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(d: dict) -> list[dict]:
    return [p for p in d["panels"] if p["type"] != "row"]


def test_dashboard_is_importable_json():
    d = dashboard()
    assert d["uid"] == "ferrocast-overview" and d["title"] == "Ferrocast"
    assert isinstance(d["schemaVersion"], int)
    assert "id" not in d, "an id would clash on import"
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ["namespace", "pod", "app"]:
        assert variables[name]["datasource"] == DS


def test_every_query_uses_the_selected_data_source_and_known_variables():
    d = dashboard()
    defined = {v["name"] for v in d["templating"]["list"]} | {"__rate_interval", "__interval", "__range"}
    seen_refs = 0
    for p in panels(d):
        assert p["datasource"] == DS, p["title"]
        assert p["targets"], p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS, p["title"]
            assert t["expr"].count("(") == t["expr"].count(")"), f"{p['title']}: {t['expr']}"
            assert t["expr"].count("{") == t["expr"].count("}"), f"{p['title']}: {t['expr']}"
            for var in re.findall(r"\$(\w+)", t["expr"]):
                assert var in defined, f"{p['title']}: undefined ${var}"
                seen_refs += 1
    assert seen_refs > 20


def test_grid_is_tidy():
    d = dashboard()
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel at {(x, y)}"
                cells.add((x, y))


def test_dashboard_shows_what_the_issue_asks_for():
    titles = " | ".join(p["title"] for p in panels(dashboard()))
    exprs = " ".join(t["expr"] for p in panels(dashboard()) for t in p["targets"])
    for topic in ["Live streams", "Sessions by protocol and role", "Ingest bitrate", "Egress bitrate",
                  "Viewers per stream", "Frames dropped", "Refused requests", "Webhook calls",
                  "Reconciliations", "Reconcile errors", "MediaApps ready"]:
        assert topic in titles, f"no panel for {topic!r}: {titles}"
    assert "by (protocol, role)" in exprs
    assert "ferrocast_operator_reconcile_duration_seconds_bucket" in exprs


def test_configmap_carries_the_dashboard_file():
    cm = one(objects({}), "ConfigMap", "ferrocast-dashboard")
    assert json.loads(cm["data"]["ferrocast.json"]) == dashboard()
