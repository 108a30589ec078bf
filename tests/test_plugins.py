"""Plugins: parts registered by modules outside mixvae, through entry points, --plugin and MIXVAE_PLUGINS.

The plugin distribution in ``plugin_fixture/`` is installed for real without
pip: copied into a folder on ``PYTHONPATH`` with its ``.dist-info``, which is
all ``importlib.metadata`` looks for.  The command-line runs are fresh
processes, started side by side in one module fixture to keep the file short.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mixvae import TrainConfig
from mixvae.cli import build_parser, main
from mixvae.errors import CheckpointError, ConfigError, PluginError
from mixvae.models import PRIORS
from mixvae.plugins import (
    env_plugins,
    load_plugin,
    load_recorded_plugins,
    plugin_module,
    plugin_modules,
    record_plugins,
    registries,
)
from mixvae.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "plugin_fixture"
PLUGIN = "mixvae_testplugin"
#: the fixture's modules, forgotten after each in-process test
FIXTURE_MODULES = (PLUGIN, "mixvae_brokenplugin", "mixvae_takenplugin")
TINY = [
    *("--prior", "wide-gmm", "--guide", "gaussian-copy", "--dataset", "digits", "--epochs", "1"),
    *("--hidden", "16", "--latent-dim", "2", "--batch-size", "128", "--quiet"),
]


def _install(folder: Path, *, dist_info: bool = True) -> Path:
    """Copy the fixture's plugins into ``folder`` (with the test plugin's dist-info, or without)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(FIXTURE / PLUGIN, folder / PLUGIN)
    for name in ("mixvae_brokenplugin.py", "mixvae_takenplugin.py"):
        shutil.copy(FIXTURE / name, folder / name)
    if dist_info:
        shutil.copytree(FIXTURE / f"{PLUGIN}-0.1.dist-info", folder / f"{PLUGIN}-0.1.dist-info")
    return folder


def _broken_dist(folder: Path) -> Path:
    """An installed distribution whose entry point is the plugin that fails to import."""
    info = folder / "mixvae_brokenplugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mixvae-brokenplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mixvae.plugins]\nbroken = mixvae_brokenplugin\n")
    return folder


def _start(args: list[str], path: list[Path]) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if k != "MIXVAE_PLUGINS"}
    environ["PYTHONPATH"] = os.pathsep.join([*map(str, path), *filter(None, [os.environ.get("PYTHONPATH")])])
    environ["OMP_NUM_THREADS"] = "1"  # several runs side by side on few cores
    return subprocess.Popen(
        [sys.executable, "-m", "mixvae.cli", *args],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(procs: dict[str, subprocess.Popen[str]]) -> dict[str, subprocess.CompletedProcess[str]]:
    done = {}
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        done[key] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"{proc.args[3:]} exited {proc.returncode}:\n{proc.stderr}"


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> dict[str, Any]:
    """The command-line runs that need fresh processes, in two rounds of runs side by side."""
    tmp = tmp_path_factory.mktemp("plugins")
    installed = _install(tmp / "site")  # the test plugin as an installed distribution
    plain = _install(tmp / "plain", dist_info=False)  # importable, but no entry point
    broken = _broken_dist(tmp / "broken-site")  # an installed plugin that fails to import
    run, resumed = tmp / "run", tmp / "resumed"
    first = _finish(
        {
            "list": _start(["list"], [installed, broken]),
            "train": _start(["train", *TINY, "--out", str(run)], [installed]),
        }
    )
    _ok(first["train"])
    shutil.copytree(run, resumed)  # resumed while the original is evaluated
    second = _finish(
        {
            # beside evaluate, which holds the run folder's lock: the samples go elsewhere
            "sample": _start(
                ["sample", str(run), "--n", "4", "--out", str(tmp / "samples-prior.png")], [installed]
            ),
            "resume": _start(["train", "--resume", str(resumed), "--epochs", "2"], [installed]),
            # no entry point and no --plugin: only the module the run's config names
            "evaluate": _start(["evaluate", str(run), "--iw-samples", "5", "--no-figures"], [plain]),
        }
    )
    return {**first, **second, "run": run, "resumed": resumed}


# ---- fresh processes ----------------------------------------------------------------------


def test_entry_point_parts_show_in_list_and_a_broken_one_is_one_warning(cli):
    proc = cli["list"]
    _ok(proc)  # a broken installed plugin does not break mixvae ...
    assert "wide-gmm" in proc.stdout and "gaussian-copy" in proc.stdout
    assert (
        proc.stdout.count("(from plugin module") == proc.stdout.count(f"(from plugin module {PLUGIN})") == 2
    )
    assert "half-registered" not in proc.stdout  # ... leaves none of its parts registered ...
    line = _one_line(proc)  # ... and is one line naming it and the problem
    assert "PluginWarning: plugin module 'mixvae_brokenplugin' failed to import" in line
    assert "(RuntimeError: this plugin is broken on purpose); fix or uninstall it" in line


def test_entry_point_run_trains_samples_and_resumes(cli):
    run = cli["run"]
    config = json.loads((run / "config.json").read_text())
    assert config["plugins"] == [PLUGIN]
    assert config["prior"] == "wide-gmm" and config["guide"] == "gaussian-copy"
    for key in ("sample", "resume"):
        _ok(cli[key])
    assert (run.parent / "samples-prior.png").is_file()
    resumed = cli["resumed"]
    assert [json.loads(ln)["epoch"] for ln in (resumed / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert json.loads((resumed / "config.json").read_text())["plugins"] == [PLUGIN]


def test_recorded_plugin_is_loaded_without_flag_or_entry_point(cli):
    _ok(cli["evaluate"])
    assert "log p(x)" in cli["evaluate"].stdout and (cli["run"] / "evaluation.json").is_file()


def test_run_whose_plugin_is_missing_is_one_line(cli, capsys):
    # this process cannot import the module the run records
    assert PLUGIN not in sys.modules
    assert main(["evaluate", str(cli["run"]), "--iw-samples", "5", "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"mixvae: error: run {cli['run']} was trained with parts from plugin module")
    assert f"'{PLUGIN}', which cannot be imported here (ModuleNotFoundError: No module named" in err
    assert err.strip().endswith("install it or pass --plugin")


# ---- in-process ---------------------------------------------------------------------------


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """The fixture's plugins importable in this process (without dist-info); forgotten afterwards."""
    folder = _install(tmp_path / "plugins", dist_info=False)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delenv("MIXVAE_PLUGINS", raising=False)
    yield folder
    for module in FIXTURE_MODULES:
        for registry in registries():
            registry.drop_module(module)
        sys.modules.pop(module, None)


def test_train_with_plugin_flag_records_the_module(plugin_path, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--plugin", PLUGIN, "train", *TINY, "--out", str(out)]) == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["plugins"] == [PLUGIN]


@pytest.mark.parametrize("order", ["before", "after"])
def test_plugin_flag_on_either_side_of_the_command(order, plugin_path, capsys):
    args = ["--plugin", PLUGIN, "list"] if order == "before" else ["list", "--plugin", PLUGIN]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"(from plugin module {PLUGIN})" in out and "wide-gmm" in out
    assert plugin_module(PRIORS, "wide-gmm") == PLUGIN and plugin_module(PRIORS, "gmm") is None


def test_env_variable_loads_plugins(plugin_path, monkeypatch, capsys):
    monkeypatch.setenv("MIXVAE_PLUGINS", PLUGIN)
    assert main(["list"]) == 0
    assert "gaussian-copy" in capsys.readouterr().out
    monkeypatch.setenv("MIXVAE_PLUGINS", "mixvae_no_such_plugin")
    assert main(["list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mixvae: error: MIXVAE_PLUGINS: plugin module 'mixvae_no_such_plugin' cannot be")
    assert len(err.splitlines()) == 1


def test_plugin_that_fails_to_import_is_one_line(plugin_path, capsys):
    assert main(["--plugin", "mixvae_brokenplugin", "train", "--prior", "half-registered"]) == 2
    assert capsys.readouterr().err == (
        "mixvae: error: plugin module 'mixvae_brokenplugin' failed to import "
        "(RuntimeError: this plugin is broken on purpose); fix or uninstall it\n"
    )
    assert "half-registered" not in PRIORS  # nothing of it stays registered
    with pytest.raises(PluginError, match="mixvae_no_such_plugin' cannot be found"):
        load_plugin("mixvae_no_such_plugin")


def test_plugin_that_takes_a_name_is_one_line(plugin_path, capsys):
    assert main(["list", "--plugin", "mixvae_takenplugin"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(
        "mixvae: error: plugin module 'mixvae_takenplugin' registers prior 'gmm', which mixvae."
    )
    assert err.strip().endswith("already registered; choose another name")
    assert PRIORS.module_of("gmm").startswith("mixvae.") and "mixvae_takenplugin" not in sys.modules


def test_record_and_load_recorded_plugins(plugin_path, tmp_path):
    config = TrainConfig(prior="wide-gmm", guide="gaussian-copy")
    assert record_plugins(config).plugins == ()  # not loaded yet: nothing to record
    load_plugin(PLUGIN)
    load_plugin(PLUGIN)  # a second time is nothing
    assert record_plugins(config) is config and config.plugins == (PLUGIN,)
    assert plugin_modules(TrainConfig()) == ()
    # a recorded module that cannot be imported: fine while its parts are registered anyway ...
    stored = {**config.to_dict(), "plugins": ["mixvae_no_such_plugin"]}
    load_recorded_plugins(stored, tmp_path)
    # ... and an error naming the run and the module when they are not
    stored["prior"] = "wider-gmm"
    with pytest.raises(CheckpointError, match=r"parts from plugin module 'mixvae_no_such_plugin', which"):
        load_recorded_plugins(stored, tmp_path)


def test_config_records_plugins_as_a_list(capsys):
    config = TrainConfig(plugins=("a_plugin", "pkg.sub"))
    assert config.to_dict()["plugins"] == ["a_plugin", "pkg.sub"]
    assert json.loads(config.to_json())["plugins"] == ["a_plugin", "pkg.sub"]
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config
    assert TrainConfig().plugins == ()
    with pytest.raises(SystemExit):  # recorded by training, not a flag of its own
        build_parser().parse_args(["train", "--plugins", "x"])
    assert "unrecognized arguments: --plugins" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="plugins must be module names"):
        TrainConfig(plugins=("not a module",)).validate()


def test_env_plugins_split_at_commas_and_pathsep():
    assert env_plugins(f" a, b.c{os.pathsep}d ,,") == ["a", "b.c", "d"]
    assert env_plugins("") == []


def test_registry_names_both_modules_of_a_taken_name():
    things: Registry[type] = Registry("thing")
    first = type("First", (), {"__module__": "mixvae.things"})
    things.register("x")(first)
    again = type("First", (), {"__module__": "mixvae.things"})  # the module imported once more
    assert things.register("x")(again) is again and things["x"] is again
    other = type("Other", (), {"__module__": "somebody_else.parts"})
    with pytest.raises(PluginError) as e:
        things.register("x")(other)
    assert str(e.value) == (
        "plugin module 'somebody_else.parts' registers thing 'x', which mixvae.things already "
        "registered; choose another name"
    )
    assert things.module_of("x") == "mixvae.things"
    things.register("y")(other)
    assert things.drop_module("somebody_else") == ["y"] and things.names() == ["x"]
