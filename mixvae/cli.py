"""The ``mixvae`` command: ``mixvae train``, ``list``, ``evaluate`` and ``sample``.

Every flag of ``mixvae train`` is a field of :class:`~mixvae.config.TrainConfig`.
``--plugin MODULE`` (repeatable, before or after the command) and the
environment variable ``MIXVAE_PLUGINS`` import plugin modules that register
more parts (:mod:`mixvae.plugins`) before the rest of the command line is read.
Errors a user can cause print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mixvae import options as _options
from mixvae.config import TrainConfig
from mixvae.errors import ConfigError, MixvaeError, PluginError, os_error_message
from mixvae.plugins import ENV_VAR, load_env_plugins, load_plugin, plugin_module, record_plugins

if TYPE_CHECKING:
    from mixvae.registry import Registry


def _hidden(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 512,512, got {text!r}"
        ) from None


def _converter(kind: Any) -> Any:
    if typing.get_origin(kind) is tuple:  # --hidden 512,512, --conv-channels 32,64
        return _hidden
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return args[0] if args else kind


def _add_flag(parser: Any, name: str, kind: Any, default: Any, help_text: str) -> None:
    flag = "--" + name.replace("_", "-")
    if kind is bool:
        if default:
            parser.add_argument(
                f"--no-{name.replace('_', '-')}", dest=name, action="store_false", help=help_text
            )
        else:
            parser.add_argument(flag, dest=name, action="store_true", help=help_text)
        return
    conv = _converter(kind)
    parser.add_argument(flag, dest=name, type=conv, help=f"{help_text} (default: {default})")


def config_flag_names() -> list[str]:
    """The settings ``mixvae train`` has a flag for: TrainConfig's fields, then every part option."""
    fields = [f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("flag", True)]
    return [*fields, *(n for n in _options.specs() if n not in fields)]


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.metadata.get("flag", True):  # (plugins and options are recorded, not set by hand)
            _add_flag(parser, f.name, hints[f.name], f.default, f.metadata.get("help", ""))
    group = parser.add_argument_group(
        "options of the parts",
        "each prior, guide, likelihood and network declares its own (see `mixvae list`)",
    )
    for spec in _options.specs().values():
        default = spec.defaults[0][1]
        _add_flag(group, spec.name, _converter(spec.kind), default, f"{spec.help} [{spec.describe_owners()}]")


PLUGIN_HELP = (
    "import MODULE first, a plugin that registers priors, guides, likelihoods or data sets "
    f"(repeatable; {ENV_VAR}=MODULE,... does the same; installed plugins load by themselves)"
)


def _add_plugin_flag(parser: argparse.ArgumentParser) -> None:
    # Read by plugin_flags() before this parser is built; here for --help and so that
    # the flag is accepted on either side of the command.
    parser.add_argument(
        "--plugin", action="append", metavar="MODULE", default=argparse.SUPPRESS, help=PLUGIN_HELP
    )


def plugin_flags(argv: Sequence[str]) -> list[str]:
    """The modules named by ``--plugin`` anywhere in ``argv``, in order."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    pre.add_argument("--plugin", action="append", default=[])
    try:
        known, _ = pre.parse_known_args(list(argv))
    except argparse.ArgumentError:  # e.g. --plugin without a value: the full parser reports it
        return []
    return known.plugin


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixvae",
        description="Variational autoencoders with swappable Gaussian and mixture priors and guides.",
    )
    _add_plugin_flag(parser)
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
    train.add_argument(
        "--config",
        metavar="FILE",
        help="read the settings from a .toml, .yaml or .json file (a run's config.json is one); "
        "flags given on the command line override it",
    )
    train.add_argument("--quiet", action="store_true", default=False, help="no progress bar")
    train.add_argument(
        "--devices", type=int, default=None, help="train with PyTorch Lightning on N processes / GPUs"
    )
    train.add_argument("--accelerator", default="cpu", choices=("cpu", "gpu", "auto"), help="with --devices")
    train.add_argument("--strategy", default="ddp", help="Lightning strategy with --devices (default: ddp)")
    listing = sub.add_parser("list", help="list the priors, guides, likelihoods and data sets")
    listing.add_argument(
        "--elbos", action="store_true", help="which of Pyro's ELBOs compute the right objective for each pair"
    )
    evaluate = sub.add_parser("evaluate", help="log-likelihood, ELBO surgery, clustering and sample quality")
    evaluate.add_argument("run", help="the run folder")
    evaluate.add_argument(
        "--iw-samples",
        type=int,
        default=1000,
        help="importance samples per datapoint (5000 for reported numbers)",
    )
    evaluate.add_argument("--split", default="test", choices=("test", "train"), help="which data to evaluate")
    evaluate.add_argument(
        "--surgery-points",
        type=int,
        default=None,
        help="datapoints in the aggregate posterior (default: all)",
    )
    evaluate.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    evaluate.add_argument("--seed", type=int, default=0, help="random seed")
    evaluate.add_argument("--device", default="cpu", help="torch device: cpu | cuda")
    sample = sub.add_parser("sample", help="write a PNG grid of samples from a trained run")
    sample.add_argument("run", help="the run folder")
    sample.add_argument("--n", type=int, default=64, help="number of samples (per row with --component all)")
    sample.add_argument(
        "--source",
        default="prior",
        choices=("prior", "aggregate", "posthoc-gmm"),
        help="the prior, the aggregate posterior q(z), or a GMM fitted to q(z) (fitted on first use)",
    )
    sample.add_argument(
        "--component", default=None, help="fix the mixture component k, or 'all' for one row per component"
    )
    sample.add_argument("--seed", type=int, default=0, help="random seed")
    sample.add_argument("--out", default=None, help="PNG path (default: RUN/samples-SOURCE[-COMPONENT].png)")
    for command in (evaluate, sample):
        command.add_argument(
            "--data-dir", default=None, help="where the run's data files are now (they moved)"
        )
    for command in (train, listing, evaluate, sample):
        _add_plugin_flag(command)
    return parser


def _list() -> None:
    from mixvae.build import compatible_guides, compatible_priors
    from mixvae.data import DATASETS
    from mixvae.guides import GUIDES
    from mixvae.models import LIKELIHOODS, PRIORS
    from mixvae.networks import NETWORKS

    def origin(registry: Registry[Any], name: str) -> str:
        module = plugin_module(registry, name)
        return "" if module is None else f" (from plugin module {module})"

    def options(kind: str, name: str) -> None:
        for f in dataclasses.fields(_options.options_of(kind, name)):
            flag = "--" + f.name.replace("_", "-")
            default = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
            print(f"  {'':<14} {flag} (default: {default}): {f.metadata.get('help', '')}")

    sections = [
        ("priors:", "prior", PRIORS, lambda n: f"pairs with guides: {', '.join(compatible_guides(n))}"),
        ("guides:", "guide", GUIDES, lambda n: f"pairs with priors: {', '.join(compatible_priors(n))}"),
        ("likelihoods:", "likelihood", LIKELIHOODS, None),
        ("networks (--network; auto: conv for images, mlp for vectors):", "network", NETWORKS, None),
    ]
    for title, kind, registry, pairs in sections:
        print(title)
        for name, cls in registry.items():
            print(f"  {name:<14} {cls.story}{origin(registry, name)}")
            if pairs is not None:
                print(f"  {'':<14} {pairs(name)}")
            options(kind, name)
    print("datasets:")
    for name, loader in DATASETS.items():
        doc = (loader.__doc__ or "").strip().splitlines()
        print(f"  {name:<14} {doc[0] if doc else ''}{origin(DATASETS, name)}")


def _list_elbos() -> None:
    from mixvae.inference.elbos import ELBO_NAMES, VERDICTS, elbo_table

    table = elbo_table()
    width = max(len(f"{p} x {g}") for p, g, _ in table) + 2
    print("".ljust(width) + "".join(e.ljust(20) for e in ELBO_NAMES))
    reasons: dict[tuple[str, str], str] = {}
    for prior, guide, verdicts in table:
        print(f"{prior} x {guide}".ljust(width) + "".join(verdicts[e].verdict.ljust(20) for e in ELBO_NAMES))
        for e in ELBO_NAMES:
            reasons.setdefault((e, verdicts[e].reason), verdicts[e].verdict)
    print(f"\nverdicts ({', '.join(VERDICTS)}; see mixvae.inference.elbos):")
    for (elbo, reason), verdict in reasons.items():
        print(f"  {elbo} {verdict}: {reason}")


#: flags that may change when a run is resumed: how long, where it runs, where its data live,
#: the step size and clipping (to continue a diverged run), how often it checkpoints and scores
#: the held-out data
RESUMABLE = {"epochs", "device", "data_dir", "download", "lr", "clip_grad"}
RESUMABLE |= {"checkpoint_every", "checkpoint_minutes", "eval_every", "logger"}
#: exit status after SIGINT / SIGTERM, as a shell reports a process killed by them
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}


def _train(args: argparse.Namespace) -> int:
    from mixvae.inference import resume, train

    given = {name: getattr(args, name) for name in config_flag_names() if hasattr(args, name)}
    if getattr(args, "config", None):
        if getattr(args, "resume", None):
            raise ConfigError("--config starts a new run; --resume continues the stored one: drop one")
        given = {**_config_file(args.config), **given}  # the command line wins
    if getattr(args, "resume", None):
        fixed = sorted(set(given) - RESUMABLE)
        if fixed:
            flags = ", ".join("--" + name.replace("_", "-") for name in fixed)
            allowed = ", ".join("--" + n.replace("_", "-") for n in sorted(RESUMABLE - {"download"}))
            raise ConfigError(
                f"--resume continues the stored configuration; only {allowed} and --[no-]download may "
                f"change (drop {flags}, or start a new run with --out)"
            )
        run = resume(args.resume, progress=not args.quiet, **given)
    elif getattr(args, "devices", None) is not None:
        from mixvae.inference.lightning import train_lightning

        if args.devices < 1:
            raise ConfigError(f"--devices must be a positive integer, got {args.devices}")
        run = train_lightning(
            record_plugins(TrainConfig(**given)),
            devices=args.devices,
            accelerator=args.accelerator,
            strategy=args.strategy,
            progress=not args.quiet,
        )
        if run.summary is None:  # a worker process of rank > 0
            return 0
    else:
        run = train(record_plugins(TrainConfig(**given)), progress=not args.quiet)
    if run.interrupted:
        saved = f"checkpoint written to {run.run_dir}/checkpoint.pt"
        if run.run_dir is not None and not (run.run_dir / "checkpoint.pt").is_file():  # in its --restarts
            saved = f"the checkpoints of its restarts are in {run.run_dir}/restarts"
        print(
            f"mixvae: {run.interrupted} after {run.epoch} full epochs; {saved}; continue with: "
            f"mixvae train --resume {run.run_dir}",
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


def _config_file(path: str) -> dict[str, Any]:
    """The settings of ``--config FILE``: the plugins it records are loaded first (their
    parts' options are settings too), then every key is checked."""
    from mixvae.config_files import check_keys, load_config_file

    settings, plugins = load_config_file(path)
    for module in plugins:
        load_plugin(module)
    check_keys(path, settings, config_flag_names())
    settings.pop("overwrite", None)  # a file never replaces a run: --overwrite on the command line
    if isinstance(settings.get("hidden"), str):
        settings["hidden"] = _hidden(settings["hidden"])
    return settings


def _sample(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mixvae.runs.lock import RunLock

    _check_seed(args.seed)
    if args.n < 1:
        raise ConfigError(f"--n must be a positive integer, got {args.n}")
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() != ".png":
        raise ConfigError(
            f"--out {args.out} is not a .png path; sample writes PNG files: --out {out.stem}.png"
        )
    if out is not None and not out.parent.is_dir():
        raise ConfigError(f"--out {args.out}: the folder {out.parent} does not exist; create it first")
    run_dir = Path(args.run)
    # It writes into the run folder (the default --out, a post-hoc GMM fitted on first use): lock it.
    writes_run = out is None or out.resolve().parent == run_dir.resolve() or args.source == "posthoc-gmm"
    if writes_run and run_dir.is_dir():
        with RunLock(run_dir, "sample"):
            return _sample_run(args, run_dir, out)
    return _sample_run(args, run_dir, out)


def _sample_run(args: argparse.Namespace, run_dir: Any, out: Any) -> int:
    from pathlib import Path

    import pyro

    from mixvae.evaluation.sampling import sample_images
    from mixvae.figures.training import figure_shape, plot_sample_grid, square_image_shape
    from mixvae.runs import load_run
    from mixvae.runs.folder import run_dataset

    run = load_run(run_dir)
    component: int | str | None = args.component
    if component not in (None, "all"):
        try:
            component = int(component)
        except ValueError:
            raise ConfigError(f"--component takes an integer or 'all', got {component!r}") from None
    c = run.config
    # a stored run never downloads by itself (its data folder is the one it was trained on)
    data = None if args.source == "prior" else run_dataset(c, run_dir, data_dir=args.data_dir)
    shape = figure_shape(run.model.decoder.data_shape, None if data is None else data.image_shape)
    if shape is None and data is not None:
        raise ConfigError(f"data set {c.dataset!r} has no image shape to draw")
    shape = shape or square_image_shape(c.dataset, run.model.decoder.data_dim)
    pyro.set_rng_seed(args.seed)
    images = sample_images(run, args.n, args.source, component, data)
    suffix = "" if component is None else f"-{component}"
    out = out if out is not None else Path(run_dir) / f"samples-{args.source}{suffix}.png"
    title = f"samples from the {args.source}" + ("" if component is None else f", component {component}")
    plot_sample_grid(images, shape, out, title)
    print(out)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from mixvae.evaluation.evaluate import evaluate_run

    if args.iw_samples < 1:
        raise ConfigError(f"--iw-samples must be a positive integer, got {args.iw_samples}")
    if args.surgery_points is not None and args.surgery_points < 1:
        raise ConfigError(f"--surgery-points must be a positive integer, got {args.surgery_points}")
    _check_seed(args.seed)
    result = evaluate_run(
        args.run,
        iw_samples=args.iw_samples,
        split=args.split,
        figures=not args.no_figures,
        seed=args.seed,
        surgery_points=args.surgery_points,
        device=args.device,
        data_dir=args.data_dir,
    )
    bits = f" ({result['bits_per_dim']:.4f} bits/dim)" if "bits_per_dim" in result else ""
    print(
        f"{args.run}/evaluation.json: log p(x) {result['log_likelihood']:.3f}{bits}, ELBO {result['elbo']:.3f} "
        f"nats ({args.split}, S={result['iw_samples']}); MI {result['mutual_information']:.3f}, "
        f"marginal KL {result['marginal_kl']:.3f}, active units {result['active_units']}"
    )
    return 0


def _check_seed(seed: int) -> None:
    from mixvae.config import MAX_SEED

    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed must be an integer in 0..{MAX_SEED}, got {seed}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mixvae`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # The plugins first: their parts must be registered before any name is checked.
    try:
        try:
            load_env_plugins()
        except PluginError as e:
            raise PluginError(f"{ENV_VAR}: {e}", e.module, e.problem) from None
        for module in plugin_flags(argv):
            load_plugin(module)
    except MixvaeError as e:
        print(f"mixvae: error: {e}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            _list_elbos() if args.elbos else _list()
            return 0
        if args.command == "sample":
            return _sample(args)
        if args.command == "evaluate":
            return _evaluate(args)
        return _train(args)
    except MixvaeError as e:
        print(f"mixvae: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a permission, a missing path: the user's to fix
        print(f"mixvae: error: {os_error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mixvae: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130


def _resume_hint(args: argparse.Namespace) -> str:
    """After Ctrl-C in ``train``: how to continue, when a checkpoint exists."""
    from pathlib import Path

    run = getattr(args, "resume", None) or getattr(args, "out", None)
    if args.command != "train" or not run or not (Path(run) / "checkpoint.pt").is_file():
        return " (every file written so far is complete: mixvae writes them atomically)"
    return f"; the checkpoint in {run} is complete: continue with mixvae train --resume {run}"


if __name__ == "__main__":
    sys.exit(main())
