#!/usr/bin/env bash
# Builds ggml's quantizers (ggml-quants.c, from the llama-cpp-python sdist on PyPI, which vendors
# llama.cpp) into build/ggml-ref/libggml-quants.so for the tests' byte-for-byte comparisons.
# Baseline x86-64 as llama.cpp's default CMake build compiles ggml-base: no -march=native, so no
# FMA contraction. Usage: tests/ggml/build.sh PYTHON
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${1:-python3}
VERSION=0.3.36
OUT=build/ggml-ref
LIB=$OUT/libggml-quants.so
[ -f "$LIB" ] && exit 0
mkdir -p "$OUT"
if [ ! -d "$OUT/llama_cpp_python-$VERSION" ]; then
  "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
    "llama-cpp-python==$VERSION" -d "$OUT"
  tar -xzf "$OUT/llama_cpp_python-$VERSION.tar.gz" -C "$OUT" "llama_cpp_python-$VERSION/vendor/llama.cpp/ggml"
fi
GGML="$OUT/llama_cpp_python-$VERSION/vendor/llama.cpp/ggml"
gcc -O2 -std=gnu11 -shared -fPIC -I"$GGML/include" -I"$GGML/src" "$GGML/src/ggml-quants.c" tests/ggml/stubs.c \
  -lm -o "$LIB.tmp"
mv "$LIB.tmp" "$LIB"
echo "built $LIB"
