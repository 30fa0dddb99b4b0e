"""Each finished run's measured memory beside `tram plan`'s CPU plan of its method: the peak tensors
(summary.json's peak_tensor_bytes) against the plan's tensors, the peak resident memory (peak_resident_bytes)
against the plan's total, and the resident memory beyond the tensors and the plan's runtime as a fraction of the
peak tensors (what the plan's heap allowance stands for; docs/paper-scale.md).

    python3 tools/resident-vs-plan.py RUNS_FOLDER EXPERIMENT_TOML PROFILE [TRAM]

RUNS_FOLDER: results/runs/<experiment>/<profile> (or a copy); TRAM: the binary (default target/release/tram).
"""
import csv
import glob
import json
import os
import subprocess
import sys


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    runs, experiment, profile = sys.argv[1:4]
    tram = sys.argv[4] if len(sys.argv) > 4 else "target/release/tram"
    out = subprocess.run([tram, "plan", experiment, "--profile", profile, "--device", "cpu", "--throughput", "1",
                          "--csv"], capture_output=True, text=True, check=True).stdout
    plan = {r["method"]: r for r in csv.DictReader(out.splitlines())}
    print("| run | peak tensors | plan's tensors | ratio | peak resident | plan's total | ratio | beyond tensors and runtime, of the tensors |")
    print("|---|---|---|---|---|---|---|---|")
    for path in sorted(glob.glob(os.path.join(runs, "*", "summary.json"))):
        s = json.load(open(path))
        run = os.path.basename(os.path.dirname(path))
        method = run.rsplit("-s", 1)[0]
        tensors, resident = s.get("peak_tensor_bytes"), s.get("peak_resident_bytes")
        if method not in plan or tensors is None or resident is None:
            continue
        p = plan[method]
        planned, total, runtime = (float(p[k]) for k in ("tensor_bytes", "total_bytes", "runtime_bytes"))
        excess = (resident - tensors - runtime) / tensors
        print(f"| {run} | {tensors / 1e9:.2f} GB | {planned / 1e9:.2f} GB | {tensors / planned:.2f} | "
              f"{resident / 1e9:.2f} GB | {total / 1e9:.2f} GB | {resident / total:.2f} | {excess:.2f} |")


if __name__ == "__main__":
    main()
