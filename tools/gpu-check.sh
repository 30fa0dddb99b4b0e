#!/usr/bin/env bash
# `just gpu-check`: what a machine with an NVIDIA GPU does with the paper's shapes, in under 10 minutes, from a
# prebuilt `tram` and the folder `just gpu-check-prepare` writes (configurations, tokenizers and tiny data: the
# weights are drawn on the device, `weights = "random"` / `pretrained = false`). Without CUDA: one line, exit 1,
# nothing written.
#
#   TRAM=./tram GPU_CHECK_DIR=./gpu-check bash tools/gpu-check.sh
#
# 1. the device: CUDA devices, the CUDA version libtorch was built with;
# 2. CUDA against the CPU: GPT-2 (random, 256-token blocks) and ViT-B/16 (random, 224 px) for two steps of base,
#    SAM, TRAM-θ_{t−1} and TRAM-x, on each device; the CUDA run's first step checked against the CPU's with
#    `tram check` (first-step loss to 1e-4, gradient quantities to 1e-2, counts exactly: docs/regression.md);
# 3. step time and peak CUDA memory per method in fp32, TF32 and bf16 at the paper's shapes (GPT-2 1,024 tokens
#    × 16, ViT-B/16 224 px × 64), beside `tram plan`'s memory: results/gpu-check.csv.
set -euo pipefail
TRAM=${TRAM:-target/release/tram}
DIR=${GPU_CHECK_DIR:-target/gpu-check}
OUT=${GPU_CHECK_OUT:-results/gpu-check.csv}

"$TRAM" gpu-check   # the device line; fails here without CUDA, before anything is written

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gpt2=(experiments/table4.toml --profile paper --set "task.model.snapshot=$DIR/gpt2" --set 'task.weights="random"'
  --set "task.data.m2d2=$DIR/m2d2" --set task.eval_blocks=1 --set task.validation_blocks=1
  --set 'task.zero_shot_domains=["Art"]' --set task.eval_batch_size=4 --set schedule.warmup_steps=0
  --set 'selection="last"')
vit=(experiments/table3.toml --profile paper --set "task.model={kind=\"vit\", dir=\"$DIR/vit-base-patch16-224\", pretrained=false}"
  --set "task.data={kind=\"parquet\", dir=\"$DIR/cifar100/cifar100\", columns={image=\"img\", label=\"fine_label\"}}"
  --set task.eval_batch_size=64 --set task.workers=4)
short=(--set epochs=1 --set max_train_batches=2 --set 'methods=[{name="base"},{name="sam"},{name="tram-prev"},{name="tram-x"}]')

echo "== CUDA against the CPU, first steps"
for model in gpt2 vit; do
  if [ $model = gpt2 ]; then args=("${gpt2[@]}" --set task.block_len=256 --set batch_size=2); else args=("${vit[@]}" --set batch_size=8); fi
  # Two seeds on the CPU give the outcomes a spread to be held to; the first step is seed 0's, to rounding.
  "$TRAM" run "${args[@]}" "${short[@]}" --set 'seeds=[0,1]' --device cpu --results "$work/cpu-$model" >/dev/null 2>&1
  "$TRAM" run "${args[@]}" "${short[@]}" --set 'seeds=[0]' --device cuda --results "$work/cuda-$model" >/dev/null 2>&1
  table=$([ $model = gpt2 ] && echo table4 || echo table3)
  "$TRAM" expectations "$work/cpu-$model/$table-paper-long.csv" --seed 0 --floor 1e-2 --out "$work/$model-expected.csv"
  "$TRAM" check "$work/cuda-$model/$table-paper-long.csv" "$work/$model-expected.csv"
done

echo "== step time and peak memory at the paper's shapes"
rm -f "$OUT"
"$TRAM" gpu-check "${gpt2[@]}" --set 'methods=[{name="base"},{name="sam"},{name="trpo"},{name="tram-prev"}]' \
  --set batch_size=16 --out "$OUT"
"$TRAM" gpu-check "${vit[@]}" --set 'methods=[{name="base"},{name="sam"},{name="tram-prev"},{name="tram-x"}]' \
  --set batch_size=64 --out "$OUT"
echo "the plan of the same settings: $TRAM plan experiments/table4.toml --profile paper --device cuda"
