"""Which of Pyro's ELBOs compute the right objective for which pair: the table of ``mixvae list --elbos``.

The verdict follows from what the parts declare, never from their names:
whether the prior has a discrete site the model sums out (``y`` of ``gmm``
with a guide that does not provide it), whether the guide enumerates the
model's discrete site itself (the ``categorical`` guide), or neither.
``tests/test_pyro_tools.py`` runs every ELBO on every registered pair and
checks each verdict against the estimate it computes.

* ``exact``: the pair's ELBO with the discrete sites summed out, unbiased
  in value and gradient (what mixvae trains; a score-function gradient for a
  sampled discrete site is noisier);
* ``looser``: a valid lower bound, below the pair's ELBO, because it samples
  the model's discrete site from the prior instead of summing it out;
* ``other bound``: RenyiELBO (alpha = 0) is the importance-weighted bound of
  the *whole minibatch* jointly (not per datapoint), at least the ELBO on a
  whole data set; with ``num_data`` scaling a minibatch it is no bound of
  log p(x) at all.  mixvae's own per-datapoint bound is ``IWAE_ELBO``;
* ``fails``: raises.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixvae.build import compatible_guides
from mixvae.guides import GUIDES, Guide
from mixvae.models import PRIORS, Prior

#: Pyro's ELBOs, in the order of the table
ELBO_NAMES = (
    "TraceEnum_ELBO",
    "JitTraceEnum_ELBO",
    "TraceMeanField_ELBO",
    "Trace_ELBO",
    "TraceGraph_ELBO",
    "RenyiELBO",
)
VERDICTS = ("exact", "looser", "other bound", "fails")


@dataclass(frozen=True)
class Verdict:
    """What one of Pyro's ELBOs computes for one pair: one of :data:`VERDICTS`, and why."""

    verdict: str
    reason: str


def pair_kind(prior: type[Prior] | Prior, guide: type[Guide] | Guide) -> str:
    """``"model-enumerated"``, ``"guide-enumerated"`` or ``"continuous"``: where the pair's discrete site is summed."""
    if guide.discrete_site is not None:
        return "guide-enumerated"
    if any(site not in guide.provides for site in prior.enumerated_sites):
        return "model-enumerated"
    return "continuous"


def elbo_verdict(prior: type[Prior] | Prior, guide: type[Guide] | Guide, elbo: str) -> Verdict:
    """The verdict of Pyro's ``elbo`` (one of :data:`ELBO_NAMES`) on the pair ``prior`` x ``guide``."""
    kind = pair_kind(prior, guide)
    site = prior.discrete_site or guide.discrete_site
    if elbo == "TraceEnum_ELBO":
        return Verdict("exact", "the reference: discrete sites summed out (max_plate_nesting=1)")
    if elbo == "JitTraceEnum_ELBO":
        return Verdict("exact", "as TraceEnum_ELBO, compiled (pass num_data as a keyword; --jit)")
    if elbo == "TraceMeanField_ELBO":
        if kind == "model-enumerated":
            return Verdict("fails", f"KeyError: '{site}' (it cannot sum out the model's {site})")
        if kind == "guide-enumerated":
            return Verdict("fails", f"NotImplementedError: the guide's {site} is not reparameterised")
        return Verdict("exact", "closed-form KL where torch has one (mixvae's --kl analytic)")
    if elbo in ("Trace_ELBO", "TraceGraph_ELBO"):
        if kind == "model-enumerated":
            if elbo == "TraceGraph_ELBO":
                return Verdict("fails", f"KeyError: '{site}' in its gradient (loss_and_grads)")
            return Verdict("looser", f"samples the model's {site} from the prior instead of summing it out")
        if kind == "guide-enumerated":
            return Verdict("exact", f"samples the guide's {site}: a score-function gradient (noisier)")
        return Verdict("exact", "Monte Carlo KL (mixvae's --kl mc)")
    if elbo == "RenyiELBO":
        if kind == "model-enumerated":
            return Verdict(
                "looser", f"samples the model's {site} from the prior; a bound of the minibatch jointly"
            )
        return Verdict("other bound", "IWAE of the minibatch jointly; no bound with num_data scaling")
    raise KeyError(f"unknown ELBO {elbo!r}; choose one of {', '.join(ELBO_NAMES)}")


def elbo_table() -> list[tuple[str, str, dict[str, Verdict]]]:
    """Every registered pair with the verdict of each of :data:`ELBO_NAMES`."""
    return [
        (prior, guide, {elbo: elbo_verdict(PRIORS[prior], GUIDES[guide], elbo) for elbo in ELBO_NAMES})
        for prior in PRIORS.names()
        for guide in compatible_guides(prior)
    ]


def elbo_table_markdown() -> str:
    """The table as Markdown (the README's, checked against this by a test)."""
    lines = [
        "| prior x guide | " + " | ".join(f"`{e}`" for e in ELBO_NAMES) + " |",
        "| --- |" + " --- |" * len(ELBO_NAMES),
    ]
    for prior, guide, verdicts in elbo_table():
        lines.append(
            f"| `{prior}` x `{guide}` | " + " | ".join(verdicts[e].verdict for e in ELBO_NAMES) + " |"
        )
    return "\n".join(lines)
