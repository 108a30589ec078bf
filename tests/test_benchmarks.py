"""Every benchmark script runs in CI in its smoke mode."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPTS = {
    "speed.py": ["--quick"],
    "speed_conv.py": ["--quick"],
    "results.py": ["--smoke"],
    "iw_samples.py": ["--smoke"],
    "plain_conv.py": ["--smoke"],
    "recipe_cost.py": ["--smoke"],
}


def _smoke(script: str, tmp_path, timeout: int = 900) -> tuple[dict, str]:
    """Run a benchmark script in its smoke mode with ``--json``: its JSON and its stdout."""
    out = tmp_path / f"{script}.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *SCRIPTS[script], "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_every_benchmark_script_is_exercised():
    files = {p.name: p.read_text() for p in (ROOT / "benchmarks").glob("*.py")}
    scripts = {name for name, text in files.items() if 'if __name__ == "__main__":' in text}
    assert scripts == set(SCRIPTS)
    # the other files are modules that a script imports, so its smoke run exercises them
    for module in set(files) - scripts:
        stem = module.removesuffix(".py")
        assert any(f"from {stem} import" in files[s] or f"import {stem}" in files[s] for s in scripts), module


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
        assert row["same_loss_default_adam"], row
        assert row["same_loss_pyro_objective"] and row["pyro_objective_s"] > 0, row
        assert row["jit_s"] > 0 and row["ratio_jit_vs_default"] > 0, row
        assert row["plain_default_adam_s"] > 0
        assert row["mixvae_s"] > 0 and row["plain_s"] > 0
    assert abs(result["eval"]["mixvae_ll"] - result["eval"]["plain_ll"]) < 1.0
    assert 0 < result["memory"]["peak_rss_mb"] < 4000
    assert {r["K"] for r in result["components"]} == {10, 30}


@pytest.mark.slow
def test_conv_speed_benchmark_smoke(tmp_path):
    result, _ = _smoke("speed_conv.py", tmp_path)
    assert [r["pair"] for r in result["pairs"]] == ["standard x gaussian (conv)", "gmm x gaussian (conv)"]
    for row in result["pairs"]:
        assert row["same_loss"], row  # the same layers, weights, draws and data order: equal work
        assert row["mixvae_s"] > 0 and row["plain_s"] > 0
    assert 0 < result["cifar_memory"]["peak_rss_mb"] < 4000


@pytest.mark.slow
def test_results_smoke_writes_the_three_tables(tmp_path):
    out = tmp_path / "results"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "results.py"), *SCRIPTS["results.py"], "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (out / "results.md").read_text()
    for heading in ("## Clustering", "## Likelihood", "## Aggregate posterior", "## From scratch"):
        assert heading in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    # 12 models with their own clusters + 2 baselines on each of 2 standard VAEs; 14 likelihood, 14 aggregate rows
    for start in (
        "| gmm-full x gaussian, warm start | the model's own (most probable y) (K = 10)",
        "| gmm-full x gaussian, warm start, uniform weights | the model's own (most probable y) (K = 10)",
        "| gmm x categorical (GMVAE, Rui Shu) | the model's",
        "| gmm x gaussian (VaDE-style) | the model's",
        "| dilokthanakul, K = 10 | the model's own (most probable y) (K = 10)",
        "| dilokthanakul, K = 16 | the model's own (most probable y) (K = 16)",
        "| dilokthanakul, K = 10, best of 4 starts | the model's own (most probable y) (K = 10)",
        "| standard x gaussian | k-means on encoder means (K = 10)",
        "| standard x gaussian | full-covariance GMM on encoder means (K = 10)",
        "| gmm-full x gaussian, warm start, uniform weights, best of 10 fits | the model's own",
    ):
        assert sum(r.startswith(start) for r in rows) == 1, start
    assert sum(r.startswith("| vampprior x mixture |") for r in rows) == 2
    starts = next(r for r in rows if r.startswith("| dilokthanakul, K = 16, best of 4 starts |"))
    assert "| 6 + 2 |" in starts  # the 3 other starts' epochs + the run's
    record = json.loads(
        (out / "clustering" / "dilokthanakul-k-16-best-of-4-starts" / "seed0" / "restarts.json").read_text()
    )
    assert len(record["starts"]) == 4 and sum(s["chosen"] for s in record["starts"]) == 1
    # warm-started from the best of 4 standard VAEs: its epochs and minutes count all four
    best_vae = (
        "| gmm-full x gaussian, warm start from the best of 4 starts, uniform, 10 fits | the model's own"
    )
    assert "| 6 + 2 + 2 |" in next(r for r in rows if r.startswith(best_vae))
    assert sum(r.startswith("| standard x gaussian, best of 4 starts | ") for r in rows) == 2  # k-means, GMM
    # fine-tuned from the best of 4 starts: the VAE's epochs, the 3 other starts', the run's
    tunings = "| gmm-full x gaussian, warm start, uniform, 10 fits, best of 4 fine-tunings | the model's own"
    assert "| 2 + 6 + 2 |" in next(r for r in rows if r.startswith(tunings))
    # the from-scratch rows name the recipe they ran, as flags, and draw their learning curves
    scratch = {r.split(" | ")[0][2:]: r for r in rows if "`--prior" in r}
    assert list(scratch) == [
        "GMVAE (Rui Shu), K = 10",
        "GMVAE (Rui Shu), K = 16",
        "dilokthanakul (paper), K = 10",
        "dilokthanakul (paper), K = 16",
    ]
    assert "--latent-dim 64 --mixture-weights uniform" in scratch["GMVAE (Rui Shu), K = 16"]
    assert "--components 16" in scratch["GMVAE (Rui Shu), K = 16"]
    assert "--lr 0.0001" in scratch["dilokthanakul (paper), K = 10"]
    assert "--zprior-threshold 0.5" in scratch["dilokthanakul (paper), K = 10"]
    assert (out / "scratch-curves.png").stat().st_size > 10_000
    # ... and write the curves' numbers beside the figure: every epoch of every seed of every row
    with (out / "scratch-curves.csv").open(newline="") as f:
        curves = list(csv.DictReader(f))
    assert {c["row"] for c in curves} == set(scratch)
    assert len(curves) == 4 * 2 * 2  # rows x seeds x epochs in smoke mode
    for c in curves:
        assert 0.0 <= float(c["acc_majority"]) <= 1.0 and float(c["acc_hungarian"]) <= float(
            c["acc_majority"]
        )
        assert float(c["heldout_elbo"]) < 0 and float(c["train_seconds"]) > 0
    assert sum(r.startswith("| vampprior, data init x mixture |") for r in rows) == 2
    assert sum(r.startswith("| gmm, K = 500 x gaussian |") for r in rows) == 2
    for prior in ("gmm", "vampprior"):
        for k in (5, 50):
            assert sum(r.startswith(f"| {prior}, IWAE K = {k} x gaussian |") for r in rows) == 2
            config = json.loads(
                (out / "likelihood" / f"{prior}-iwae-k-{k}-x-gaussian" / "seed0" / "config.json").read_text()
            )
            assert (config["objective"], config["particles"]) == ("iwae", k)
    # every seed is a run folder that mixvae commands can open again
    evaluations = sorted(out.glob("*/*/seed*/evaluation.json"))
    assert len(evaluations) == 2 * (14 + 14 + 4)
    # the warm-started runs record the run they started from
    origins = list(out.glob("clustering/gmm-full-*/seed*/init_from.json"))
    assert len(origins) == 6 * 2
    fits = out / "clustering" / "gmm-full-x-gaussian-warm-start-uniform-weights-best-of-10-fits"
    vade = out / "clustering" / "gmm-full-x-gaussian-warm-start-uniform-weights-10-fits-vade-s-learning-rate"
    lrs = [json.loads(line)["lr"] for line in (vade / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert lrs == [0.002, 0.002]  # VaDE's schedule: 0.002 for the first 10 epochs
    for seed in (0, 1):
        recorded = json.loads((fits / f"seed{seed}" / "init_from.json").read_text())["fits"]
        assert [f["gmm_seed"] for f in recorded] == list(range(seed, seed + 10))
    for origin in origins:
        seed = origin.parent.name.removeprefix("seed").split("-")[0]
        vae = "standard-x-gaussian" + (
            "-best-of-4-starts" if "from-the-best-of-4" in origin.parent.parent.name else ""
        )
        source = out / "clustering" / vae / f"seed{seed}"
        assert json.loads(origin.read_text())["run"] == str(source.resolve())
    for seed in (0, 1):
        uniform = out / "clustering" / "gmm-full-x-gaussian-warm-start-uniform-weights" / f"seed{seed}"
        assert json.loads((uniform / "config.json").read_text())["mixture_weights"] == "uniform"
    ll = [json.loads(p.read_text())["log_likelihood"] for p in evaluations]
    assert all(v < 0 for v in ll)
    # a second invocation finds every run done and trains nothing
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "results.md").read_text() == text
    # a longer budget continues the finished warm-start runs instead of refusing or retraining them
    longer = subprocess.run([*cmd, "--warm-epochs", "3"], capture_output=True, text=True, timeout=300)
    assert longer.returncode == 0, longer.stderr[-3000:]
    for seed in (0, 1):
        warm = out / "clustering" / "gmm-full-x-gaussian-warm-start" / f"seed{seed}"
        epochs = [json.loads(line)["epoch"] for line in (warm / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3]
        assert json.loads((warm / "evaluation.json").read_text())["epoch"] == 3
    assert "| 2 + 3 |" in (out / "results.md").read_text()
    # ... and the fine-tuning restarts cut to the shorter budget: their choice stands, it trains on
    tuned = (
        out / "clustering" / "gmm-full-x-gaussian-warm-start-uniform-10-fits-best-of-4-fine-tunings" / "seed0"
    )
    assert json.loads((tuned / "config.json").read_text())["restart_epochs"] == 2
    assert json.loads((tuned / "evaluation.json").read_text())["epoch"] == 3
    assert "| 2 + 6 + 3 |" in (out / "results.md").read_text()
    # the curves of runs measured earlier join the figure and its CSV (--curves-from)
    earlier = tmp_path / "earlier.csv"
    earlier.write_text(
        "row,seed,epoch,acc_hungarian,acc_majority,nmi,heldout_elbo,train_seconds\n"
        '"an earlier row, K = 3",3,10,0.5000,0.6000,0.4000,-100.000,50.000\n'
        '"an earlier row, K = 3",3,20,0.6000,0.7000,0.5000,-99.000,100.000\n'
    )
    merge = [*cmd, "--report-only", "--only", "scratch", "--curves-from"]
    merged = subprocess.run([*merge, str(earlier)], capture_output=True, text=True, timeout=300)
    assert merged.returncode == 0, merged.stderr[-3000:]
    lines = (out / "scratch-curves.csv").read_text().splitlines()
    assert len(lines) == 1 + 4 * 2 * 2 + 2 and lines[-2:] == earlier.read_text().splitlines()[1:]
    refused = subprocess.run([*merge, str(out / "results.md")], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and "not a curves CSV of results.py" in refused.stderr
    # --curves: the clustering rows' curves too, which --curves-from adds to the scratch figure
    starts = "dilokthanakul, K = 16, best of 4 starts"
    only = [*cmd, "--report-only", "--only", "clustering", "--rows", starts, "--curves"]
    drawn = subprocess.run(only, capture_output=True, text=True, timeout=300)
    assert drawn.returncode == 0, drawn.stderr[-3000:]
    assert (out / "clustering-curves.png").stat().st_size > 10_000
    with (out / "clustering-curves.csv").open(newline="") as f:
        curves = list(csv.DictReader(f))
    # every seed's scored epochs, as its metrics.jsonl records them
    assert {c["row"] for c in curves} == {starts} and {c["seed"] for c in curves} == {"0", "1"}
    for seed in ("0", "1"):
        run = out / "clustering" / "dilokthanakul-k-16-best-of-4-starts" / f"seed{seed}"
        scored = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [int(c["epoch"]) for c in curves if c["seed"] == seed] == [
            m["epoch"] for m in scored if "clustering" in m
        ]
    assert "clustering-curves.png" in (out / "results.md").read_text()
    joined = subprocess.run(
        [*merge, str(out / "clustering-curves.csv")], capture_output=True, text=True, timeout=300
    )
    assert joined.returncode == 0, joined.stderr[-3000:]
    with (out / "scratch-curves.csv").open(newline="") as f:
        joined_rows = [c["row"] for c in csv.DictReader(f)]
    assert joined_rows.count(starts) == len(curves) and set(joined_rows) == {*scratch, starts}


def test_recipe_cost_smoke(tmp_path):
    result, stdout = _smoke("recipe_cost.py", tmp_path, timeout=300)
    rows = result["rows"]
    assert [r["variant"] for r in rows] == [
        "recipe",
        "--particles 10",
        "--w-hidden 64",
        "--particles 10 --w-hidden 64",
    ]
    assert rows[0]["ratio"] == 1.0 and all(
        r["seconds_per_step"] > 0 and math.isfinite(r["loss"]) for r in rows
    )
    assert "M = 10 draws per point" in rows[1]["objective"] and "M = " not in rows[0]["objective"]
    assert "| --particles 10 --w-hidden 64 |" in stdout


@pytest.mark.slow
def test_iw_samples_smoke(tmp_path):
    out = tmp_path / "iw.json"
    script = ROOT / "benchmarks" / "iw_samples.py"
    cmd = [sys.executable, str(script), *SCRIPTS["iw_samples.py"], "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["samples"] == [10, 50]
    first, second = result["runs"]
    assert (first["prior"], second["prior"]) == ("standard", "gmm")
    assert first["vs_first"] == {"10": [0.0, 0.0], "50": [0.0, 0.0]}
    for r in result["runs"]:
        assert r["test_points"] == 40
        lls = {s: v[0] for s, v in r["log_likelihood"].items()}
        assert all(math.isfinite(v) and v < 0 for v in lls.values())
        # the gain is the difference of the two means, and the bound does not get looser by more than noise
        assert r["gain"][0] == pytest.approx(lls["50"] - lls["10"], abs=1e-9)
        assert r["gain"][0] > -3 * r["gain"][1] - 0.05
        # the paired difference to the first run is the difference of the means
        for s in ("10", "50"):
            ref = first["log_likelihood"][s][0]
            assert r["vs_first"][s][0] == pytest.approx(lls[s] - ref, abs=1e-9)
    assert "| S = 50 minus S = 10 |" in proc.stdout


def _results_module():
    spec = importlib.util.spec_from_file_location("results_script", ROOT / "benchmarks" / "results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_results_rows_selects_rows_and_the_runs_they_start_from(capsys):
    results = _results_module()
    plan = [("clustering", s, 100) for s in results.CLUSTERING] + [
        ("likelihood", s, 5000) for s in results.LIKELIHOOD
    ]
    chosen = [(t, s.name) for t, s, _ in results.select_rows(plan, ["warm start"])]
    # the warm start needs the standard VAE of its own table, not the likelihood table's
    assert chosen == [
        ("clustering", "standard x gaussian"),
        ("clustering", "gmm-full x gaussian, warm start"),
        ("clustering", "gmm-full x gaussian, warm start, uniform weights"),
        ("clustering", "gmm-full x gaussian, warm start, uniform weights, best of 10 fits"),
        ("clustering", "gmm-full x gaussian, warm start, uniform weights, 10 fits, VaDE's learning rate"),
        ("clustering", "standard x gaussian, best of 4 starts"),
        ("clustering", "gmm-full x gaussian, warm start from the best of 4 starts, uniform, 10 fits"),
        ("clustering", "gmm-full x gaussian, warm start, uniform, 10 fits, best of 4 fine-tunings"),
    ]
    chosen = [(t, s.name) for t, s, _ in results.select_rows(plan, ["data init", "gmm x gaussian"])]
    assert chosen == [
        ("clustering", "gmm x gaussian (VaDE-style)"),
        ("likelihood", "gmm x gaussian"),
        ("likelihood", "vampprior, data init x gaussian"),
        ("likelihood", "vampprior, data init x mixture"),
    ]
    with pytest.raises(SystemExit) as stop:
        results.parse_args(["--smoke", "--rows", "no such row"])
    assert stop.value.code == 2
    assert "no row matches --rows no such row; the rows: ['gmm x categorical" in capsys.readouterr().err
    # --train-seeds shares a table's seeds among processes
    assert results.parse_args(["--smoke", "--seeds", "5", "--train-seeds", "3,1"]).train_seed_list == [3, 1]
    assert results.parse_args(["--smoke", "--seeds", "3"]).train_seed_list == [0, 1, 2]
    for bad, said in (("5", "must be among the seeds 0..4"), ("1;2", "takes comma-separated seeds")):
        with pytest.raises(SystemExit):
            results.parse_args(["--smoke", "--seeds", "5", "--train-seeds", bad])
        assert said in capsys.readouterr().err


def test_results_tabulates_a_moved_results_folder(tmp_path):
    """A results folder moved (or copied) elsewhere is read again, not refused as a run with other
    settings: its configs record where they were trained, which is not a setting."""
    import shutil

    import torch

    results = _results_module()
    threads = torch.get_num_threads()
    # a warm start too: the run it started from moves with it
    argv = ["--smoke", "--only", "clustering", "--seeds", "1", "--rows", "uniform weights"]
    argv += ["--threads", str(threads)]
    try:
        assert results.main([*argv, "--out", str(tmp_path / "a")]) == 0
        shutil.move(tmp_path / "a", tmp_path / "b")
        assert results.main([*argv, "--out", str(tmp_path / "b"), "--report-only"]) == 0
    finally:
        torch.set_num_threads(threads)
    text = (tmp_path / "b" / "results.md").read_text()
    assert "| gmm-full x gaussian, warm start, uniform weights | the model's own" in text


def test_results_records_tabulate_without_the_run_folders(tmp_path):
    """--records keeps each evaluated run's JSON files (no checkpoint); with the run folders gone
    (a new machine), --out RECORDS --report-only writes the same tables, warm starts and the
    starts of --restarts included."""
    import shutil

    import torch

    results = _results_module()
    threads = torch.get_num_threads()
    argv = ["--smoke", "--only", "clustering", "--seeds", "2", "--threads", str(threads)]
    argv += ["--rows", "warm start, uniform weights", "dilokthanakul, K = 10, best of 4 starts"]
    runs, records = tmp_path / "runs", tmp_path / "records"
    try:
        assert results.main([*argv, "--out", str(runs), "--records", str(records)]) == 0
        measured = (runs / "results.md").read_text()
        shutil.rmtree(runs)
        assert results.main([*argv, "--out", str(records), "--report-only"]) == 0
    finally:
        torch.set_num_threads(threads)
    kept = {p.relative_to(records).as_posix() for p in records.rglob("*") if p.is_file()}
    assert not [p for p in kept if p.endswith((".pt", ".lock")) or p.endswith("mixvae-run.json")]
    starts = "clustering/dilokthanakul-k-10-best-of-4-starts/seed1/"
    assert f"{starts}restarts.json" in kept and sum(p.startswith(starts + "restarts/") for p in kept) >= 4
    text = (records / "results.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "seeds)" not in line]
    wanted = [
        "| standard x gaussian | full-covariance GMM on encoder means (K = 10)",
        "| gmm-full x gaussian, warm start, uniform weights | the model's own",
        "| gmm-full x gaussian, warm start, uniform weights, best of 10 fits | the model's own",
        "| dilokthanakul, K = 10, best of 4 starts | the model's own",
    ]
    assert [sum(r.startswith(start) for r in rows) for start in wanted] == [1, 1, 1, 1]
    # every number as the run folders gave it: the tables are the same, line for line
    assert text.split("## Clustering")[1] == measured.split("## Clustering")[1]
    assert "| 2 + 2 |" in text and "| 6 + 2 |" in text  # the warm start's and the starts' epochs


def test_plain_conv_reference_smoke():
    """The plain-PyTorch conv VAE trains and scores itself (logistic: bits per dimension)."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "plain_conv.py"), *SCRIPTS["plain_conv.py"]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["log_likelihood"] < 0 and result["log_likelihood"] <= result["elbo"] + 5
    assert result["bits_per_dim"] == pytest.approx(-result["log_likelihood"] / (64 * math.log(2)))


def test_plain_discretized_logistic_is_mixvaes():
    """The reference's own likelihood equals the library's on the 256 levels (away from underflow)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from plain_conv import discretized_logistic

    from mixvae.models.logistic import DiscretizedLogisticMixture

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 5, 5), generator=g) / 255.0
    logits = torch.randn(4, 3, 3, 5, 5, generator=g)
    locs = x.unsqueeze(1) + 0.05 * torch.randn(4, 3, 3, 5, 5, generator=g)  # no bin's mass underflows
    log_s = torch.rand(4, 3, 3, 5, 5, generator=g) * 2 - 4  # scales on [0, 1]: e^-4 .. e^-2
    ours = discretized_logistic(x, torch.cat([logits, locs, log_s], 1), 3).flatten(1).sum(-1)
    # mixvae's parameters live on [-1, 1]: locations 2 loc - 1, scales twice as wide
    lib = DiscretizedLogisticMixture(logits, 2 * locs - 1, log_s + math.log(2), event_dims=3)
    assert torch.allclose(ours, lib.log_prob(x), atol=1e-4)


@pytest.mark.slow
def test_results_runs_on_any_labelled_dataset(tmp_path):
    """--dataset: a Fashion-MNIST-layout IDX folder (bernoulli, mlp) and the CIFAR-10 subset
    (conv, the logistic likelihood: bits per dimension, and the plain-PyTorch reference row)."""
    import gzip
    import struct

    import numpy as np

    fashion = tmp_path / "fashion"
    fashion.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 700), ("t10k", 200)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        # a class-dependent bar on noise: something to cluster
        images = (rng.random((n, 28, 28)) * 60).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k + 4 : 2 * k + 8] = 255
        with gzip.open(fashion / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">iiii", 2051, n, 28, 28) + images.tobytes())
        with gzip.open(fashion / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">ii", 2049, n) + labels.tobytes())
    script = str(ROOT / "benchmarks" / "results.py")
    out = tmp_path / "fashion-results"
    cmd = [sys.executable, script, "--smoke", "--dataset", "fashion-mnist", "--data-dir", str(fashion)]
    proc = subprocess.run(
        [*cmd, "--seeds", "1", "--rows", "GMVAE", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (out / "results.md").read_text()
    assert "Data: `fashion-mnist` (1, 28, 28), 600 training images" in text
    assert "bits/dim" not in text  # the tables of binarised grey images are MNIST's
    assert "| gmm x categorical (GMVAE, Rui Shu) | the model's own" in text
    assert "likelihood bernoulli" in text
    run = out / "clustering" / "gmm-x-categorical-gmvae-rui-shu"
    config = json.loads((run / "seed0" / "config.json").read_text())
    assert (config["dataset"], config["binarize"], config["network"]) == ("fashion-mnist", "dynamic", "mlp")
    assert not (run / "seed1").exists() and not (out / "likelihood").exists()
    out = tmp_path / "cifar-results"
    cifar = [
        sys.executable,
        script,
        "--smoke",
        "--dataset",
        "cifar10",
        "--network",
        "conv",
        "--only",
        "likelihood",
    ]
    cifar += ["--seeds", "1", "--rows", "standard x gaussian", "--plain-reference"]
    records = tmp_path / "cifar-records"
    proc = subprocess.run(
        [*cifar, "--out", str(out), "--records", str(records)], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (out / "results.md").read_text()
    # the plain reference's result is kept with the runs' records, and tabulated from them
    assert (records / "likelihood" / "plain-pytorch-conv-vae" / "seed0" / "result.json").exists()
    again = subprocess.run(
        [*cifar, "--out", str(records), "--report-only"], capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert (records / "results.md").read_text().split("## Likelihood")[1] == text.split("## Likelihood")[1]
    assert "Data: `cifar10` (3, 32, 32), 600 training images" in text
    assert "likelihood discretized logistic mixture of 3" in text
    header = next(line for line in text.splitlines() if line.startswith("| prior x guide | log p(x)"))
    assert "bits/dim" in header
    assert "| plain-PyTorch conv VAE, N(0, I) prior" in text
    config = json.loads((out / "likelihood" / "standard-x-gaussian" / "seed0" / "config.json").read_text())
    assert (config["likelihood"], config["binarize"], config["network"]) == ("logistic", "none", "conv")
