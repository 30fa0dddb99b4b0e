#!/usr/bin/env bash
# Bad inputs a hostile user would try, each with the outcome it must have: a clear error (a non-zero exit whose
# message names the fault), or a run that records what happened and leaves its folder usable. Not in CI (it trains
# a few CI-sized runs, about 5 minutes on 2 cores); `just hostile` runs it with the debug build.
#
#   TRAM=target/debug/tram bash tools/hostile.sh [WORK_DIR]
#
# Prints one line per case (ok / WRONG) and a count; exits non-zero if any case is wrong.
set -uo pipefail
cd "$(dirname "$0")/.."
TRAM="${TRAM:-target/debug/tram}"
W="${1:-$(mktemp -d /tmp/tram-hostile.XXXXXX)}"
mkdir -p "$W"
ok=0
wrong=0
pass() { ok=$((ok + 1)); echo "ok     $1"; }
fail() { wrong=$((wrong + 1)); echo "WRONG  $1: $2"; }

# expect_error NAME TEXT CMD...: the command exits non-zero within 5 minutes and says TEXT (case-insensitive).
expect_error() {
    local name=$1 text=$2
    shift 2
    local out
    out=$(timeout 300 "$@" 2>&1)
    local rc=$?
    if [ $rc -eq 124 ]; then fail "$name" "hung (killed after 300 s)"
    elif [ $rc -eq 0 ]; then fail "$name" "exit 0; expected an error saying '$text'"
    elif ! grep -qiF -- "$text" <<<"$out"; then fail "$name" "exit $rc without '$text': $(tail -n 2 <<<"$out" | tr '\n' ' ')"
    else pass "$name"; fi
}

# expect_ok NAME CMD...: exits 0 within 5 minutes.
expect_ok() {
    local name=$1
    shift
    local out
    out=$(timeout 300 "$@" 2>&1)
    local rc=$?
    if [ $rc -eq 0 ]; then pass "$name"; else fail "$name" "exit $rc: $(tail -n 2 <<<"$out" | tr '\n' ' ')"; fi
}

Q3=(run experiments/table3.toml --profile quick --device cpu --set max_train_batches=1 --set 'methods=[{name="base"}]')

# --- Non-finite training: a momentum outside [0, 1] is refused before training; a learning rate that makes the
# loss non-finite is recorded as diverged, and the same sweep runs again on its folder.
for v in 2.0 nan; do
    expect_error "task.model.bn_momentum = $v" "bn_momentum" "$TRAM" "${Q3[@]}" --results "$W/bn-$v" \
        --set "task.model.bn_momentum=$v"
done
r="$W/lr-1e30"
expect_ok "schedule.base_lr = 1e30 trains" "$TRAM" "${Q3[@]}" --results "$r" --set schedule.base_lr=1e30
grep -q "diverged_after_steps" "$r/table3-quick-long.csv" 2>/dev/null && grep -q "diverged" "$r/table3-quick.csv" \
    && pass "base_lr = 1e30: the table and the long CSV say diverged" || fail "base_lr = 1e30" "not shown as diverged"
expect_ok "base_lr = 1e30: the same sweep again on its folder" "$TRAM" "${Q3[@]}" --results "$r" \
    --set schedule.base_lr=1e30

# --- A finished run whose summary lists no evaluation: tables end (no spin).
r="$W/empty-evals"
expect_ok "a finished quick run" "$TRAM" "${Q3[@]}" --results "$r"
summary=$(ls "$r"/runs/table3/quick/*/summary.json 2>/dev/null | head -n 1)
if [ -n "$summary" ]; then
    python3 - "$summary" <<'EOF'
import json, sys
p = sys.argv[1]; s = json.load(open(p)); s["evaluations"] = []; json.dump(s, open(p, "w"))
EOF
    out=$(timeout 120 "$TRAM" tables experiments/table3.toml --profile quick --results "$r" \
        --set max_train_batches=1 --set 'methods=[{name="base"}]' 2>&1)
    [ $? -eq 124 ] && fail "evaluations = []" "tram tables hung" || pass "evaluations = []: tram tables ends"
fi

# --- CSV tools.
long="$W/long.csv"
{
    echo "experiment,profile,run_id,method,seed,set,domain,metric,value"
    for s in 0 1 2 3 4; do
        echo "t,q,base-s$s,base,$s,g,in-domain,accuracy,0.5$s"
        echo "t,q,sam-s$s,sam,$s,g,in-domain,accuracy,0.6$s"
    done
} >"$long"
dup="$W/dup.csv"
cat "$long" >"$dup"
tail -n +2 "$long" >>"$dup"
expect_error "compare: every row twice" "are both run" "$TRAM" compare "$dup" --baseline base
conflict="$W/conflict.csv"
{ cat "$long"; echo "t,q,sam-s0,sam,0,g,in-domain,accuracy,0.99"; } >"$conflict"
expect_error "compare: a conflicting duplicate" "sam-s0" "$TRAM" compare "$conflict" --baseline base
nan="$W/nan.csv"
{ cat "$long"; echo "t,q,sam-s5,sam,5,g,in-domain,accuracy,NaN"; } >"$nan"
expect_error "compare: a NaN value" "not a finite number" "$TRAM" compare "$nan" --baseline base
head="experiment,profile,run_id,method,seed,set,domain,metric,value,tolerance,relative"
for t in inf NaN -1 0; do
    printf '%s\nt,q,base-s0,base,0,g,in-domain,accuracy,0.5,%s,false\n' "$head" "$t" >"$W/exp-$t.csv"
    expect_error "check: tolerance $t on an accuracy" "tolerance" "$TRAM" check "$long" "$W/exp-$t.csv"
done
printf '%s\nu,q,base-s0,base,0,g,in-domain,accuracy,0.5,0.1,false\n' "$head" >"$W/exp-other.csv"
expect_error "check: another experiment's expectations" "check a sweep against its own" \
    "$TRAM" check "$long" "$W/exp-other.csv"
mixed="$W/mixed.csv"
{ cat "$long"; echo "u,q,base-s0,base,0,g,in-domain,accuracy,0.5"; } >"$mixed"
expect_error "expectations: two experiments mixed" "mixes 2 sweeps" "$TRAM" expectations "$mixed" --out "$W/e.csv"
expect_error "expectations: a NaN value" "not a finite number" "$TRAM" expectations "$nan" --out "$W/e.csv"
expect_error "expectations: every row twice" "are both run" "$TRAM" expectations "$dup" --out "$W/e.csv"

# --- Slurm scripts.
S=(slurm experiments/table3.toml --profile quick --results "$W/slurm" --out "$W/s.sbatch")
expect_error "slurm: a newline in --partition" "partition" "$TRAM" "${S[@]}" --partition $'gpu\n#SBATCH --x'
expect_error "slurm: a newline in --time" "time" "$TRAM" "${S[@]}" --time $'1:00:00\nrm -rf /'
expect_error "slurm: --time bogus" "time" "$TRAM" "${S[@]}" --time bogus
expect_error "slurm: --mem lots" "mem" "$TRAM" "${S[@]}" --mem lots
expect_error "slurm: --gpus-per-task 0" "gpus-per-task" "$TRAM" "${S[@]}" --gpus-per-task 0
expect_error "slurm: --cpus-per-task 0" "cpus-per-task" "$TRAM" "${S[@]}" --cpus-per-task 0
[ -e "$W/s.sbatch" ] && fail "slurm" "a refused script was written" || pass "slurm: nothing written when refused"

# --- Names that would leave the results folder.
sed 's/^name = "table3"/name = "..\/escape"/' experiments/table3.toml >"$W/escape.toml"
cp -r experiments/* "$W/" 2>/dev/null
expect_error "an experiment named ../escape" "escape" "$TRAM" run "$W/escape.toml" --profile quick --device cpu \
    --results "$W/names"
[ -e "$W/escape" ] && fail "../ name" "wrote outside the results folder" || pass "../ name: nothing outside"

# --- Refused at the start of a sweep, before any training.
expect_error "table6: sharpness_steps = [0]" "sharpness_steps" "$TRAM" run experiments/table6.toml --profile quick \
    --device cpu --results "$W/t6" --set 'sharpness_steps=[0]'
expect_error "table6: batch_size = 0" "batch_size" "$TRAM" run experiments/table6.toml --profile quick \
    --device cpu --results "$W/t6" --set 'batch_size=0'
expect_error "table2: timing_rounds = 0" "timing_rounds" "$TRAM" run experiments/table2.toml --profile quick \
    --device cpu --results "$W/t2" --set timing_rounds=0
expect_error "sam twice, once with its default rho" "same" "$TRAM" run experiments/table3.toml --profile quick \
    --device cpu --results "$W/dupm" --set 'methods=[{name="sam"}, {name="sam", rho=0.05}]'
expect_error "augmentation flip = 1.5" "flip" "$TRAM" run experiments/table3.toml --profile quick --device cpu \
    --results "$W/aug" --set 'task.augment={scale=[0.35, 1.0], ratio=[0.75, 1.33], flip=1.5}'
expect_error "augmentation scale = [1.0, 0.35]" "scale" "$TRAM" run experiments/table3.toml --profile quick \
    --device cpu --results "$W/aug" --set 'task.augment={scale=[1.0, 0.35], ratio=[0.75, 1.33], flip=0.5}'
expect_error "a zero-shot genre twice" "news" "$TRAM" run experiments/table4.toml --profile quick --device cpu \
    --results "$W/t4dup" --set 'task.zero_shot_domains=["news", "news"]'
r="$W/t4"
expect_ok "table4 quick" "$TRAM" run experiments/table4.toml --profile quick --device cpu --results "$r" \
    --set 'methods=[{name="base"}]'
echo '{"task_hash": "0", "evaluations": [' >"$r/runs/table4/quick/pretrained.json"
expect_error "table4: an unreadable pretrained.json" "pretrained.json" "$TRAM" tables experiments/table4.toml \
    --profile quick --results "$r" --set 'methods=[{name="base"}]'
leftover=$(find "$W" -name '*.tmp-*' | wc -l)
[ "$leftover" -eq 0 ] && pass "no temporary files left behind" || fail "temporary files" "$leftover left behind"

out=$("$TRAM" doctor 2>&1)
if grep -qi "vision" <<<"$out" && grep -qi "lm\|smollm" <<<"$out" && grep -qi "xlingual\|cross-lingual\|e5" <<<"$out"; then
    pass "doctor lists every asset group"
else fail "doctor" "does not list every asset group"; fi

echo "hostile inputs: $ok as expected, $wrong wrong (work folder $W)"
[ "$wrong" -eq 0 ]
