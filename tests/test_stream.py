"""A torch.utils.data.Dataset trains through a DataLoader, equal to the same points in memory."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch

import mixvae.data.streaming as stream_module
from mixvae import TrainConfig, evaluate_run, train
from mixvae.data import Dataset, StreamedPoints, evaluation_data, from_arrays, stream
from mixvae.errors import ConfigError, DataError
from mixvae.evaluation.sampling import sample_latents
from mixvae.inference import resume
from tests.conftest import run_readme_block


@pytest.fixture(scope="module")
def points(digits):
    """750 8x8 digits as uint8 images (values 0..255) with labels."""
    x = torch.cat([digits.train_x, digits.test_x])[:750]
    y = torch.cat([digits.train_y, digits.test_y])[:750]
    return (x * 255).round().to(torch.uint8), y


class Images(torch.utils.data.Dataset):
    """A user's dataset: (H, W) uint8 numpy images and int labels, counting what is read."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, bad: dict[int, np.ndarray] | None = None) -> None:
        self.x, self.y, self.bad, self.reads = x[:, 0].numpy(), y.tolist(), bad or {}, 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        self.reads += 1
        return self.bad.get(i, self.x[i]), self.y[i]


class Endless(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield from iter(torch.zeros(10, 4))


def _config(out, **kw):
    base = dict(
        prior="gmm",
        guide="mixture",
        network="mlp",
        hidden=(32,),
        latent_dim=3,
        components=4,
        guide_components=2,
        epochs=2,
        batch_size=64,
        out=str(out),
    )
    return TrainConfig(**{**base, **kw})


def _same_parameters(a, b) -> bool:
    sa, sb = (
        {**a.model.state_dict(), **a.guide.state_dict()},
        {**b.model.state_dict(), **b.guide.state_dict()},
    )
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _metrics(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("seconds")} for line in lines]


def test_a_stream_holds_the_points_from_arrays_makes(points):
    x, y = points
    streamed, memory = stream(Images(x, y)), from_arrays(x, train_y=y)
    assert isinstance(streamed.train_x, StreamedPoints) and streamed.streamed and not memory.streamed
    assert streamed.train_x.shape == memory.train_x.shape == (600, 1, 8, 8)
    assert torch.equal(streamed.test_x, memory.test_x) and torch.equal(streamed.test_y, memory.test_y)
    assert torch.equal(streamed.train_x[:], memory.train_x)
    assert torch.equal(torch.cat(list(streamed.train_x.split(100))), memory.train_x)
    pick = torch.tensor([5, 0, 599, 5])
    assert torch.equal(streamed.train_x[pick], memory.train_x[pick])
    mask = memory.train_x.flatten(1).mean(1) > 0.3
    assert torch.equal(streamed.train_x[mask], memory.train_x[mask])
    assert torch.equal(streamed.train_x[-1], memory.train_x[-1])
    xs, ys = streamed.train_x.labelled(pick)
    assert torch.equal(xs, memory.train_x[pick]) and torch.equal(ys, memory.train_y[pick])
    assert streamed.num_classes == memory.num_classes == 10


def test_training_on_a_stream_equals_training_in_memory(points, tmp_path, monkeypatch):
    """Same seeded order, same draws: bitwise the same parameters and metrics; read minibatch by minibatch."""
    x, y = points
    sizes = []
    real = stream_module.to_points
    monkeypatch.setattr(stream_module, "to_points", lambda a, *args: sizes.append(len(a)) or real(a, *args))
    source = Images(x, y)
    streamed = train(
        _config(tmp_path / "s", eval_batch_size=100), dataset=source, progress=False, figures=False
    )
    memory = train(
        _config(tmp_path / "m", eval_batch_size=100),
        dataset=from_arrays(x, train_y=y),
        progress=False,
        figures=False,
    )
    assert _same_parameters(streamed, memory)
    assert _metrics(tmp_path / "s") == _metrics(tmp_path / "m")
    assert streamed.summary["train_elbo"] == memory.summary["train_elbo"]
    assert json.loads((tmp_path / "s" / "config.json").read_text())["dataset"] == "stream:Images"
    # never more than a minibatch (of training or of evaluation) at a time; every point read each epoch
    assert max(sizes) <= stream_module.READ_BATCH and source.reads >= 2 * 600


def test_worker_processes_give_the_same_run(points, tmp_path):
    x, y = points
    one = train(
        _config(tmp_path / "w0", epochs=1), dataset=stream(Images(x, y)), progress=False, figures=False
    )
    two = train(
        _config(tmp_path / "w2", epochs=1),
        dataset=stream(Images(x, y), workers=2),
        progress=False,
        figures=False,
    )
    assert _same_parameters(one, two)


def test_an_interrupted_stream_resumes_exactly(points, tmp_path):
    x, y = points
    opts = dict(progress=False, figures=False)
    straight = train(_config(tmp_path / "straight", epochs=3), dataset=Images(x, y), **opts)

    def interrupt(step):
        if step == 13:  # mid-epoch (600 / 64: 10 steps an epoch)
            signal.raise_signal(signal.SIGINT)

    stopped = train(_config(tmp_path / "split", epochs=3), dataset=Images(x, y), after_step=interrupt, **opts)
    assert stopped.interrupted == "SIGINT"
    with pytest.raises(DataError, match="in-memory data"):
        resume(tmp_path / "split", **opts)
    resumed = resume(tmp_path / "split", dataset=Images(x, y), **opts)
    assert _same_parameters(straight, resumed) and _metrics(tmp_path / "split") == _metrics(
        tmp_path / "straight"
    )


def test_the_parts_that_read_training_data_read_the_stream(points, tmp_path):
    """Data-initialised pseudo-inputs, the warm start's codes, the post-hoc GMM, the aggregate
    posterior's draws and evaluate's sample-quality classifier, all as in memory."""
    x, y = points
    opts = dict(progress=False, figures=False)
    common = dict(guide="gaussian", components=4, epochs=1)
    for name, kw in {
        "vamp": dict(prior="vampprior", pseudo_inputs=5, pseudo_init="data"),
        "posthoc": dict(prior="posthoc-gmm", posthoc_components=3),
    }.items():
        s = train(_config(tmp_path / f"{name}-s", **common, **kw), dataset=Images(x, y), **opts)
        m = train(_config(tmp_path / f"{name}-m", **common, **kw), dataset=from_arrays(x, train_y=y), **opts)
        assert _same_parameters(s, m), name
    warm = dict(prior="gmm", init_from=str(tmp_path / "posthoc-s"), **{k: v for k, v in common.items()})
    s = train(_config(tmp_path / "warm-s", **warm), dataset=Images(x, y), **opts)
    warm["init_from"] = str(tmp_path / "posthoc-m")
    m = train(_config(tmp_path / "warm-m", **warm), dataset=from_arrays(x, train_y=y), **opts)
    assert _same_parameters(s, m)
    data_s, data_m = stream(Images(x, y)), from_arrays(x, train_y=y)
    torch.manual_seed(3)
    zs = sample_latents(s, 50, "aggregate", data=data_s)
    torch.manual_seed(3)
    assert torch.equal(zs, sample_latents(m, 50, "aggregate", data=data_m))
    es = evaluate_run(tmp_path / "warm-s", iw_samples=5, dataset=Images(x, y), num_draws=100)
    em = evaluate_run(tmp_path / "warm-m", iw_samples=5, dataset=data_m, num_draws=100)
    assert es["sample_quality"] == em["sample_quality"] and es["log_likelihood"] == em["log_likelihood"]
    with pytest.raises(ConfigError, match="streamed"):
        evaluate_run(tmp_path / "warm-s", iw_samples=5, split="train", dataset=Images(x, y))


def test_evaluation_binarisation_of_a_stream_is_fixed_per_point(points):
    x, y = points
    pts = evaluation_data(stream(Images(x, y)).train_x, "dynamic")
    whole = torch.cat(list(pts.split(64)))
    assert set(whole.unique().tolist()) == {0.0, 1.0}
    pick = torch.tensor([7, 300, 7])
    assert torch.equal(pts[pick], whole[pick])  # the same draw, whichever minibatch reads it
    assert torch.equal(torch.cat(list(pts.split(100))), whole)


def test_bad_streams_are_one_line_and_write_nothing(points, tmp_path):
    x, y = points
    nan = np.full((8, 8), np.nan, dtype=np.float32)
    cases = {
        "cannot be indexed": Endless(),
        "empty": torch.utils.data.TensorDataset(torch.zeros(0, 4)),
    }
    for message, bad in cases.items():
        with pytest.raises(DataError, match=message):
            stream(bad)
    with pytest.raises(DataError, match="workers"):
        stream(Images(x, y), workers=-1)
    # the first minibatch is checked before the run folder is written
    first = int(stream(Images(x, y)).train_x.indices[1])  # in the first minibatch
    with pytest.raises(DataError, match=r"items .* contains NaN or inf"):
        train(_config(tmp_path / "nan"), dataset=Images(x, y, {first: nan}), progress=False)
    assert not (tmp_path / "nan").exists()
    wide = torch.utils.data.TensorDataset(torch.rand(100, 4) * 3)
    with pytest.raises(DataError, match=r"outside the \[0, 1\] the bernoulli likelihood needs"):
        train(_config(tmp_path / "range"), dataset=wide, progress=False)
    assert not (tmp_path / "range").exists()
    with pytest.raises(ConfigError, match="labels-per-class"):
        train(_config(tmp_path / "ssl", labels_per_class=5), dataset=Images(x, y), progress=False)
    assert not (tmp_path / "ssl").exists()
    # a bad point later on stops training at its minibatch with the points named
    late = int(stream(Images(x, y)).train_x.indices[-1])
    with pytest.raises(DataError, match=r"items \d+\.\.\d+ of the Images .*NaN"):
        train(_config(tmp_path / "late"), dataset=Images(x, y, {late: nan}), progress=False, figures=False)
    odd = Images(x, y, {late: np.zeros((7, 8), dtype=np.uint8)})
    with pytest.raises(DataError, match="do not stack into one minibatch"):
        train(_config(tmp_path / "odd"), dataset=odd, progress=False, figures=False)
    tensors = [(torch.rand(8, 8),) for _ in range(99)] + [(torch.rand(7, 8),)]  # torch.stack refuses them
    with pytest.raises(DataError, match=r"do not stack into one minibatch \(stack expects each tensor"):
        stream(tensors).train_x[:]


def test_a_held_out_dataset_is_read_into_memory(points):
    x, y = points
    data = stream(Images(x[:500], y[:500]), Images(x[500:], y[500:]), name="mine")
    assert data.name == "mine" and len(data.train_x) == 500
    assert isinstance(data.test_x, torch.Tensor) and torch.equal(data.test_x, x[500:].float() / 255)
    assert torch.equal(data.test_y, y[500:])
    assert isinstance(Dataset("d", data.train_x, data.test_x).train_x, StreamedPoints)


def test_readme_own_data_example_runs(tmp_path, monkeypatch):
    namespace = run_readme_block("dataset=Faces()", tmp_path, monkeypatch)
    run = namespace["run"]
    assert run.epoch == 2 and run.summary["num_train"] == 320 and run.config.network == "conv"
    evaluation = json.loads((tmp_path / "runs" / "own-data" / "evaluation.json").read_text())
    assert evaluation["num_points"] == 80 and "sample_quality" in evaluation
