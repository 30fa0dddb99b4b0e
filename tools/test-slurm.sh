#!/usr/bin/env bash
# Slurm for real, on this machine: installs Debian's slurm-wlm and munge when they are missing, starts a one-node
# cluster (munged, slurmctld and slurmd with a minimal slurm.conf, all in a temporary folder), and runs the quick
# profile of Table 3 twice: once as one `tram run`, once as `tram slurm`'s job array of 4 tasks on one shared
# results folder (`sbatch --wait`). Then `tram tables` must equal the single process's table, and every run must
# have been trained once, by one array task (its attempts.json). Not part of CI (root, a few minutes):
#
#   just test-slurm            # builds the runner first
#   TRAM=path/to/tram bash tools/test-slurm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TRAM="$(realpath "${TRAM:-${CARGO_TARGET_DIR:-target}/debug/tram}")"
[ -x "$TRAM" ] || { echo "no tram binary at $TRAM: cargo build -p tram-experiments" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "test-slurm starts slurmd and munged: run it as root" >&2; exit 1; }
say() { printf '[test-slurm] %s\n' "$*" >&2; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge (Debian packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

WORK="$(mktemp -d /tmp/tram-slurm.XXXXXX)"
HOST="$(hostname -s)"
# The array's tasks run the binary the script names: a copy, so that a rebuild meanwhile cannot swap it.
cp "$TRAM" "$WORK/tram" && TRAM="$WORK/tram"
stop() {
  for f in slurmd slurmctld munge/munged; do
    [ -f "$WORK/$f.pid" ] && kill "$(cat "$WORK/$f.pid")" 2>/dev/null || true
  done
  say "cluster stopped; logs and results kept in $WORK"
}
trap stop EXIT

# munge, on its own key and socket (the machine's munged, if any, is left alone).
mkdir -p "$WORK/munge" && chmod 700 "$WORK/munge"
dd if=/dev/urandom of="$WORK/munge/munge.key" bs=1024 count=1 status=none && chmod 400 "$WORK/munge/munge.key"
munged --force --key-file="$WORK/munge/munge.key" --socket="$WORK/munge/socket" --pid-file="$WORK/munge/munged.pid" \
  --log-file="$WORK/munge/munged.log" --seed-file="$WORK/munge/munged.seed"

mkdir -p "$WORK/etc" "$WORK/state" "$WORK/spool"
export SLURM_CONF="$WORK/etc/slurm.conf"
cat > "$SLURM_CONF" <<EOF
ClusterName=tramtest
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$WORK/munge/socket
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -i
slurmd -N "$HOST"
for _ in $(seq 60); do
  [ "$(sinfo -h -o %t 2>/dev/null)" = idle ] && break
  sleep 1
done
[ "$(sinfo -h -o %t)" = idle ] || { say "the node did not come up:"; tail -20 "$WORK"/slurm*.log >&2; exit 1; }
say "one-node cluster up: $(sinfo -h -o '%P %D node(s) %c CPUs %t')"

say "reference: one process"
"$TRAM" run experiments/table3.toml --profile quick --device cpu --results "$WORK/single" > "$WORK/single.log" 2>&1

say "job array: 4 tasks, one results folder"
"$TRAM" slurm experiments/table3.toml --profile quick --device cpu --results "$WORK/shared" --tasks 4 \
  --cpus-per-task 1 --time 00:30:00
script="$WORK/shared/slurm/table3-quick.sbatch"
grep '^#SBATCH\|^exec' "$script" >&2
sbatch --wait "$script" >&2
for log in "$WORK"/shared/slurm/*.out; do
  say "$(basename "$log"): $(grep -a -o '[0-9]* in shard [0-9/]*\|[a-z0-9.-]*-s0: training\|[a-z0-9.-]*-s0: in-domain [0-9.]*' "$log" | tr '\n' ';')"
done

say "tram tables over the shared folder"
"$TRAM" tables experiments/table3.toml --profile quick --results "$WORK/shared"

fail=0
if cmp -s "$WORK/single/table3-quick.csv" "$WORK/shared/table3-quick.csv"; then
  say "PASS the array's table equals the single process's"
else
  say "FAIL the tables differ:"; diff "$WORK/single/table3-quick.csv" "$WORK/shared/table3-quick.csv" >&2 || true; fail=1
fi
if diff <(grep -v seconds "$WORK/single/table3-quick-long.csv") <(grep -v seconds "$WORK/shared/table3-quick-long.csv") >&2; then
  say "PASS every metric of every run equals the single process's (wall-clock times aside)"
else
  say "FAIL the long CSVs differ"; fail=1
fi
python3 - "$WORK/shared/runs/table3/quick" <<'EOF' || fail=1
import json, os, sys
root, bad = sys.argv[1], 0
for run in sorted(os.listdir(root)):
    attempts = json.load(open(os.path.join(root, run, "attempts.json")))
    jobs = [a.get("slurm_job") for a in attempts]
    ok = len(attempts) == 1 and jobs[0] is not None and attempts[0].get("finished_unix_s")
    print(f"[test-slurm] {'PASS' if ok else 'FAIL'} {run}: trained {len(attempts)} time(s), by Slurm job {', '.join(map(str, jobs))}", file=sys.stderr)
    bad += not ok
sys.exit(bad > 0)
EOF
[ "$fail" = 0 ] && say "all checks passed" || { say "some checks failed"; exit 1; }
