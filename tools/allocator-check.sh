#!/usr/bin/env bash
# tram's CPU allocator settings (`tram_native::keep_freed_memory`: every allocation from glibc's heap, never
# trimmed) against glibc's defaults (TRAM_KEEP_FREED_MEMORY=0: blocks above the mmap threshold returned to the
# kernel when freed), on the same binary: docs/precision.md, "The allocator, before and after".
#
#   bash tools/allocator-check.sh [ROUNDS] [PROFILE]      (defaults: 2 alternations; Table 4's sigma profile)
#   bash tools/allocator-check.sh 0 embedded              (the wall time of Table 4's whole embedded profile only)
#   SET='methods=[{name="base"},{name="tram-prev"}]' bash tools/allocator-check.sh 2 embedded   (a part of a profile)
#
# 1. Step time: examples/step_time (Table 4's embedded step, Adam, TRAM-θ_{t−1}, TRAM-x, float32 and bf16),
#    one process per setting, the two settings alternated ROUNDS times; rows in results/step-time-allocator-cpu.csv
#    with the setting and the process's peak resident memory. Skipped with ROUNDS=0.
# 2. Wall time: `tram run` of Table 4's PROFILE into a fresh folder with each setting, one after the other, with
#    /usr/bin/time: two rows added to results/wall-time-allocator-cpu.csv (rows of other profiles or sets kept).
#    Skipped with PROFILE=none.
# Run it on an idle machine: the ratios are only as good as the machine's quiet. STEP_TIME and TRAM: the binaries
# (default: target/release/...).
set -euo pipefail
ROUNDS=${1:-2}
PROFILE=${2:-sigma}
STEP_TIME=${STEP_TIME:-target/release/examples/step_time}
TRAM=${TRAM:-target/release/tram}
steps_csv=results/step-time-allocator-cpu.csv
wall_csv=results/wall-time-allocator-cpu.csv
work=$(mktemp -d /tmp/tram-allocator.XXXXXX)
trap 'rm -rf "$work"' EXIT
setting() { [ "$1" = 0 ] && echo "glibc defaults" || echo "keep freed memory"; }

for r in $(seq 1 "$ROUNDS"); do
  for keep in 1 0; do
    rm -f "$work/one.csv"
    TRAM_KEEP_FREED_MEMORY=$keep /usr/bin/time -f "%M" -o "$work/rss" "$STEP_TIME" experiments/table4.toml embedded \
      --methods base,tram-prev,tram-x --rounds 10 --out "$work/one.csv" > "$work/log" 2>&1 \
      || { cat "$work/log" >&2; exit 1; }
    rss=$(( $(tail -1 "$work/rss") * 1024 ))
    [ -f "$work/steps" ] || echo "round,allocator,$(head -1 "$work/one.csv"),peak_rss_bytes" > "$work/steps"
    tail -n +2 "$work/one.csv" | sed "s/^/$r,$(setting $keep),/; s/\$/,$rss/" >> "$work/steps"
    echo "round $r, $(setting $keep):"; grep -E "^(base|tram)" "$work/log"
  done
done
if [ "$ROUNDS" -gt 0 ]; then cp "$work/steps" "$steps_csv"; echo "wrote $steps_csv"; fi

[ "$PROFILE" = none ] && { python3 tools/allocator-summary.py "$steps_csv"; exit 0; }
header="allocator,experiment,profile,set,runs,wall_seconds,peak_rss_bytes"
if [ -f "$wall_csv" ]; then cp "$wall_csv" "$work/wall"; else echo "$header" > "$work/wall"; fi
for keep in 1 0; do
  out="$work/results-$keep"
  TRAM_KEEP_FREED_MEMORY=$keep /usr/bin/time -f "%e %M" -o "$work/time" "$TRAM" run experiments/table4.toml \
    --profile "$PROFILE" ${SET:+--set "$SET"} --results "$out" > "$work/log" 2>&1 || { tail -20 "$work/log" >&2; exit 1; }
  read -r wall rss < <(tail -1 "$work/time")
  runs=$(find "$out/runs" -name summary.json | wc -l)
  set_field=${SET:-}
  echo "$(setting $keep),table4,$PROFILE,\"${set_field//\"/\"\"}\",$runs,$wall,$((rss * 1024))" | tee -a "$work/wall"
done
cp "$work/wall" "$wall_csv"
echo "added to $wall_csv"
python3 tools/allocator-summary.py "$steps_csv" "$wall_csv"
