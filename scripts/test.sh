#!/usr/bin/env bash
# Every test: install dependencies, build with -Werror, run the suite (and the engines on every
# kernel path); the threaded parts under ThreadSanitizer; then everything again under
# AddressSanitizer + UndefinedBehaviorSanitizer. Test models come from ../shared/models
# (override with ACCLLM_SHARED_DIR or ACCLLM_MODELS_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
jobs=$(nproc)

echo "== release build + tests"
# Through a compiler cache that the image's build stage reads (scripts/image-test.sh): it compiles
# the same files with the same flags, relative to its own source root (base dir), so it finds them.
export CCACHE_DIR=$PWD/.cache/ccache CCACHE_BASEDIR=$PWD CCACHE_NOHASHDIR=true CCACHE_MAXSIZE=4G
scripts/build.sh build -DCMAKE_BUILD_TYPE=Release -DACCLLM_WERROR=ON -DACCLLM_BUILD_TESTS=ON -DWITH_FPGA=ON \
  -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache
ctest --test-dir build --output-on-failure --parallel "$jobs"

echo "== the engines again on every kernel path this CPU has (ACCLLM_CPU_PATH)"
for path in scalar avx2 avx2-vnni avx512 amx; do
  if ACCLLM_CPU_PATH=$path build/tests/accllm_tests --gtest_filter='CpuDispatch*' >/dev/null 2>&1; then
    ACCLLM_CPU_PATH=$path build/tests/accllm_tests --gtest_brief=1 \
      --gtest_filter='CpuEngine*:PackedModel*:Generator*:ReferenceGreedy*'
  else
    echo "(this CPU has no $path path)"
  fi
done

echo "== the image: built from the Dockerfile without a Docker daemon, serving a completion from inside"
scripts/image-test.sh

echo "== ThreadSanitizer: the scheduler, the engine's thread pool and the server"
scripts/build.sh build-tsan -DCMAKE_BUILD_TYPE=Debug -DACCLLM_WERROR=ON -DACCLLM_BUILD_TESTS=ON -DWITH_FPGA=ON \
  -DACCLLM_SANITIZE=thread -- accllm accllm-server accllm_tests accllm_server_tests
# Reports go to files; tests/sanitizers/tsan_reports.py fails on every one in which our code makes
# an access, and counts those wholly inside gRPC (whose own synchronization TSan cannot see).
tsan_logs=$PWD/build-tsan/tsan-reports
rm -rf "$tsan_logs" && mkdir -p "$tsan_logs"
TSAN_OPTIONS="halt_on_error=0 exitcode=0 history_size=7 log_path=$tsan_logs/tsan suppressions=$PWD/tests/sanitizers/tsan.supp" \
  ctest --test-dir build-tsan --output-on-failure -R 'Scheduler|ThreadPool|CpuEngine|ServerTest|ServerBinaryTest|DevicePool'
python3 tests/sanitizers/tsan_reports.py $(find "$tsan_logs" -type f)

echo "== ASan + UBSan build + tests"
# clang, so that the same tree builds the libFuzzer targets run below (the release build already
# checks GCC's warnings). A tree left from an earlier GCC configuration starts over.
grep -qs "^CMAKE_CXX_COMPILER:.*clang" build-asan/CMakeCache.txt || rm -rf build-asan
CC=clang CXX=clang++ scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DACCLLM_WERROR=ON -DACCLLM_BUILD_TESTS=ON \
  -DACCLLM_BUILD_BENCH=OFF -DWITH_FPGA=ON -DACCLLM_SANITIZE=address,undefined -DACCLLM_FUZZ=ON
# The quality guard, the real-model logits tests, the unit-cycle checks and the sequencer's tests run gutenberg30M (30M
# parameters) through many configurations: minutes under the sanitizers; their code paths run
# under them in QuantizePipelineTest, ChunkedPerplexityTest, BlockApTest, the kernel tests,
# FpgaStoriesTest and XrtBackendTest's stories260K tests.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure --parallel "$jobs" -E 'QualityGuard|CrossDeviceLogits|RealModelLogits|SimulatedUnitCycles|SequencerTest'

echo "== fuzz targets (libFuzzer, ASan+UBSan): a short fixed run of each on its seed corpus"
FUZZ_BUILD_DIR=build-asan scripts/fuzz.sh 2000
