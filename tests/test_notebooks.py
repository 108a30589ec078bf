"""The tutorial notebooks: all of them run top to bottom in smoke mode, none is committed with outputs.

Each notebook switches to tiny sizes when ``CI`` is in the environment
(``smoke_test = "CI" in os.environ``); the kernel inherits this process's
environment, so setting ``CI`` here is enough.  As in pyro's
``tests/test_examples.py``, one list names the notebooks that are executed and a
coverage test fails when a notebook in ``notebooks/`` is missing from it.
"""

from __future__ import annotations

import nbformat
import pytest

from tests.conftest import ROOT

NOTEBOOK_DIR = ROOT / "notebooks"

#: the notebooks CI executes; test_every_notebook_is_executed keeps it complete
NOTEBOOKS = [
    "01_quickstart.ipynb",
    "02_swapping_priors_and_guides.ipynb",
    "03_aggregate_posterior.ipynb",
    "04_mixture_guides.ipynb",
    "05_semi_supervised.ipynb",
    "06_your_data_and_networks.ipynb",
]

#: seconds one cell may run (smoke mode needs a few seconds per cell)
CELL_TIMEOUT = 600

#: every notebook ends with a paragraph of numbers computed by the cells above it
MEASURED = "**What we measured.**"


def _on_disk() -> list[str]:
    return sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))


def test_every_notebook_is_executed():
    missing = sorted(set(_on_disk()) - set(NOTEBOOKS))
    assert not missing, f"add {missing} to NOTEBOOKS in tests/test_notebooks.py so that CI runs them"
    gone = sorted(set(NOTEBOOKS) - set(_on_disk()))
    assert not gone, f"NOTEBOOKS names {gone}, which are not in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("name", _on_disk())
def test_notebook_is_stored_without_outputs(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, (
        f"{name}: cells {dirty} carry outputs or execution counts; clear them before committing "
        f"(e.g. jupyter nbconvert --clear-output --inplace notebooks/{name})"
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("CI", "true")  # smoke mode in the kernel, which inherits the environment
    # The notebooks put their run folders in tempfile.mkdtemp(): under tmp_path here.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    before = sorted(p.name for p in NOTEBOOK_DIR.iterdir())
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        # The kernel's working directory is notebooks/, as in Jupyter, so that the
        # notebooks' relative data paths resolve.
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()  # raises CellExecutionError, with the traceback, when a cell fails

    errors = [
        o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"
    ]
    assert not errors
    last = [cell for cell in nb.cells if cell.cell_type == "code"][-1]
    shown = [o.get("data", {}).get("text/markdown", "") for o in last.outputs]
    assert any(text.startswith(MEASURED) for text in shown), f"{name} does not end with {MEASURED!r}"
    assert sorted(p.name for p in NOTEBOOK_DIR.iterdir()) == before, f"{name} wrote into {NOTEBOOK_DIR}"
