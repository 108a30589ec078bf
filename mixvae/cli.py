"""The ``mixvae`` command: ``mixvae train`` and ``mixvae list``.

Every flag of ``mixvae train`` is a field of :class:`~mixvae.config.TrainConfig`.
Errors a user can cause print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence

from mixvae.config import TrainConfig
from mixvae.errors import ConfigError, MixvaeError


def _hidden(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 512,512, got {text!r}"
        ) from None


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        kind = hints[f.name]
        if kind is bool:
            if f.default:
                parser.add_argument(
                    f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_false", help=help_text
                )
            else:
                parser.add_argument(flag, dest=f.name, action="store_true", help=help_text)
            continue
        if f.name == "hidden":
            conv = _hidden
        else:
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            conv = args[0] if args else kind
        parser.add_argument(flag, dest=f.name, type=conv, help=f"{help_text} (default: {f.default})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixvae",
        description="Variational autoencoders with swappable Gaussian and mixture priors and guides.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train",
        help="train a prior/guide pair (no flags: the GMVAE demo on digits)",
        argument_default=argparse.SUPPRESS,  # flags not given stay out of the namespace
    )
    _add_config_flags(train)
    train.add_argument(
        "--resume", metavar="RUN", help="continue the run in folder RUN (same config) up to --epochs in total"
    )
    train.add_argument("--quiet", action="store_true", default=False, help="no progress bar")
    sub.add_parser("list", help="list the priors, guides, likelihoods and data sets")
    return parser


def _list() -> None:
    from mixvae.data import DATASETS
    from mixvae.guides import GUIDES
    from mixvae.inference import compatible_guides, compatible_priors
    from mixvae.models import LIKELIHOODS, PRIORS

    print("priors:")
    for name, cls in PRIORS.items():
        print(f"  {name:<14} {cls.story}")
        print(f"  {'':<14} pairs with guides: {', '.join(compatible_guides(name))}")
    print("guides:")
    for name, cls in GUIDES.items():
        print(f"  {name:<14} {cls.story}")
        print(f"  {'':<14} pairs with priors: {', '.join(compatible_priors(name))}")
    print("likelihoods:")
    for name, cls in LIKELIHOODS.items():
        print(f"  {name:<14} {cls.story}")
    print("datasets:")
    for name, loader in DATASETS.items():
        print(f"  {name:<14} {(loader.__doc__ or '').strip().splitlines()[0]}")


#: flags that may change when a run is resumed
RESUMABLE = {"epochs", "device"}
#: exit status after SIGINT / SIGTERM, as a shell reports a process killed by them
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}


def _train(args: argparse.Namespace) -> int:
    from mixvae.inference import resume, train

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    if getattr(args, "resume", None):
        fixed = sorted(set(given) - RESUMABLE)
        if fixed:
            flags = ", ".join("--" + name.replace("_", "-") for name in fixed)
            raise ConfigError(
                f"--resume continues the stored configuration; only --epochs and --device may change "
                f"(drop {flags}, or start a new run with --out)"
            )
        run = resume(args.resume, progress=not args.quiet, **given)
    else:
        run = train(TrainConfig(**given), progress=not args.quiet)
    if run.interrupted:
        print(
            f"mixvae: {run.interrupted} after {run.epoch} full epochs; checkpoint written to "
            f"{run.run_dir}/checkpoint.pt; continue with: mixvae train --resume {run.run_dir}",
            file=sys.stderr,
        )
        return SIGNAL_EXIT.get(run.interrupted, 1)
    s = run.summary or {}
    line = f"{run.run_dir}: held-out ELBO {s.get('heldout_elbo', float('nan')):.3f} nats"
    if "clustering" in s:
        c = s["clustering"]
        line += f", cluster accuracy {c['acc_hungarian']:.3f}, NMI {c['nmi']:.3f}"
    print(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mixvae`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            _list()
            return 0
        return _train(args)
    except MixvaeError as e:
        print(f"mixvae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mixvae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
