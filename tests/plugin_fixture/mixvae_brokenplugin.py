"""A plugin that registers a prior and then fails to import: none of it may stay registered."""

from mixvae.models import PRIORS, StandardPrior


@PRIORS.register("half-registered")
class HalfRegisteredPrior(StandardPrior):
    story = "registered by a plugin that then fails"


raise RuntimeError("this plugin is broken on purpose")
