#!/usr/bin/env bash
# The device check of issue 20, for a session that has a GPU (well under 10 minutes, no network):
#   1. time a Llama-3.1-8B layer's operators and attention in bf16 on the GPU (dummy weights);
#   2. print what the cost model predicted for that GPU before seeing it (--check on that profile
#      alone uses the committed fit through the GPU's spec sheet: "committed" mode);
#   3. one engine-step timing check (llmplan calibrate's engine grid, small).
# Usage: bash benchmarks/gpu_costmodel_check.sh OUTDIR
set -euo pipefail
out=${1:-gpu-check}
mkdir -p "$out"
gpu=$(python -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '_'))")
timeout 300 llmplan calibrate --ops --dummy-weights llama-3.1-8b --device cuda --dtype bfloat16 \
  --max-tokens 4096 --repeats 10 --out "$out/ops-llama-3.1-8b-$gpu"
timeout 120 llmplan calibrate --check "$out/ops-llama-3.1-8b-$gpu" --json > "$out/check.json"
timeout 120 llmplan calibrate --check "$out/ops-llama-3.1-8b-$gpu" | tee "$out/check.txt"
timeout 240 llmplan calibrate --dummy-weights llama-3.1-8b --device cuda --dtype bfloat16 \
  --max-batch 32 --max-context 1024 --max-chunk 512 --repeats 3 --out "$out/engine-step.json" | tee "$out/engine-step.txt"
