#!/usr/bin/env bash
# ./build.sh          build everything (C# solution; native kernels and the emulator when their compilers exist)
# ./build.sh test     build, then run every test (the command CI runs)
# ./build.sh bench    run the benchmarks (Release)
set -euo pipefail
cd "$(dirname "$0")"
cmd=${1:-build}

build_native() {
  if [ -f native/CMakeLists.txt ] && command -v cmake >/dev/null 2>&1; then
    cmake -S native -B build/native -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build build/native -j"$(nproc)"
  else
    echo "native: cmake not found, skipping kernels and emulator"
  fi
}

case "$cmd" in
  build)
    build_native
    dotnet build LoRI.Native.sln -c Release
    ;;
  test)
    build_native
    dotnet test LoRI.Native.sln -c Release --logger "trx;LogFileName=r.trx" --results-directory TestResults
    ;;
  bench)
    build_native
    shift || true
    dotnet run -c Release --project bench/LoRI.Bench -- "$@"
    ;;
  *)
    echo "usage: ./build.sh [build|test|bench]" >&2
    exit 2
    ;;
esac
