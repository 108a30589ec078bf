"""Every benchmark script runs in CI in its smoke mode."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPTS = {"speed.py": ["--quick"]}


def test_every_benchmark_script_is_exercised():
    assert {p.name for p in (ROOT / "benchmarks").glob("*.py")} == set(SCRIPTS)


@pytest.mark.slow
def test_speed_benchmark_smoke(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "speed.py"), *SCRIPTS["speed.py"], "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [r["pair"] for r in result["pairs"]] == [
        "standard x gaussian",
        "gmm x gaussian",
        "gmm x categorical",
        "gmm x mixture",
    ]
    for row in result["pairs"]:
        # equal work: the plain reference and mixvae reach the same loss
        assert row["same_loss"], row
        assert row["mixvae_s"] > 0 and row["plain_s"] > 0
    assert abs(result["eval"]["mixvae_ll"] - result["eval"]["plain_ll"]) < 1.0
    assert 0 < result["memory"]["peak_rss_mb"] < 4000
    assert {r["K"] for r in result["components"]} == {10, 30}
