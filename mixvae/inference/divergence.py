"""Diverging training: name the cause and stop before a bad state reaches a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pyro
import torch
from pyro import poutine

from mixvae.errors import TrainingDiverged
from mixvae.guides import Guide
from mixvae.models import VAE
from mixvae.runs.folder import Run


def nonfinite_report(model: VAE, guide: Guide, x: torch.Tensor, num_data: int) -> str:
    """Which parameters or log-density terms are not finite (for the divergence message)."""
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


def diverged(run: Run, xb: torch.Tensor, n: int, where: str, ckpt: Path, what: str) -> TrainingDiverged:
    return TrainingDiverged(
        f"{what} at {where} ({nonfinite_report(run.model, run.guide, xb, n)}); the last good "
        f"checkpoint ({ckpt}) is kept; lower --lr, set --clip-grad or lengthen --warmup-epochs"
    )


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
