"""``mixvae train --config FILE``: TOML, YAML and JSON, a run's own config.json, flags override."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mixvae import load_run
from mixvae.cli import main

QUICK = {"hidden": [16], "latent_dim": 2, "batch_size": 256, "epochs": 1, "prior": "gmm", "components": 3}


def _write(path, kind, settings):
    if kind == "json":
        path.write_text(json.dumps(settings))
    elif kind == "yaml":
        import yaml

        path.write_text(yaml.safe_dump(settings))
    else:  # TOML by hand: flat keys, strings quoted, lists as arrays
        lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
        path.write_text("[train]\n" + "\n".join(lines) + "\n")


@pytest.mark.parametrize("kind", ["toml", "yaml", "json"])
def test_a_config_file_sets_the_run_and_flags_override_it(kind, tmp_path):
    path = tmp_path / f"settings.{kind}"
    _write(path, kind, {**QUICK, "seed": 3, "out": str(tmp_path / "from-file")})
    assert main(["train", "--config", str(path), "--seed", "5", "--quiet"]) == 0
    config = load_run(tmp_path / "from-file").config
    assert config.components == 3 and config.hidden == (16,) and config.latent_dim == 2
    assert config.seed == 5  # the command line wins


def test_a_runs_own_config_json_trains_the_same_run_again(tmp_path):
    first = tmp_path / "first"
    flags = ["--hidden", "16", "--latent-dim", "2", "--epochs", "1", "--components", "3", "--quiet"]
    assert main(["train", *flags, "--out", str(first)]) == 0
    again = tmp_path / "again"
    assert main(["train", "--config", str(first / "config.json"), "--out", str(again), "--quiet"]) == 0
    a, b = load_run(first), load_run(again)
    assert {**a.config.to_dict(), "out": None} == {**b.config.to_dict(), "out": None}
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert x.equal(y)


def test_bad_config_files_are_one_line(tmp_path, capsys):
    cases = {
        "unknown.toml": ("latnet_dim = 3\n", "unknown setting 'latnet_dim' (did you mean 'latent_dim'?)"),
        "broken.toml": ("latent_dim = \n", "is not valid TOML"),
        "broken.yaml": ("a: [1\n", "is not valid YAML"),
        "list.json": ("[1, 2]", "must hold one mapping of settings"),
        "settings.ini": ("x=1", "give a .toml, .yaml, .yml or .json file"),
        "bad-value.json": ('{"epochs": "ten"}', "--epochs must be a positive integer"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        rc = main(["train", "--config", str(tmp_path / name), "--out", str(tmp_path / "run"), "--quiet"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and message in err and len(err.splitlines()) == 1, (name, err)
    rc = main(["train", "--config", str(tmp_path / "missing.toml")])
    assert rc == 2 and "cannot read it" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_python_dash_m_mixvae_is_the_command():
    out = subprocess.run([sys.executable, "-m", "mixvae", "list"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("priors:")
