"""The example plugin (examples/laplace_plugin), installed with pip, through train, evaluate, sample and resume.

A Laplace-mixture prior with its own option (``--laplace-scale``) and a
full-covariance Gaussian guide, from a separately installed package: no
edit to mixvae, every command in a fresh process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "laplace_plugin"
TINY = [
    *("--prior", "laplace-mixture", "--guide", "fullcov-gaussian", "--laplace-scale", "0.5"),
    *("--components", "3", "--dataset", "digits", "--epochs", "1", "--hidden", "16"),
    *("--latent-dim", "2", "--batch-size", "128", "--quiet"),
]


def _mixvae(args: list[str], site: Path, **kw) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "MIXVAE_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "mixvae.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _done(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{proc.args[3:]} exited {proc.returncode}:\n{err}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("example-plugin")
    source = tmp / "source"  # built from a copy: the build leaves nothing in the repository
    shutil.copytree(EXAMPLE, source)
    site = tmp / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(site), str(source)], check=True, capture_output=True)
    run, resumed = tmp / "run", tmp / "resumed"
    listing = _mixvae(["list"], site)
    trained = _done(_mixvae(["train", *TINY, "--out", str(run)], site))
    shutil.copytree(run, resumed)
    later = {
        "evaluate": _mixvae(["evaluate", str(run), "--iw-samples", "5", "--no-figures"], site),
        # beside evaluate, which holds the run folder's lock: the samples go elsewhere
        "sample": _mixvae(
            [
                "sample",
                str(run),
                "--n",
                "4",
                "--component",
                "all",
                "--out",
                str(tmp / "samples-prior-all.png"),
            ],
            site,
        ),
        "resume": _mixvae(["train", "--resume", str(resumed), "--epochs", "2", "--quiet"], site),
    }
    return {
        "site": site,
        "run": run,
        "resumed": resumed,
        "list": _done(listing),
        "train": trained,
        **{k: _done(p) for k, p in later.items()},
    }


def test_the_installed_parts_and_their_option_show_in_list(installed):
    out = installed["list"].stdout
    assert (
        "laplace-mixture y ~ Cat(pi), z | y ~ Laplace" in out and "(from plugin module mixvae_laplace)" in out
    )
    assert "fullcov-gaussian q(z|x) = N(mu(x), L(x) L(x)^T)" in out
    assert "--laplace-scale (default: 1.0): initial scale b of every Laplace component" in out


def test_train_records_the_option_and_the_plugin(installed):
    config = json.loads((installed["run"] / "config.json").read_text())
    assert config["prior"] == "laplace-mixture" and config["guide"] == "fullcov-gaussian"
    assert config["laplace_scale"] == 0.5 and config["components"] == 3
    assert config["plugins"] == ["mixvae_laplace"]
    summary = json.loads((installed["run"] / "summary.json").read_text())
    assert summary["objective"] == "direct"  # read from the plugin's declared sites, verified on step one
    assert "clustering" in summary  # a mixture with K components: clustered by p(y | z)


def test_evaluate_sample_and_resume_work_on_the_plugins_run(installed):
    assert "log p(x)" in installed["evaluate"].stdout
    evaluation = json.loads((installed["run"] / "evaluation.json").read_text())
    assert evaluation["prior"] == "laplace-mixture" and evaluation["log_likelihood"] < 0
    assert (installed["run"].parent / "samples-prior-all.png").is_file()
    epochs = [
        json.loads(ln)["epoch"] for ln in (installed["resumed"] / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2]


def test_the_option_is_validated_like_a_built_in_one(installed):
    proc = _mixvae(
        ["train", *TINY, "--laplace-scale", "-1", "--out", str(installed["run"].parent / "bad")],
        installed["site"],
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip() == "mixvae: error: --laplace-scale must be positive, got -1.0"
