"""Exceptions raised by mixvae.

Every error a user can cause derives from :class:`MixvaeError`; the CLI turns
them into a one-line message and exit code 2.  Each message names the problem
and the fix.
"""

from __future__ import annotations


class MixvaeError(Exception):
    """Base class of all errors a user of mixvae can cause."""


class ConfigError(MixvaeError, ValueError):
    """A setting is out of range or names something that does not exist."""


class UnknownNameError(ConfigError, KeyError):
    """A prior, guide, dataset or likelihood name that no registry holds."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class IncompatiblePairError(ConfigError):
    """A prior and a guide that cannot be trained together."""


class DataError(MixvaeError, ValueError):
    """Data that is missing, corrupt, or does not fit the likelihood."""


class CheckpointError(MixvaeError, RuntimeError):
    """A run folder or checkpoint that cannot be used."""


class TrainingDiverged(MixvaeError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
