"""Every notebook runs in smoke mode and its .ipynb pair holds the same cells."""

import json
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


def _fresh_jupyter_env(tmp_path):
    """The environment a new user has: no kernel registered under $HOME."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        **os.environ,
        "HOME": str(home),
        "JUPYTER_DATA_DIR": str(home / "jupyter"),
        "JUPYTER_CONFIG_DIR": str(home / "jupyter-config"),
        "KALMANJAX_SMOKE": "1",
        "MPLBACKEND": "Agg",
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_source_names_the_kernel(path):
    # jupytext --execute and JupyterLab pick the kernel from this header; without
    # it jupytext looks for one registered for this interpreter and finds none
    kernelspec = jupytext.read(path).metadata.get("kernelspec", {})
    assert kernelspec.get("name") == "python3", path.name


@pytest.mark.timeout(300)
def test_jupytext_executes_without_kernel_registration(tmp_path):
    source = NOTEBOOKS[0].read_text()
    (tmp_path / "nb.py").write_text(source)
    cmd = [sys.executable, "-m", "jupytext", "--to", "ipynb", "--execute", "nb.py"]
    proc = subprocess.run(
        cmd,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=280,
        env=_fresh_jupyter_env(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    executed = jupytext.read(tmp_path / "nb.ipynb")
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code)
    assert not any(
        o.get("output_type") == "error" for c in code for o in c.get("outputs", [])
    )


def test_jupyterlab_is_installed_and_sees_the_kernel(tmp_path):
    env = _fresh_jupyter_env(tmp_path)
    lab = subprocess.run(
        [sys.executable, "-m", "jupyterlab", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert lab.returncode == 0, lab.stderr[-2000:]
    specs = subprocess.run(
        [sys.executable, "-m", "jupyter_client.kernelspecapp", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert specs.returncode == 0, specs.stderr[-2000:]
    assert "python3" in json.loads(specs.stdout)["kernelspecs"]
