"""The documentation site builds with warnings as errors, and every public name and part has a page."""

from __future__ import annotations

import html
import importlib
import os
import pkgutil
import re
import subprocess
import sys

import pytest

import mixvae
from docs.generate import MODULES, UNDOCUMENTED, _homes, public_names
from mixvae import GUIDES, LIKELIHOODS, PRIORS
from tests.conftest import ROOT


def test_every_module_of_the_package_has_a_page_or_a_reason():
    modules = {m.name for m in pkgutil.iter_modules(mixvae.__path__)}
    documented = {m.split(".", 1)[1] for m in MODULES if "." in m}
    assert modules - documented == set(UNDOCUMENTED)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "MIXVAE_DOCS_EXECUTE": "off", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out


def test_every_public_name_has_an_entry_on_its_page(site):
    homes = _homes()
    missing = []
    for module in MODULES:
        for name in public_names(module):
            obj = getattr(importlib.import_module(module), name)
            home = homes[id(obj)]
            page = (site / "_generated" / "api" / f"{home}.html").read_text()
            if f'id="{home}.{name}"' not in page:
                missing.append(f"{module}.{name} (on {home})")
    assert not missing


def test_every_part_has_a_page_with_its_generative_story(site):
    for kind, registry in (("prior", PRIORS), ("guide", GUIDES), ("likelihood", LIKELIHOODS)):
        for name, cls in registry.items():
            page = (site / "_generated" / "parts" / f"{kind}-{name}.html").read_text()
            text = re.sub(r"<[^>]+>", "", page)  # the page's text, markup removed
            assert "Generative story" in text and html.unescape(" ".join(cls.story.split())) in html.unescape(
                " ".join(text.split())
            ), (kind, name)


def test_the_tutorials_are_pages(site):
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        assert (site / "_generated" / "tutorials" / f"{nb.stem}.html").is_file()
