#!/usr/bin/env bash
# Builds ik_llama.cpp's quantizers (ggml-quants.c, iqk/iqk_quantize.cpp and the type table of
# ggml.c, from the ik-llama-cpp-python sdist on PyPI, which vendors ik_llama.cpp) into
# build/ik-ref/libik-quants.so for bench/bench_anchors.py, the strongest calibration-free anchors
# (IQ2_KT ... IQ6_K). Its own CMake build does not work without its matrix-multiplication code, so
# the three files are compiled alone; the compute kernels ggml.c refers to but the quantizers never
# call are linked to stubs that abort. Usage: bench/ik/build.sh PYTHON
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${1:-python3}
VERSION=0.1.5
OUT=build/ik-ref
LIB=$OUT/libik-quants.so
[ -f "$LIB" ] && exit 0
mkdir -p "$OUT"
if [ ! -d "$OUT/ik_llama_cpp_python-$VERSION" ]; then
  echo "== downloading the ik-llama-cpp-python $VERSION sdist"
  "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
    "ik-llama-cpp-python==$VERSION" -d "$OUT"
  tar -xzf "$OUT/ik_llama_cpp_python-$VERSION.tar.gz" -C "$OUT" "ik_llama_cpp_python-$VERSION/vendor/ik_llama.cpp/ggml"
fi
GGML="$OUT/ik_llama_cpp_python-$VERSION/vendor/ik_llama.cpp/ggml"
FLAGS=(-O3 -mavx2 -mfma -mf16c -fPIC -D_GNU_SOURCE -I"$GGML/include" -I"$GGML/src")
echo "== compiling ik_llama.cpp's quantizers (about a minute)"
gcc "${FLAGS[@]}" -std=gnu11 -w -c "$GGML/src/ggml-quants.c" -o "$OUT/quants.o"
gcc "${FLAGS[@]}" -std=gnu11 -w -c "$GGML/src/ggml.c" -o "$OUT/ggml.o"
g++ "${FLAGS[@]}" -std=c++17 -w -c "$GGML/src/iqk/iqk_quantize.cpp" -o "$OUT/iqk.o"
gcc "${FLAGS[@]}" -std=gnu11 -c bench/ik/shim.c -o "$OUT/shim.o"
# Every ggml_/iqk_/quantize_ function referred to and defined nowhere: a compute kernel.
nm -u "$OUT/quants.o" "$OUT/ggml.o" "$OUT/iqk.o" | awk '{print $2}' | sort -u > "$OUT/undefined.txt"
nm --defined-only "$OUT/quants.o" "$OUT/ggml.o" "$OUT/iqk.o" | awk '{print $3}' | sort -u > "$OUT/defined.txt"
{
  echo "#include <stdlib.h>"
  comm -23 "$OUT/undefined.txt" "$OUT/defined.txt" | grep -E '^(ggml_|iqk_|quantize_)' \
    | awk '{print "void " $1 "(void) { abort(); }"}'
} > "$OUT/compute_stubs.c"
gcc -O2 -fPIC -c "$OUT/compute_stubs.c" -o "$OUT/compute_stubs.o"
g++ -shared "$OUT/quants.o" "$OUT/ggml.o" "$OUT/iqk.o" "$OUT/shim.o" "$OUT/compute_stubs.o" -Wl,--no-undefined \
  -lm -lpthread -o "$LIB.tmp"
mv "$LIB.tmp" "$LIB"
echo "built $LIB"
