"""The generated pages of the documentation site: parts, API reference, tutorials."""

from __future__ import annotations

import dataclasses
import importlib
import shutil
from pathlib import Path

#: the public modules, each with a page of its ``__all__``
MODULES = [
    "mixvae",
    "mixvae.build",
    "mixvae.config",
    "mixvae.devices",
    "mixvae.data",
    "mixvae.models",
    "mixvae.guides",
    "mixvae.distributions",
    "mixvae.inference",
    "mixvae.runs",
    "mixvae.evaluation",
    "mixvae.errors",
    "mixvae.plugins",
    "mixvae.options",
    "mixvae.config_files",
    "mixvae.registry",
    "mixvae.sites",
    "mixvae.networks",
    "mixvae.nn",
    "mixvae.rng",
    "mixvae.figures",
]
#: the modules of the package without a page, and why
UNDOCUMENTED = {
    "__main__": "`python -m mixvae`, the command",
    "cli": "the command line: `mixvae --help` and `mixvae train --help` document every flag",
}


def public_names(module: str) -> list[str]:
    """A module's public names: its ``__all__``, else the classes and functions it defines."""
    mod = importlib.import_module(module)
    if hasattr(mod, "__all__"):
        return [n for n in mod.__all__ if not n.startswith("__")]
    return [
        n
        for n, obj in vars(mod).items()
        if not n.startswith("_") and callable(obj) and getattr(obj, "__module__", None) == module
    ]


def _homes() -> dict[int, str]:
    """Each public object's page: the last module in :data:`MODULES` that exports it (the
    sub-package rather than the top-level re-export); other pages show it without indexing."""
    homes: dict[int, str] = {}
    for module in MODULES:
        for name in public_names(module):
            homes[id(getattr(importlib.import_module(module), name))] = module
    return homes


def _api(out: Path) -> list[str]:
    pages, homes = [], _homes()
    for module in MODULES:
        lines = [f"# `{module}`", "", "```{eval-rst}", f".. automodule:: {module}", "   :no-members:", ""]
        for name in public_names(module):
            obj = getattr(importlib.import_module(module), name)
            kind = "autoclass" if isinstance(obj, type) else "autofunction" if callable(obj) else "autodata"
            options = ["   :members:"] if kind == "autoclass" else []
            if homes[id(obj)] != module:
                options.append("   :no-index:")
            lines += [f".. {kind}:: {module}.{name}", *options, ""]
        lines.append("```")
        path = out / "api" / f"{module}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        pages.append(f"api/{module}")
    return pages


def _parts(out: Path) -> list[str]:
    from mixvae import GUIDES, LIKELIHOODS, PRIORS
    from mixvae.build import compatible_guides, compatible_priors
    from mixvae.options import options_of

    pages = []
    for kind, registry in (("prior", PRIORS), ("guide", GUIDES), ("likelihood", LIKELIHOODS)):
        for name, cls in registry.items():
            lines = [f"# {kind} `{name}`", "", f"**Generative story:** `{cls.story}`", ""]
            if kind == "prior":
                lines += [
                    f"Pairs with the guides: {', '.join(f'`{g}`' for g in compatible_guides(name))}.",
                    "",
                ]
            if kind == "guide":
                lines += [
                    f"Pairs with the priors: {', '.join(f'`{p}`' for p in compatible_priors(name))}.",
                    "",
                ]
            fields = dataclasses.fields(options_of(kind, name))
            if fields:
                lines += ["| option | default | meaning |", "| --- | --- | --- |"]
                lines += [
                    f"| `--{f.name.replace('_', '-')}` | `{f.default}` | {f.metadata.get('help', '')} |"
                    for f in fields
                ]
                lines.append("")
            lines += [
                "```{eval-rst}",
                f".. autoclass:: {cls.__module__}.{cls.__qualname__}",
                "   :noindex:",
                "```",
            ]
            path = out / "parts" / f"{kind}-{name}.md"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")
            pages.append(f"parts/{kind}-{name}")
    return pages


def generate(out: Path) -> None:
    """Write the generated pages and their index pages into ``out``."""
    root = Path(__file__).resolve().parents[1]
    tutorials = out / "tutorials"
    tutorials.mkdir(parents=True)
    for nb in sorted((root / "notebooks").glob("*.ipynb")):
        shutil.copy(nb, tutorials / nb.name)
    for title, pages, name in (
        ("Priors, guides and likelihoods", _parts(out), "parts"),
        ("API reference", _api(out), "api"),
        ("Tutorials", [f"tutorials/{p.stem}" for p in sorted(tutorials.glob("*.ipynb"))], "tutorials"),
    ):
        toc = "\n".join(pages)
        (out / f"{name}.md").write_text(f"# {title}\n\n```{{toctree}}\n:maxdepth: 1\n\n{toc}\n```\n")
