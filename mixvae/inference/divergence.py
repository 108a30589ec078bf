"""Diverging training: name the cause and stop before a bad state reaches a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pyro
import torch
from pyro import poutine

from mixvae.errors import TrainingDiverged
from mixvae.guides import Guide
from mixvae.models import VAE
from mixvae.runs.checkpoint import describe_kept
from mixvae.runs.folder import Run


def nonfinite_report(model: VAE, guide: Guide, x: torch.Tensor, num_data: int) -> str:
    """Which parameters or log-density terms are not finite (for the divergence message).

    Never raises: the report of a broken state must not itself break (with
    non-finite parameters a guide may refuse to run at all).
    """
    try:
        return _report(model, guide, x, num_data)
    except Exception as e:  # any failure of the inspection is reported, not raised
        return f"the terms could not be inspected: {type(e).__name__}: {str(e).splitlines()[0][:100]}"


def _report(model: VAE, guide: Guide, x: torch.Tensor, num_data: int) -> str:
    bad_params = [
        name
        for module, prefix in ((model, "model"), (guide, "guide"))
        for name, p in module.named_parameters(prefix=prefix)
        if not torch.isfinite(p).all() or (p.grad is not None and not torch.isfinite(p.grad).all())
    ]
    if bad_params:
        return f"non-finite parameters or gradients: {', '.join(bad_params[:5])}"
    with torch.no_grad(), pyro.validation_enabled(False):
        guide_tr = poutine.trace(guide).get_trace(x, num_data)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x, num_data)
    terms = [
        f"{where} {name}"
        for where, tr in (("model", model_tr), ("guide", guide_tr))
        for name, site in tr.nodes.items()
        if site["type"] == "sample"
        and hasattr(site["fn"], "log_prob")
        and not torch.isfinite(site["fn"].log_prob(site["value"])).all()
    ]
    return f"non-finite log-density terms: {', '.join(terms)}" if terms else "no single term to blame"


def advice(run: Run, ckpt: Path) -> str:
    """The commands that continue (or restart) a diverged run: they work as printed."""
    lower = f"{min(run.config.lr / 10, 1e-3):g}"  # a tenth, and never above Adam's usual 1e-3
    if ckpt.is_file():
        return (
            f"continue from it with a lower learning rate or gradient clipping: mixvae train --resume "
            f"{run.run_dir} --lr {lower} (or --clip-grad 10)"
        )
    return (
        "start again with a lower learning rate (or --clip-grad 10, or a longer --warmup-epochs): "
        + run.config.command_line(lr=float(lower), overwrite=True)
    )


def diverged(run: Run, xb: torch.Tensor, n: int, where: str, ckpt: Path, what: str) -> TrainingDiverged:
    try:
        report = nonfinite_report(run.model, run.guide, xb, n)
        kept, fix = describe_kept(ckpt), advice(run, ckpt)
    except Exception as e:  # the message must reach the user whatever broke
        report, kept, fix = f"({type(e).__name__})", f"{ckpt} is left as it was", "lower --lr"
    return TrainingDiverged(f"{what} at {where} ({report}); {kept}; {fix}")


def all_finite(params: list[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in params)


def check_params(
    run: Run,
    params: list[torch.Tensor],
    xb: torch.Tensor,
    n: int,
    where: str,
    ckpt: Path,
    cause: BaseException | None = None,
) -> None:
    """Raise :class:`TrainingDiverged` before a non-finite parameter can reach a checkpoint."""
    if not all_finite(params):
        raise diverged(run, xb, n, where, ckpt, "the parameters became non-finite") from cause
