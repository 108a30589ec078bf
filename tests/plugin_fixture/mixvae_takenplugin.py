"""A plugin that registers a prior under a name mixvae already uses."""

from mixvae.models import PRIORS, StandardPrior


@PRIORS.register("gmm")
class NotTheGMMPrior(StandardPrior):
    story = "a prior whose name is taken"
