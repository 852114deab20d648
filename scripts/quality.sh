#!/usr/bin/env bash
# The gutenberg30M quality table of docs/QUALITY.md, regenerated: quantizes the model with each
# recipe (calibrating on gutenberg-calib.txt) and scores every result on gutenberg-dev.txt in
# llama-perplexity's convention (chunks of 512, BOS each, second half scored). Prints Markdown.
#
#   scripts/quality.sh                 # 100 chunks (about 75 minutes on 2 cores)
#   CHUNKS=20 scripts/quality.sh       # a quicker look
set -euo pipefail
cd "$(dirname "$0")/.."
accllm=${ACCLLM:-build/tools/accllm/accllm}
shared=${ACCLLM_SHARED_DIR:-../shared}
model=${ACCLLM_MODELS_DIR:-$shared/models}/gutenberg30M
dev=$shared/data/gutenberg-dev.txt
calib=$shared/data/gutenberg-calib.txt
chunks=${CHUNKS:-100}
out=${OUT:-build/quality}
mkdir -p "$out"
[ -x "$accllm" ] || { echo "quality: build first (scripts/build.sh): $accllm is missing" >&2; exit 1; }

ppl() {  # model, then engine flags: the final estimate
  "$accllm" perplexity -m "$1" -t "$model/tokenizer.model" -f "$dev" --chunks "$chunks" "${@:2}" 2>/dev/null |
    sed -n 's/^Final estimate: PPL = \([0-9.]*\) +\/- \([0-9.]*\).*/\1 ± \2/p'
}
rel() { awk -v a="${1%% *}" -v b="${2%% *}" 'BEGIN { printf "%+.1f%%", (a / b - 1) * 100 }'; }

base=$(ppl "$model" --kv f32)
echo "| recipe | bits/weight (2-bit layers) | quantize s | W2 alone | vs fp32 | W2A8KV4 | vs fp32 | W2A8KV4 + Λ 128 | vs fp32 |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
echo "| fp32 | 32 | — | $base | — | | | | |"
while IFS='|' read -r name flags; do
  file="$out/$(echo "$name" | tr -c 'a-z0-9' '_').safetensors"
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  "$accllm" quantize -m "$model" --calibration "$calib" --calibration-lines 0: -o "$file" $flags >/dev/null 2>"$file.log"
  seconds=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }')
  group=$(echo "$flags" | sed -n 's/.*--group-size \([0-9]*\).*/\1/p'); group=${group:-128}
  bits=$(awk -v g="$group" 'BEGIN { printf "%.3f", 2 + 24 / g }')  # 2-bit codes + fp16 scale + u8 zero per group
  w2=$(ppl "$file" --w2-as-f32 --kv f32)
  full=$(ppl "$file")
  lambda=$(ppl "$file" --sinks 4 --window 128)
  echo "| $name | $bits | $seconds | $w2 | $(rel "$w2" "$base") | $full | $(rel "$full" "$base") | $lambda | $(rel "$lambda" "$base") |"
done <<'RECIPES'
GPTQ, group 128 (--no-rotate --no-block-ap)|--no-rotate --no-block-ap
rotated residual + GPTQ without the scale refit (--no-block-ap --no-scale-refit)|--no-block-ap --no-scale-refit
rotated residual + GPTQ (--no-block-ap)|--no-block-ap
rotated residual + GPTQ + block-wise reconstruction, 2 epochs (--block-ap-epochs 2)|--block-ap-epochs 2
**the default: rotated residual + GPTQ + block-wise reconstruction, 4 epochs**|
rotated residual + GPTQ, sequential calibration (--no-block-ap --sequential)|--no-block-ap --sequential
rotated residual + GPTQ act-order, static groups (--no-block-ap --act-order)|--no-block-ap --act-order
rotated residual and down-projection input + GPTQ (--no-block-ap --rotate-ffn)|--no-block-ap --rotate-ffn
RECIPES
