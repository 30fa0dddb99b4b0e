#!/usr/bin/env bash
# The CPU rehearsal of the paper profiles at the paper's shapes (tools/rehearse/README.md, "Running it"), each model
# trained in full with random weights for a few steps of each method:
#   gpt2                  Table 4's paper profile: GPT-2 base on 1,024-token blocks of the M2D2 stand-in, a
#                         micro-batch of 1 block with accumulation over 2 (the paper's 16 blocks would need more
#                         than this machine's memory: `tram plan` says how much);
#   xlm-roberta-base      Table 5's: XLM-R base on the MultiNLI stand-in, 128 tokens, batch 8 (the paper's 32),
#                         evaluated on XNLI's English and German stand-ins;
#   vit-base-patch16-224  Table 3's: ViT-B/16 at 224 px on the CIFAR-100 stand-in, batch 8 (the paper's 64).
# Each run's peak tensor memory (summary.json's peak_tensor_bytes, counted by tram's CPU allocator) against the
# tensors of `tram plan --device cpu` for the same settings, and its peak resident memory (/usr/bin/time -v)
# against the plan's total; then one GPT-2 run killed with SIGKILL after its first checkpoint and resumed from it,
# its steps compared with the uninterrupted run's. GPT-2 XL is planned only: with TRAM's copies it does not fit
# this machine (the plan says by how much).
#
#   bash tools/rehearse/run.sh REHEARSE_DIR [METHOD ...]      (default methods: base tram-prev)
#
# Writes results/rehearsal-cpu.csv (REHEARSAL_OUT). TRAM: the binary (default target/release/tram); MODELS: which
# of the three (default all). REPLAN=CSV: only the planned columns of a CSV this script wrote, from this binary's
# `tram plan` (after a change to the plan; the measured columns stay).
set -euo pipefail
R=${1:?the folder just rehearse wrote}; shift
methods=("${@:-base}")
[ $# -eq 0 ] && methods=(base tram-prev)
TRAM=${TRAM:-target/release/tram}
OUT=${REHEARSAL_OUT:-results/rehearsal-cpu.csv}
STEPS=${REHEARSAL_STEPS:-2}
read -r -a models <<< "${MODELS:-gpt2 xlm-roberta-base vit-base-patch16-224}"
work=$(mktemp -d /tmp/tram-rehearse.XXXXXX)
trap 'rm -rf "$work"' EXIT

common=(--set epochs=1 --set 'seeds=[0]' --set 'selection="last"' --set schedule.warmup_steps=0)
settings() {  # model $1: the experiment, its profile and the settings, into exp, sets, micro and acc
  case "$1" in
    gpt2)
      exp=(experiments/table4.toml --profile paper); micro=1; acc=2
      sets=(--set "task.model.snapshot=$R/gpt2" --set 'task.weights="random"' --set "task.data.m2d2=$R/m2d2"
        --set task.eval_blocks=1 --set task.validation_blocks=1 --set 'task.zero_shot_domains=["Art"]'
        --set task.eval_batch_size=1 --set task.max_train_tokens=200000) ;;
    xlm-roberta-base)
      exp=(experiments/table5.toml --profile paper); micro=8; acc=1
      sets=(--set "task.model.dir=$R/xlm-roberta-base" --set "task.data.multinli=$R/multi_nli"
        --set "task.data.xnli=$R/xnli" --set 'task.data.languages=["en","de"]' --set task.data.max_train_examples=64
        --set task.eval_batch_size=32 --set keep_weights=false --set task.prune_vocab=false) ;;
    vit-base-patch16-224)
      exp=(experiments/table3.toml --profile paper); micro=8; acc=1
      sets=(--set "task.model.dir=$R/vit-base-patch16-224" --set "task.model.pretrained=false"
        --set "task.data.dir=$R/cifar100/cifar100" --set task.data.columns.image=img
        --set task.data.columns.label=fine_label --set task.eval_batch_size=32 --set task.workers=2) ;;
    *) echo "unknown model $1" >&2; exit 2 ;;
  esac
  sets+=("${common[@]}" --set "batch_size=$micro" --set "accumulate=$acc" --set "max_train_batches=$((acc * STEPS))")
}

echo "model,method,micro_batch,accumulate,steps,seconds_per_step,peak_tensor_bytes,planned_tensor_bytes,\
tensors_over_planned,peak_rss_bytes,planned_bytes,rss_over_planned,note" > "$work/csv"
planned() {  # method $1 in the CPU plan of the same settings: its tensors (weights to temporaries), its total
  "$TRAM" plan "${exp[@]}" "${sets[@]}" --set "methods=[{name=\"$1\"}]" --device cpu --throughput 1 --csv \
    | awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i } NR == 2 { print $c["tensor_bytes"], $c["total_bytes"] }'
}
row() {  # model, method, results folder, time -v log, note
  local summary rss plan
  summary=$(find "$3/runs" -path "*/$2-s0/summary.json" | head -1)
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 * 1024 }' "$4")
  plan=$(planned "$2")
  python3 - "$summary" "$1" "$2" "$micro" "$acc" "$rss" "$plan" "$5" >> "$work/csv" <<'PY'
import json, sys
summary, model, method, micro, acc, rss, plan, note = sys.argv[1:]
s = json.load(open(summary)); rss = float(rss)
tensors, total = map(float, plan.split())
peak = s["peak_tensor_bytes"]
print(f"{model},{method},{micro},{acc},{s['steps']},{s['train_seconds'] / s['steps']:.1f},{peak},{tensors:.0f},"
      f"{peak / tensors:.3f},{rss:.0f},{total:.0f},{rss / total:.3f},{note}")
PY
  tail -1 "$work/csv"
}

if [ -n "${REPLAN:-}" ]; then  # the planned columns of a written CSV again, from this binary's plan
  { head -1 "$REPLAN"
    tail -n +2 "$REPLAN" | while IFS=, read -r model method micro_b acc_b steps sps peak _ _ rss _ _ note; do
      settings "$model"
      read -r tensors total < <(planned "$method")
      python3 -c "import sys; a = sys.argv[1:]; p, t, r, T = map(float, a[6:10]); print(','.join(a[:7] + [f'{t:.0f}', f'{p / t:.3f}', a[8], f'{T:.0f}', f'{r / T:.3f}', a[10]]))" \
        "$model" "$method" "$micro_b" "$acc_b" "$steps" "$sps" "$peak" "$tensors" "$rss" "$total" "$note"
    done; } > "$work/csv"
  cp "$work/csv" "$REPLAN"; cat "$REPLAN"; exit 0
fi

for model in "${models[@]}"; do
  settings "$model"
  for m in "${methods[@]}"; do
    echo "== $model $m"
    /usr/bin/time -v "$TRAM" run "${exp[@]}" "${sets[@]}" --set "methods=[{name=\"$m\"}]" --device cpu \
      --results "$work/$model-$m" > "$work/$model-$m.log" 2> "$work/$model-$m.time" \
      || { tail -20 "$work/$model-$m.log" "$work/$model-$m.time" >&2; exit 1; }
    row "$model" "$m" "$work/$model-$m" "$work/$model-$m.time" "uninterrupted"
  done
done

# The resumed run is compared with the uninterrupted base run above, so it needs both.
if [[ " ${models[*]} " == *" gpt2 "* && " ${methods[*]} " == *" base "* ]]; then
  settings gpt2
  echo "== gpt2 base: SIGKILL after the first checkpoint, then resume"
  k="$work/killed"
  "$TRAM" run "${exp[@]}" "${sets[@]}" --set 'methods=[{name="base"}]' --set checkpoint_every=1 --device cpu \
    --results "$k" > "$work/killed.log" 2>&1 &
  pid=$!
  # a checkpoint counts once its checksums are written (crates/tram-task/src/checkpoints.rs)
  until ls "$k"/runs/table4/paper/base-s0/checkpoint/step-00000001/SHA256SUMS >/dev/null 2>&1; do
    kill -0 $pid 2>/dev/null || { echo "the run ended before its first checkpoint" >&2; exit 1; }
    sleep 1
  done
  kill -9 $pid; wait $pid 2>/dev/null || true
  /usr/bin/time -v "$TRAM" run "${exp[@]}" "${sets[@]}" --set 'methods=[{name="base"}]' --set checkpoint_every=1 \
    --device cpu --results "$k" > "$work/resumed.log" 2> "$work/resumed.time"
  grep -q "from step 1\|resum" "$work/resumed.log" "$work/resumed.time" || { echo "the second run did not resume" >&2; exit 1; }
  if diff <(cut -d, -f1-11 "$work/gpt2-base/runs/table4/paper/base-s0/steps.csv") \
          <(cut -d, -f1-11 "$k/runs/table4/paper/base-s0/steps.csv") > /dev/null; then
    same="killed after step 1 and resumed: every step as the uninterrupted run's"
  else
    same="killed after step 1 and resumed: steps DIFFER from the uninterrupted run's"
  fi
  row gpt2 base "$k" "$work/resumed.time" "$same"
fi

mkdir -p "$(dirname "$OUT")"
cp "$work/csv" "$OUT"
echo "wrote $OUT"
echo "== GPT-2 XL (Table 10), planned only"
"$TRAM" plan experiments/table4.toml --profile paper-xl --set "task.model.snapshot=$R/gpt2-xl" --device cpu \
  --set 'methods=[{name="base"},{name="tram-prev"}]' --set batch_size=1 | tail -n +2
