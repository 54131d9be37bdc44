# rsrnn-jax: the two README commands are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/demo
# XLA:CPU keeps both cores busier when the batch is split over 2 host devices (1.9-2.6x faster training). On a busy
# machine one device's thread can wait more than XLA's 40 s for the other at an all-reduce, which aborts the
# process: the timeouts are raised to 15 min (docs/faults.md).
DEMO_XLA_FLAGS ?= --xla_force_host_platform_device_count=2 --xla_cpu_collective_call_terminate_timeout_seconds=900 \
  --xla_cpu_collective_timeout_seconds=900

.PHONY: demo test test-slow test-all install data clean bench bench-quick bench-gpu bench-gpu-wheels reproduce

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

install: $(VENV)/.installed

# Fashion-MNIST from Debian's dataset-fashion-mnist (installed with apt-get when run as root).
data: install
	$(PY) -m rsrnn_jax.data --ensure

demo: data
	XLA_FLAGS="$(DEMO_XLA_FLAGS)" $(PY) launch.py --config=configs/demo.py --workdir=$(WORKDIR)
	@echo "Results: $(WORKDIR)/eval/results.json, $(WORKDIR)/eval/accuracy_per_step.png, $(WORKDIR)/eval/fixations.png"
	@echo "Training log: $(WORKDIR)/metrics.jsonl (TensorBoard: $(WORKDIR)/tensorboard)"

# The paper's comparison on the demo data: 7 models trained with one budget, attacked, report + figures in
# $(REPRO_OUT)/ (docs/reproduction.md). Resumable: run it again after an interruption. REPRO_ARGS=--quick: smoke test.
REPRO_OUT ?= reproduction
REPRO_ARGS ?=
reproduce: data
	XLA_FLAGS="$(DEMO_XLA_FLAGS)" $(PY) -m rsrnn_jax.reproduction.run --out $(REPRO_OUT) $(REPRO_ARGS)
	@echo "Report: $(REPRO_OUT)/report.md (runs in $(REPRO_OUT)/runs/<model>/)"

# `make test`: every test but the end-to-end tier (pytest -m slow: launch.py subprocesses, two processes, whole
# runs), within the 10-minute budget on 2 cores. `make test-slow`: that tier. CI (.ci/run) runs both.
test: data
	$(PY) -m pytest -q -n 2 --dist worksteal -m "not slow" --durations=10

test-slow: data
	$(PY) -m pytest -q -n 2 --dist worksteal -m slow --durations=15

test-all: test test-slow

# Benchmarks (bench/README.md): JSON in bench/results/. Run on an otherwise idle machine; `make bench-quick` is
# a smoke run of every bench (small sizes, numbers not meaningful).
bench: install
	$(PY) bench/train_throughput.py
	$(PY) bench/attack_throughput.py
	$(PY) bench/memory.py
	$(PY) bench/sampler.py
	$(PY) bench/input_pipeline.py
	$(PY) bench/fab_projection.py

bench-quick: install
	$(PY) bench/train_throughput.py --quick
	$(PY) bench/attack_throughput.py --quick
	$(PY) bench/memory.py --quick
	$(PY) bench/sampler.py --quick
	$(PY) bench/input_pipeline.py --quick
	$(PY) bench/fab_projection.py --quick
	$(PY) bench/gpu_check.py --tiny

# On a machine with one GPU and the CUDA build of jax (docs/scaling.md § GPUs): <= 7 min, bench/results/gpu_check.json.
# On the device tool's lent GPU machines: `bash bench/gpu_host.sh` (carry .whl/ from bench-gpu-wheels).
bench-gpu: install
	$(PY) bench/gpu_check.py

# Wheels an offline GPU machine with its own CUDA jax (Python 3.12) lacks, at requirements.txt's versions, into
# .whl/ (git-ignored through .git/info/exclude) for the device tool's `carry` (docs/scaling.md § GPUs).
GPU_WHEELS_RE := ^(flax|optax|simplejpeg|ml_collections|grain|tensorflow-datasets|tensorflow-metadata|array_record|immutabledict|toml|portpicker|six|protobuf|termcolor|simple-parsing|docstring_parser|wrapt|dm-tree|tqdm|requests|urllib3|idna|charset-normalizer|certifi|absl-py|importlib_resources|zipp)==
bench-gpu-wheels: install
	mkdir -p .git/info && (grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude)
	$(PY) -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .whl $$(grep -E '$(GPU_WHEELS_RE)' requirements.txt)
	$(PY) -m pip wheel --no-deps -w .whl $$(grep -E '^promise==' requirements.txt)

clean:
	rm -rf $(VENV) workdirs .pytest_cache .hypothesis
