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


def read_config_file(path: str | Path, valid: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The settings in ``path`` and the plugin modules it records.

    :param valid: the setting names a file may hold (``mixvae train``'s flags).
    :raises ConfigError: for a missing or unreadable file, another format, or an unknown key.
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
    if isinstance(plugins, str):
        plugins = [plugins]
    for key in data:
        key_name = str(key)
        if key_name not in valid:
            close = difflib.get_close_matches(key_name.replace("-", "_"), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{path}: unknown setting {key_name!r}{hint}; the valid ones: {', '.join(sorted(valid))}"
            )
    return dict(data), [str(p) for p in plugins]
