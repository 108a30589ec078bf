"""Run from outside the source tree against the installed wheel (see .ci/run).

The demo, evaluate and sample through the installed ``mixvae`` script and
``python -m mixvae``, a save/load round trip, and a check that the sdist holds
the files a user builds from.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import mixvae

assert "site-packages" in mixvae.__file__, f"mixvae imported from {mixvae.__file__}, not the wheel"
script = Path(sys.executable).parent / "mixvae"
with tempfile.TemporaryDirectory() as tmp:
    run = Path(tmp) / "demo"
    for argv in (
        [str(script), "train", "--epochs", "2", "--hidden", "32", "--quiet", "--out", str(run)],
        [sys.executable, "-m", "mixvae", "evaluate", str(run), "--iw-samples", "5", "--no-figures"],
        [str(script), "sample", str(run), "--n", "8"],
        [sys.executable, "-m", "mixvae", "list", "--elbos"],
    ):
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    model, guide = mixvae.load_model(run)
    path = mixvae.save_model(Path(tmp) / "model.pt", model, guide)
    again, _ = mixvae.load_model(path)
    assert all(
        a.equal(b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )
    assert (run / "evaluation.json").is_file() and (run / "samples-prior.png").is_file()
with tarfile.open(sys.argv[1]) as sdist:
    names = sdist.getnames()
for needed in ("pyproject.toml", "README.md", "LICENSE", "_mixvae_entry.py", "mixvae/__main__.py"):
    assert any(n.endswith("/" + needed) for n in names), f"the sdist lacks {needed}"
print(f"wheel check: mixvae {mixvae.__version__} from {mixvae.__file__} works")
