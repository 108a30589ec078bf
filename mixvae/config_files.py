"""Settings from a file: ``mixvae train --config FILE`` with ``.toml``, ``.yaml`` / ``.yml`` or ``.json``.

The file holds one flat mapping of the settings ``mixvae train`` has flags for
(the names of :class:`~mixvae.config.TrainConfig`'s fields and of the parts'
options, with underscores: ``latent_dim = 10``), as a run's own
``config.json`` does, so that file can be passed back.  A TOML or YAML file
may also put them under a ``[train]`` table.  Flags on the command line
override the file.  Keys that name no setting are one-line errors naming the
key and the valid ones.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from mixvae.errors import ConfigError

#: the suffixes read, and the format each means
FORMATS = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}
#: keys of a run's config.json that are records, not settings (kept out of a new run)
RECORDED = ("plugins",)


def _parse(path: Path, text: str) -> Any:
    kind = FORMATS[path.suffix.lower()]
    try:
        if kind == "TOML":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            return tomllib.loads(text)
        if kind == "YAML":
            import yaml

            return yaml.safe_load(text)  # plain data only: no tags that build objects
        return json.loads(text)
    except Exception as e:  # every parser's error is one line naming the file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{path} is not valid {kind} ({first}); fix the file") from None


def load_config_file(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """The mapping in ``path`` and the plugin modules it records (not yet checked against the settings).

    :raises ConfigError: for a missing or unreadable file, another format, or no mapping.
    """
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ConfigError(f"--config {path}: give a .toml, .yaml, .yml or .json file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    data = _parse(path, text)
    if isinstance(data, dict) and set(data) == {"train"} and isinstance(data["train"], dict):
        data = data["train"]
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path} must hold one mapping of settings (name = value), got {type(data).__name__}"
        )
    plugins = data.pop("plugins", None) or []
    return {str(k): v for k, v in data.items()}, [
        str(p) for p in ([plugins] if isinstance(plugins, str) else plugins)
    ]


def check_keys(path: str | Path, settings: dict[str, Any], valid: list[str]) -> None:
    """Refuse a key that names no setting, with the closest valid name and the valid ones."""
    for key in settings:
        if key not in valid:
            close = difflib.get_close_matches(key.replace("-", "_"), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{path}: unknown setting {key!r}{hint}; the valid ones: {', '.join(sorted(valid))}"
            )
