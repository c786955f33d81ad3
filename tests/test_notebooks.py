"""Every notebook runs in smoke mode and its .ipynb pair holds the same cells."""

import os
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.py"))

pytestmark = pytest.mark.notebooks


def _sources(notebook):
    return [(c.cell_type, c.source.strip()) for c in notebook.cells]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_holds_the_same_cells(path):
    paired = path.with_suffix(".ipynb")
    assert paired.exists(), f"{paired.name} is missing: jupytext --to ipynb --execute"
    ipynb = jupytext.read(paired)
    assert _sources(ipynb) == _sources(jupytext.read(path)), (
        f"{paired.name} is out of date with {path.name}: rerun "
        f"jupytext --to ipynb --execute {path}"
    )
    executed = [c for c in ipynb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in executed), (
        f"{paired.name} was not executed"
    )


# tokens runs three experiments at smoke size: minutes on a shared 2-core machine
@pytest.mark.timeout(660)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_in_smoke_mode(path, tmp_path):
    env = {**os.environ, "KALMANJAX_SMOKE": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
