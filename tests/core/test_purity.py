"""mmrlhf_ray/ is the pure library: importing all of it must not import ray, deepspeed or vllm."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHECK = r"""
import importlib, pkgutil, sys
import mmrlhf_ray
for mod in pkgutil.walk_packages(mmrlhf_ray.__path__, "mmrlhf_ray."):
    importlib.import_module(mod.name)
bad = sorted(m for m in sys.modules if m.split(".")[0] in {"ray", "deepspeed", "vllm"})
print(",".join(bad))
"""


def test_library_imports_no_ray_deepspeed_vllm():
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1:] in ([""], []), f"imported: {out.stdout}"


def test_cli_lists_every_stage():
    out = subprocess.run([sys.executable, "-m", "mmrlhf_ray.cli", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0
    for stage in ("toyworld", "curate", "generate", "train-reward", "train-dpo", "pipeline"):
        assert f"  {stage} " in out.stdout
