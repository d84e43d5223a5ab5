"""mmrlhf_ray/ is the pure library: importing all of it must not import ray, deepspeed or vllm."""

import re
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
    out = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1:] in ([""], []), f"imported: {out.stdout}"


def test_cli_lists_every_stage():
    out = subprocess.run(
        [sys.executable, "-m", "mmrlhf_ray.core.cli", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0
    for stage in ("toyworld", "curate", "generate", "train-reward", "train-dpo", "pipeline"):
        assert f"  {stage} " in out.stdout


FAMILY_LAYER = {"mmrlhf_ray/models/families.py", "mmrlhf_ray/models/tiny.py"}
# Names of one family's internals (attributes, processor keys, classes): code outside the
# family layer asks a Family instead. (open_clip's ``model.visual`` lives in curation.)
FAMILY_INTERNALS = re.compile(
    r"\.\s*vision_tower\b|"  # the attribute (a function may be called vision_tower)
    r"\b(visual|merger|image_grid_thw|video_grid_thw|mm_encoder_outputs|"
    r"multi_modal_projector|connector|get_rope_index|image_newline|"
    r"(Qwen2(_5)?VL|LlavaOnevision|InternVL|SmolVLM|Idefics3)\w*)\b"
)


def _code_only(path: Path) -> str:
    """The file's code without comments and string literals (docstrings included)."""
    import io
    import tokenize

    keep = []
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type not in (tokenize.COMMENT, tokenize.STRING):
            keep.append(tok.string)
    return " ".join(keep)


def test_no_module_outside_the_family_layer_names_a_family_internal():
    files = [
        p
        for d in ("mmrlhf_ray", "actors", "harness", "jobs", "serve")
        for p in (ROOT / d).rglob("*.py")
    ]
    offenders = {}
    for path in files:
        rel = str(path.relative_to(ROOT))
        if rel in FAMILY_LAYER or rel.startswith(
            ("mmrlhf_ray/curation/", "mmrlhf_ray/models/clip")
        ):
            continue
        hits = sorted(set(m.group(0) for m in FAMILY_INTERNALS.finditer(_code_only(path))))
        if hits:
            offenders[rel] = hits
    assert not offenders, offenders
