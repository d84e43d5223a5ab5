"""The synthetic "shapes world": a deterministic multimodal world with ground truth.

Every stage of the pipeline can run, and be measured, on it in minutes on a CPU:

* ``scene``     vocabulary, scene graphs, 64x64 PNG scenes and 4-frame videos;
* ``language``  the templated answer language and its tolerant parser;
* ``queries``   queries in the paper's five categories, pool rows, the benchmark split;
* ``responses`` simulated models of graded quality and the tokenizer corpus;
* ``oracle``    the judge and the Appendix-B-style annotator with the tie rule;
* ``writer``    streaming Parquet shards of a pool with bounded memory (resumable).

Everything is a pure function of a seed.
"""

from mmrlhf_ray.toyworld.language import LONG_MIN_CHARS, REFUSAL, parse_text
from mmrlhf_ray.toyworld.oracle import judge, oracle_annotate, score_response, simulated_record
from mmrlhf_ray.toyworld.queries import (
    CATEGORIES,
    POOL_MIX,
    bench_row,
    benchmark_split,
    generate_pool,
    ground_truth,
    iter_pool,
    make_query,
    make_row,
)
from mmrlhf_ray.toyworld.responses import (
    SIMULATED_MODELS,
    STYLES,
    corpus_texts,
    respond,
    simulated_responses,
)
from mmrlhf_ray.toyworld.scene import COLORS, DIRECTIONS, POSITIONS, SHAPES
from mmrlhf_ray.toyworld.writer import write_benchmark, write_pool, write_records, write_rows

__all__ = [
    "CATEGORIES",
    "COLORS",
    "DIRECTIONS",
    "LONG_MIN_CHARS",
    "POOL_MIX",
    "POSITIONS",
    "REFUSAL",
    "SHAPES",
    "SIMULATED_MODELS",
    "STYLES",
    "bench_row",
    "benchmark_split",
    "corpus_texts",
    "generate_pool",
    "ground_truth",
    "iter_pool",
    "judge",
    "make_query",
    "make_row",
    "oracle_annotate",
    "parse_text",
    "respond",
    "score_response",
    "simulated_record",
    "simulated_responses",
    "write_benchmark",
    "write_pool",
    "write_records",
    "write_rows",
]
