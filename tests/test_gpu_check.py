"""benchmarks/gpu_check.py at a CPU size: JAX, no TensorFlow, every number it promises."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                    reason="JAX is not installed (the cpu lock's jax extra)")
def test_gpu_check_runs_tiny_on_cpu_without_tensorflow(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO / "src"),
           "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--json", str(out),
         "--size", "32", "--steps", "2", "--patients", "20", "--models", "simple_cnn",
         "--passes", "3", "--mc-images", "8"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "simple_cnn" in done.stdout and "every loss finite: True" in done.stdout
    result = json.loads(out.read_text())
    assert result["backend"] == "jax" and result["tensorflow_imported"] is False
    entry = result["models"]["simple_cnn"]
    for precision in ("fp32", "mixed"):
        assert entry[precision]["img_per_s"] > 0 and math.isfinite(entry[precision]["loss"])
    assert entry["two_phase"]["finite"] and entry["two_phase"]["phases"] == {"head": 1}
    assert entry["mc_dropout"]["all_over_head"] > 0
