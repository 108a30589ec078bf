"""Run folders written by mixvae 0.1.0 still load and resume (fixtures in tests/fixtures/runs-v0.1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mixvae import load_run, resume
from mixvae.data import evaluation_data
from mixvae.inference import evaluate_elbo

FIXTURES = Path(__file__).parent / "fixtures" / "runs-v0.1"
RUNS = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


def test_the_fixtures_are_there():
    assert RUNS == [
        "dilokthanakul-dilokthanakul",
        "gmm-categorical",
        "gmm-full-gaussian",
        "vampprior-mixture",
    ]


@pytest.mark.parametrize("name", RUNS)
def test_an_old_run_loads_with_the_same_parameters(name, digits):
    expected = json.loads((FIXTURES / name / "expected.json").read_text())
    run = load_run(FIXTURES / name)
    x = evaluation_data(digits.test_x[:200], run.config.binarize)
    assert evaluate_elbo(run.model, run.guide, x, seed=0) == pytest.approx(
        expected["heldout_elbo_200_seed0"], rel=1e-6
    )


@pytest.mark.parametrize("name", RUNS)
def test_an_old_run_resumes_where_it_stopped(name, tmp_path):
    expected = json.loads((FIXTURES / name / "expected.json").read_text())["resumed_to_epoch_3"]
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    run = resume(folder, epochs=3, progress=False, figures=False)
    assert run.epoch == 3
    last = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["epoch"] == 3
    assert last["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-5)
    assert last["heldout_elbo"] == pytest.approx(expected["heldout_elbo"], rel=1e-5)
