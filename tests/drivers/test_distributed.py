"""Sharded batches across 8 (forced host) devices equal the single-device results."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_sharded_equals_unsharded_on_eight_devices():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "drivers" / "_sharded_script.py")],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    for mode in ("False", "True"):  # sequential and parallel-in-time
        assert out[mode]["devices"] == 8
        assert out[mode]["shard_shape"] == [2, 50, 3]  # 16 sequences / 8 devices
        assert out[mode]["max_diff_lml"] <= 1e-12
        assert out[mode]["max_diff_smoothed"] <= 1e-12
        assert out[mode]["max_diff_unsharded"] <= 1e-12
    assert "divisible by the 8 devices" in out["error"]
