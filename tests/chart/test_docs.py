"""Docs stay true to the chart: the chart README lists every value (and no value that does not
exist), and the manifests and values in docs/kubernetes.md are valid."""

from __future__ import annotations

import re

import yaml

from conftest import CHART

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
    assert len(alerts) == 8
    for a in alerts:
        assert f"| `{a}` |" in text, f"{a} is not in the README's alert table"
