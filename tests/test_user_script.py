"""The README's own-SVI-loop example: mixvae's objects in a plain Pyro script."""

from __future__ import annotations

import re
import sys
import types

import pytest

from tests.conftest import ROOT


def _readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    snippet = [b for b in blocks if "SVI(" in b]
    assert snippet, "README.md has no python block with the SVI example"
    return snippet[0]


def test_readme_svi_example_runs_and_learns():
    namespace: dict = {}
    exec(compile(_readme_snippet(), "README.md", "exec"), namespace)
    losses = namespace["losses"]
    assert len(losses) >= 100
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first - 5.0, (first, last)


def test_readme_pyro_tools_example_runs_after_the_loop(tmp_path, monkeypatch):
    """Predictive, infer_components, save_model / load_model and IWAE_ELBO, as the README shows them."""
    import torch

    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "Predictive(" in b]
    assert blocks, "README.md has no python block with Pyro's tools"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_readme_snippet(), "README.md", "exec"), namespace)
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["prior_draws"]["x"].shape == (8, 16, 1, 8, 8)
    assert namespace["posterior"]["z"].shape == (8, 16, namespace["model"].latent_dim)
    clusters = namespace["clusters"]
    assert clusters.shape == (16,) and clusters.dtype == torch.long
    assert (tmp_path / "gmvae.pt").is_file()


def test_pyro_optim_and_module_parameters_are_the_same_tensors():
    """pyro.optim updates the module's own parameters (nothing is copied into the store)."""
    import pyro
    import torch
    from pyro.infer import SVI

    from mixvae import TrainConfig, build, load_dataset
    from mixvae.inference import make_elbo

    data = load_dataset("digits")
    model, guide = build(
        TrainConfig(prior="gmm", guide="mixture", hidden=(16,), latent_dim=2, components=3), data.data_shape
    )
    before = model.prior.locs.detach().clone()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), make_elbo())
    svi.step(data.train_x[:32], num_data=len(data.train_x))
    assert not torch.equal(before, model.prior.locs.detach())
    store = {id(v.unconstrained()) for v in pyro.get_param_store().values()}
    assert {id(p) for p in [*model.parameters(), *guide.parameters()]} == store


@pytest.mark.parametrize("k", [3])
def test_svi_with_categorical_guide(k):
    import pyro
    from pyro.infer import SVI, TraceEnum_ELBO

    from mixvae import TrainConfig, build, load_dataset

    data = load_dataset("digits")
    model, guide = build(
        TrainConfig(network="mlp", hidden=(16,), latent_dim=2, components=k), data.data_shape
    )
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), TraceEnum_ELBO(max_plate_nesting=1))
    losses = [svi.step(data.train_x[i * 50 : (i + 1) * 50], len(data.train_x)) for i in range(20)]
    assert losses[-1] < losses[0]


def test_readme_prior_example_registers_trains_and_clusters(small_digits, tmp_path):
    """The README's Laplace-mixture prior: its declared sites and option are all mixvae needs."""
    from mixvae import PRIORS, train
    from mixvae.config import TrainConfig

    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "laplace-mixture" in b]
    assert blocks, "README.md has no python block with the Laplace-mixture prior"
    module = types.ModuleType("readme_laplace")  # a module, as a user's file would be
    sys.modules[module.__name__] = module
    exec(compile(blocks[0], "README.md", "exec"), module.__dict__)
    try:
        run = train(
            TrainConfig(
                prior="laplace-mixture",
                guide="categorical",
                laplace_scale=0.5,
                components=4,
                latent_dim=3,
                hidden=(32,),
                epochs=2,
                out=str(tmp_path),
            ),
            dataset=small_digits,
            progress=False,
            figures=False,
        )
        assert run.summary["objective"] == "direct" and "clustering" in run.summary
        assert run.config.to_dict()["laplace_scale"] == 0.5
    finally:
        PRIORS.drop_module("readme_laplace")
        del sys.modules["readme_laplace"]
