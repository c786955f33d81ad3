"""The parallel path must not hang on a small machine.

jaxlib's CPU LAPACK kernels (seen in 0.10.2) split large batched calls into chunks on
XLA's CPU thread pool and block a pool thread until they finish; two such calls at
once on a 2-thread pool deadlock (a parallel filter at T = 10,000 hung in 5 of 7
runs here without a guard). The parallel path avoids batched LAPACK calls that big.
This runs it with XLA's default pool size (no NPROC / PJRT_NPROC) under a timeout.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("n,m", [(4, 2), (12, 3)])  # elementwise kernels; LAPACK
def test_parallel_filter_at_T_10000_does_not_hang(n, m):
    env = {k: v for k, v in os.environ.items() if k not in ("NPROC", "PJRT_NPROC")}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "core" / "_deadlock_script.py"),
            str(n),
            str(m),
            "10000",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"
