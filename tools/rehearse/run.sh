#!/usr/bin/env bash
# The CPU rehearsal of the paper profiles at the paper's shapes (tools/rehearse/README.md, "Running it"): GPT-2
# base fine-tuned in full on 1,024-token blocks of the M2D2 stand-in, random weights (`weights = "random"`), a
# micro-batch of 1 block with accumulation over 2 (the paper's 16 blocks would need more than this machine's memory:
# `tram plan` says how much), a few steps of each method; each run's peak resident memory (/usr/bin/time -v)
# against `tram plan --device cpu` for the same settings; then one run killed with SIGKILL after its first
# checkpoint and resumed from it, its steps compared with the uninterrupted run's. GPT-2 XL is planned only: with
# TRAM's copies it does not fit this machine (the plan says by how much).
#
#   bash tools/rehearse/run.sh REHEARSE_DIR [METHOD ...]      (default methods: base tram-prev)
#
# Writes results/rehearsal-cpu.csv (REHEARSAL_OUT). TRAM: the binary (default target/release/tram).
set -euo pipefail
R=${1:?the folder just rehearse wrote}; shift
methods=("${@:-base}")
[ $# -eq 0 ] && methods=(base tram-prev)
TRAM=${TRAM:-target/release/tram}
OUT=${REHEARSAL_OUT:-results/rehearsal-cpu.csv}
STEPS=${REHEARSAL_STEPS:-2}
work=$(mktemp -d /tmp/tram-rehearse.XXXXXX)
trap 'rm -rf "$work"' EXIT

sets=(--set "task.model.snapshot=$R/gpt2" --set 'task.weights="random"' --set "task.data.m2d2=$R/m2d2"
  --set batch_size=1 --set accumulate=2 --set epochs=1 --set "max_train_batches=$((2 * STEPS))" --set 'seeds=[0]'
  --set task.eval_blocks=1 --set task.validation_blocks=1 --set 'task.zero_shot_domains=["Art"]'
  --set task.eval_batch_size=1 --set 'selection="last"' --set task.max_train_tokens=200000
  --set schedule.warmup_steps=0)
exp=(experiments/table4.toml --profile paper)

echo "model,method,micro_batch,accumulate,steps,seconds_per_step,peak_rss_bytes,planned_bytes,peak_over_planned,note" > "$work/csv"
planned() {  # total_bytes of method $1 in the CPU plan of the same settings
  "$TRAM" plan "${exp[@]}" "${sets[@]}" --set "methods=[{name=\"$1\"}]" --device cpu --throughput 1 --csv \
    | awk -F, 'NR == 2 { print $17 }'
}
row() {  # method, results folder, time -v log, note
  local summary="$2/runs/table4/paper/$1-s0/summary.json" peak plan
  peak=$(awk -F': ' '/Maximum resident set size/ { print $2 * 1024 }' "$3")
  plan=$(planned "$1")
  python3 - "$summary" "$1" "$peak" "$plan" "$4" >> "$work/csv" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); method, peak, plan, note = sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
print(f"gpt2,{method},1,2,{s['steps']},{s['train_seconds'] / s['steps']:.1f},{peak:.0f},{plan:.0f},{peak / plan:.3f},{note}")
PY
  tail -1 "$work/csv"
}

for m in "${methods[@]}"; do
  echo "== gpt2 $m"
  /usr/bin/time -v "$TRAM" run "${exp[@]}" "${sets[@]}" --set "methods=[{name=\"$m\"}]" --device cpu \
    --results "$work/$m" > "$work/$m.log" 2> "$work/$m.time"
  row "$m" "$work/$m" "$work/$m.time" "uninterrupted"
done

echo "== gpt2 base: SIGKILL after the first checkpoint, then resume"
k="$work/killed"
"$TRAM" run "${exp[@]}" "${sets[@]}" --set 'methods=[{name="base"}]' --set checkpoint_every=1 --device cpu \
  --results "$k" > "$work/killed.log" 2>&1 &
pid=$!
until ls "$k"/runs/table4/paper/base-s0/checkpoint/*00000001 >/dev/null 2>&1; do
  kill -0 $pid 2>/dev/null || { echo "the run ended before its first checkpoint" >&2; exit 1; }
  sleep 1
done
kill -9 $pid; wait $pid 2>/dev/null || true
/usr/bin/time -v "$TRAM" run "${exp[@]}" "${sets[@]}" --set 'methods=[{name="base"}]' --set checkpoint_every=1 \
  --device cpu --results "$k" > "$work/resumed.log" 2> "$work/resumed.time"
grep -q "from step 1\|resum" "$work/resumed.log" "$work/resumed.time" || { echo "the second run did not resume" >&2; exit 1; }
if diff <(cut -d, -f1-11 "$work/base/runs/table4/paper/base-s0/steps.csv") \
        <(cut -d, -f1-11 "$k/runs/table4/paper/base-s0/steps.csv") > /dev/null; then
  same="killed after step 1 and resumed: every step as the uninterrupted run's"
else
  same="killed after step 1 and resumed: steps DIFFER from the uninterrupted run's"
fi
row base "$k" "$work/resumed.time" "$same"

mkdir -p "$(dirname "$OUT")"
cp "$work/csv" "$OUT"
echo "wrote $OUT"
echo "== GPT-2 XL (Table 10), planned only"
"$TRAM" plan "${exp[@]}"-xl --set "task.model.snapshot=$R/gpt2-xl" --device cpu \
  --set 'methods=[{name="base"},{name="tram-prev"}]' --set batch_size=1 | tail -n +2
