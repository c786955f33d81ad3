"""``benchmarks/run_gpu.sh --tiny``: the GPU run's script end to end on the CPU, at
smoke sizes (about 80 s on 2 cores)."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import _harness as H

pytestmark = pytest.mark.bench


def test_run_gpu_tiny_writes_every_json(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHON": sys.executable}
    env.setdefault("NPROC", "8")
    proc = subprocess.run(
        [
            "bash",
            str(H.REPO_ROOT / "benchmarks" / "run_gpu.sh"),
            "--tiny",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    slug = H.device_slug()
    paths = [
        tmp_path / f"bench_scan_{slug}.json",
        tmp_path / f"bench_parallel_{slug}.json",
        tmp_path / f"bench_structured_{slug}.json",
        tmp_path / "kalman_d4_m2_T64" / f"bench_kalman_{slug}.json",
    ]
    for path in paths:
        data = json.loads(path.read_text())
        H.validate(data)
        assert data["complete"] is True, path
        assert data["settings"]["quick"] is True, path
    assert "bench_scan filter/dense T=8: blocked compile" in proc.stdout
    assert "bench_scan: all targets met:" in proc.stdout
    assert "run_gpu.sh: done" in proc.stdout
