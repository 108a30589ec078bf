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


class SiteDeclarationError(ConfigError):
    """A part's Pyro program does not sample the sites its ``sites`` declaration lists."""


class PluginError(ConfigError):
    """A plugin module that fails to import, or registers a name another module holds.

    :param module: the plugin module.
    :param problem: what went wrong, in a few words (e.g. ``"ImportError: No module named 'x'"``).
    """

    def __init__(self, message: str, module: str | None = None, problem: str | None = None) -> None:
        super().__init__(message)
        self.module = module
        self.problem = problem


class DataError(MixvaeError, ValueError):
    """Data that is missing, corrupt, or does not fit the likelihood."""


class CheckpointError(MixvaeError, RuntimeError):
    """A run folder or checkpoint that cannot be used."""


class RunFolderError(MixvaeError, RuntimeError):
    """A run folder that is in use, not a run, damaged, or cannot be written (space, permissions)."""


class TrainingDiverged(MixvaeError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class ObjectiveMismatch(MixvaeError, RuntimeError):
    """The direct ELBO and Pyro's ELBO differ: a part's Pyro program is not what it declares."""


def os_error_message(e: OSError) -> str:
    """One line for an operating-system error a user can fix: what failed, where, and the fix."""
    import errno

    where = f" ({e.filename})" if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free space (or choose another --out) and run again; a run continues with --resume RUN"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the path writable or choose another folder"
    elif e.errno in (errno.ENOENT, errno.ENOTDIR):
        fix = "check the path"
    else:
        fix = "check the path and the disk"
    return f"{e.strerror or e}{where}; {fix}"
