"""``benchmarks/gpu_check.py`` at tiny shapes on the CPU, so the GPU check cannot rot.

The figures it prints are CPU timings of a 0.1M-parameter model (meaningless as speed);
what is checked is that every variant runs and the numbers agree: per-response log-probs
of the packed forward (FlexAttention and dense) against the grouped one at fp32 precision
(sums of 3-20 token log-probs of size ~6 each: |logp| up to ~130, so 1e-5 + 1e-6 x scale),
the MM-DPO gradient of flex against dense, and the losses: equal for the variants that
share the precomputed reference, log 2 for the per-pair layout whose online reference is
a copy of the policy (TRL's step-0 loss).
"""

import json
import math

import pytest

from benchmarks import gpu_check


def test_gpu_check_tiny_json(capsys):
    line = gpu_check.main(["--tiny", "--steps", "1"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == line
    assert line["device"] == "cpu" and line["dtype"] == "float32" and not line["liger_head"]
    res = line["shapes"]["tiny"]
    assert res["packed_tokens_per_query"] == res["prompt_tokens"] + sum(res["response_tokens"])
    bound = 1e-5 + 1e-6 * res["logps_scale"]
    assert res["logps_scale"] > 10
    for key in ("flex_vs_grouped", "dense_vs_grouped", "flex_vs_dense"):
        assert res[key] <= bound, key
    assert res["liger_vs_torch_head"] == 0.0  # no Liger on CPU: the same torch head
    assert res["grad_rel_l2_flex_vs_dense"] <= 1e-5
    losses = {v: res[v]["loss"] for v in gpu_check.VARIANTS}
    assert all(res[v]["pairs_per_s"] > 0 for v in gpu_check.VARIANTS)
    shared = [losses[v] for v in gpu_check.VARIANTS if v != "per_pair"]
    assert max(shared) - min(shared) <= 1e-5 and shared[0] < math.log(2) - 0.01
    assert losses["per_pair"] == pytest.approx(math.log(2), abs=1e-5)
    assert set(line["ratios"]) >= {"tiny_flex_vs_per_pair_pairs", "tiny_flex_vs_grouped_pairs"}
    assert gpu_check.attention.BLOCK == 128  # the tiny run's tile size was put back
