#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang under ASan+UBSan and runs each one.
#   scripts/fuzz.sh [RUNS] [TARGET...]     RUNS per target (default 2000), every target by default
# The seed is fixed (FUZZ_SEED, default 1) so that the test command's short runs are the same every
# time; long hunts should set another.
# Inputs come from the seed corpus in tests/fuzz/corpus/<target> (never written to); new inputs
# go to <build>/corpus/<target>. A finding stops with the crashing input saved in <build>/.
# The build tree is build-fuzz (-O1, fuzz targets only) unless FUZZ_BUILD_DIR names another tree
# configured with clang and -DACCLLM_FUZZ=ON (the test command reuses its ASan + UBSan tree).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-2000}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(fuzz_llama2c_loader fuzz_packed_loader fuzz_tokenizer_model fuzz_tokenize
                                     fuzz_generate_request fuzz_server_config)
dir=${FUZZ_BUILD_DIR:-build-fuzz}
if [ ! -f "$dir/CMakeCache.txt" ]; then
  [ "$dir" = build-fuzz ] || { echo "fuzz: $dir is not a configured build tree"; exit 1; }
  # -O1: a few thousand inputs per target, where compile time dominates.
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -DNDEBUG" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -DNDEBUG" -DACCLLM_FUZZ=ON \
    -DACCLLM_SANITIZE=address,undefined -DACCLLM_BUILD_TESTS=OFF -DWITH_FPGA=OFF >/dev/null
fi
grep -q "^ACCLLM_FUZZ:BOOL=ON" "$dir/CMakeCache.txt" || { echo "fuzz: $dir was not configured with -DACCLLM_FUZZ=ON"; exit 1; }
cmake --build "$dir" --parallel "$(nproc)" --target "${targets[@]}"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
source_dir=$PWD
for t in "${targets[@]}"; do
  mkdir -p "$dir/corpus/$t"
  echo "== $t: $runs runs"
  # -rss_limit_mb: a loader that believes a header's sizes would allocate far beyond this.
  status=0
  (cd "$dir" && "tests/fuzz/$t" -runs="$runs" -seed="${FUZZ_SEED:-1}" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
     "corpus/$t" "$source_dir/tests/fuzz/corpus/$t" >"$t.log" 2>&1) || status=$?
  grep -E "^stat::number_of_executed_units|^#[0-9]+ *DONE" "$dir/$t.log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$dir/$t.log"
    echo "fuzz: $t found a problem (its input is saved in $dir/, its log in $dir/$t.log)"
    exit 1
  fi
done
