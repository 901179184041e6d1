#!/usr/bin/env bash
# The GPU check, in two halves:
#
#   scripts/gpu-check.sh prepare   (here, no GPU needed) builds out/gpu-check/: a Native-AOT publish of
#                                  the runner (needs only libc), the emulator library, and PTX of every
#                                  kernel for compute_80 / compute_90 (NVRTC here, or nvcc's when built).
#   scripts/gpu-check.sh run       (on the GPU machine; the default when nvidia-smi is present) runs
#                                  `lori selftest --device cuda --json` and writes to $OUT (or out/gpu-check/report):
#                                  selftest.json, selftest.log, device.txt, then `lori bench-gpu` at Llama-3-8B
#                                  shapes: bench.json, bench.log, and the same figures in PyTorch + transformers + peft
#                                  (scripts/torch_bench.py, when python3 has torch): torch.json, torch.log and
#                                  comparison.md (every figure of ours as a ratio to PyTorch's, measured in this run).
#                                  Then `generate` on a tiny model, device vs CPU (the graph decode path):
#                                  generate-*.json, decode.log. Exit code: the selftest's.
#
#   scripts/gpu-check.sh check     the selftest and the decode check only (one device call of a few minutes)
#   scripts/gpu-check.sh bench     the benchmarks and the PyTorch comparison only (one device call: at most
#                                  330 s for ours, 240 s for PyTorch's; a device tool call is limited to 600 s,
#                                  so on such a machine run `check` and `bench` as two calls rather than `run`)
#
# The GPU machine has no .NET: carry out/gpu-check with the working tree (it is ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=out/gpu-check
mode=${1:-}
if [ -z "$mode" ]; then
  if command -v nvidia-smi >/dev/null 2>&1; then mode=run; else mode=prepare; fi
fi

# decode_check RUNNER DEVICE OUT: generate on an init-model tiny model (bf16) with --device cpu and DEVICE, greedy and
# sampled, three prompts; writes OUT/generate-*.json and OUT/decode.log (whether the greedy ids agree, the decode path).
decode_check() {
  local runner=$1 device=$2 o=$3
  local m="$o/tiny-model"
  "$runner" init-model --preset tiny --out "$m" --dtype bf16 --seed 5 > /dev/null
  local args=(generate --model "$m" --prompt "Hello there" --prompt "abc" --prompt "The quick brown fox" --max-new-tokens 48 --json)
  for d in cpu "$device"; do
    timeout 60 "$runner" "${args[@]}" --device "$d" > "$o/generate-$d.json" 2>> "$o/decode.log"
    timeout 60 "$runner" "${args[@]}" --device "$d" --temperature 0.9 --top-k 40 --top-p 0.95 --seed 3 > "$o/generate-$d-sampled.json" 2>> "$o/decode.log"
  done
  if command -v python3 > /dev/null 2>&1; then
    python3 - "$o/generate-cpu.json" "$o/generate-$device.json" "$o/generate-$device-sampled.json" >> "$o/decode.log" 2>&1 <<'PY'
import json, sys
cpu, dev, sampled = (json.load(open(p)) for p in sys.argv[1:4])
same = [a["ids"] == b["ids"] for a, b in zip(cpu["results"], dev["results"])]
print("greedy ids equal to the cpu's per prompt:", same)
print("device timings:", json.dumps(dev["timings"]))
print("sampled timings:", json.dumps(sampled["timings"]))
PY
  fi
  tail -3 "$o/decode.log"
}

case "$mode" in
  prepare)
    if [ -f native/CMakeLists.txt ] && command -v cmake >/dev/null 2>&1; then
      cmake -S native -B build/native -DCMAKE_BUILD_TYPE=Release >/dev/null
      cmake --build build/native -j"$(nproc)"
    fi
    rm -rf "$dir"
    mkdir -p "$dir/ptx"
    dotnet publish src/LoRI.Runner -c Release -r linux-x64 -p:PublishAot=true -o "$dir/bin"
    cp build/native/libloriemu.so "$dir/bin/" 2>/dev/null || true
    if ls build/native/ptx/*.ptx >/dev/null 2>&1; then
      cp build/native/ptx/*.ptx "$dir/ptx/"
    else
      "$dir/bin/LoRI.Runner" ptx --out "$dir/ptx"
    fi
    # a last check here: the published binary runs the checks on the emulator
    "$dir/bin/LoRI.Runner" selftest --device cuda-emu --repeats 0 --filter rmsnorm >/dev/null
    du -sh "$dir"
    echo "prepared $dir; on the GPU machine run: scripts/gpu-check.sh run"
    ;;
  run|check|bench)
    out=${OUT:-$dir/report}
    mkdir -p "$out"
    if [ ! -x "$dir/bin/LoRI.Runner" ]; then
      echo "$dir/bin/LoRI.Runner is missing: run 'scripts/gpu-check.sh prepare' on a machine with .NET first" | tee "$out/selftest.log"
      exit 2
    fi
    { nvidia-smi || true; echo; nvcc --version 2>/dev/null || true; } > "$out/device.txt" 2>&1
    export LORI_PTX_DIR="$PWD/$dir/ptx"
    # the sm_90a kernels (wgmma) cannot be built by CUDA 11.8's NVRTC here: build them with this machine's
    # nvcc 12+ when present, and let the runtime find a CUDA 12+ NVRTC as the fallback
    if command -v nvcc >/dev/null 2>&1 && nvcc --version | grep -Eq 'release (1[2-9]|[2-9][0-9])\.'; then
      for f in gemm_wgmma sm90_checks; do
        nvcc -std=c++17 -O3 --use_fast_math -arch=sm_90a --ptx "native/kernels/$f.cu" -o "$dir/ptx/$f.sm_90a.ptx" >> "$out/nvcc.log" 2>&1 \
          || echo "nvcc sm_90a $f failed (see nvcc.log); the runtime falls back to NVRTC 12+ or to gemm_tc"
      done
    fi
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
      [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    done
    export LORI_CACHE="$out/cache"
    set +e
    rc=0
    if [ "$mode" != bench ]; then
      timeout 240 "$dir/bin/LoRI.Runner" selftest --device cuda --json --verbose > "$out/selftest.json" 2> "$out/selftest.log"
      rc=$?
      # the human-readable table too, for the log (short: no timing)
      timeout 90 "$dir/bin/LoRI.Runner" selftest --device cuda --repeats 0 >> "$out/selftest.log" 2>&1
      # the on-device decode path (CUDA graph + device sampling) against the CPU on a tiny model: greedy ids, decode path
      decode_check "$dir/bin/LoRI.Runner" cuda "$out"
      echo "selftest exit code $rc" >> "$out/selftest.log"
      tail -5 "$out/selftest.log"
    fi
    if [ "$mode" != check ]; then
      # cuBLAS for the GEMM baseline: the CUDA toolkit's, or the one PyTorch's wheels bring (not on the loader's path)
      for d in /usr/local/cuda/lib64 $(python3 -c "import nvidia.cublas; print(list(nvidia.cublas.__path__)[0] + '/lib')" 2>/dev/null); do
        if [ -d "$d" ]; then export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; fi
      done
      # benchmarks at Llama-3-8B shapes on a random model built on the device (LoRI.Cuda.Bench.GpuBench)
      timeout 330 "$dir/bin/LoRI.Runner" bench-gpu --device cuda --shapes llama3-8b --out "$out/bench.json" > "$out/bench.log" 2>&1
      echo "bench-gpu exit code $?" >> "$out/bench.log"
      if python3 -c "import torch, transformers, peft" >/dev/null 2>&1; then
        timeout 240 python3 scripts/torch_bench.py measure --out "$out/torch.json" > "$out/torch.log" 2>&1
        echo "torch_bench exit code $?" >> "$out/torch.log"
        if [ -s "$out/bench.json" ] && [ -s "$out/torch.json" ]; then
          python3 scripts/torch_bench.py compare --ours "$out/bench.json" --torch "$out/torch.json" --out "$out/comparison.md" >> "$out/torch.log" 2>&1
        fi
      else
        echo "no PyTorch + transformers + peft on this machine: no comparison" > "$out/torch.log"
      fi
      tail -3 "$out/bench.log"
    fi
    set -e
    exit $rc
    ;;
  *)
    echo "usage: scripts/gpu-check.sh [prepare|run|check|bench]" >&2
    exit 2
    ;;
esac
