"""Smoke test of ``benchmarks/bench_ekf_transformer.py --quick``: it runs, writes
its JSON, and the filters it times agree across Jacobian methods (not speed)."""

import json
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import bench_ekf_transformer as bench  # noqa: E402

pytestmark = pytest.mark.bench


def test_quick_run_writes_the_documented_json(tmp_path):
    out = tmp_path / "ekf.json"
    bench.main(["--quick", "--out", str(out)])
    payload = json.loads(out.read_text())
    assert payload["benchmark"] == "bench_ekf_transformer" and payload["quick"]
    steps = [r for r in payload["rows"] if r["section"] == "ekf_step"]
    cats = [r for r in payload["rows"] if r["section"] == "categorical"]
    assert {(r["site"], r["method"]) for r in steps} == {
        (s, m) for s in bench.SITES for m in bench.METHODS
    }
    assert [r["vocab"] for r in cats] == bench.QUICK_VOCABS
    for r in steps:
        assert r["finite"]
        assert r["jacfwd_vs_jacrev_max_abs_diff"] < 1e-5
        assert math.isfinite(r["ratio"]) and r["ratio"] > 0
        assert r["compile_step_s"] > 0
    for r in cats:
        assert r["finite"] and r["run_s"]["median"] > 0
    assert set(payload["summary"]) >= {
        "categorical_time_loglog_slope",
        "categorical_memory_loglog_slope",
        "jacfwd_within_target",
    }
