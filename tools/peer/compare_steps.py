#!/usr/bin/env python3
"""Table 4's training step in tram (Rust, tch) and in PyTorch eager, each in float32 and under bfloat16 autocast.

Alternates the two programs --alternations times (tram, PyTorch, tram, PyTorch, ...), each timing its
(method, precision) pairs interleaved within its own process (crates/tram-experiments/examples/step_time.rs and
tools/peer/step_peer.py), so that load that comes and goes weighs on both programs alike; then writes every
program run's medians and, per method, the median over alternations of each program's step time with the ratios
tram / PyTorch and bf16 / fp32:

    python3 tools/peer/compare_steps.py --tram target/debug/examples/step_time --rounds 8 --alternations 2 \
        --out results/step-time-cpu.csv

Run it on a machine doing nothing else; the CSV records the CPU, the threads and the load averages.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METHODS = ["base", "sam", "tram-prev", "tram-x"]


def run_tram(binary: str, rounds: int, tmp: Path) -> dict[str, tuple[float, float]]:
    out = tmp / "tram.csv"
    out.unlink(missing_ok=True)
    cmd = [binary, "experiments/table4.toml", "embedded", "--methods", ",".join(METHODS), "--rounds", str(rounds),
           "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True)
    with open(out) as f:
        return {r["method"]: (float(r["fp32_ms"]), float(r["bf16_ms"])) for r in csv.DictReader(f)}


def run_peer(rounds: int, threads: int, tmp: Path) -> dict[str, tuple[float, float]]:
    out = tmp / "peer.json"
    cmd = [sys.executable, "tools/peer/step_peer.py", "--rounds", str(rounds), "--threads", str(threads),
           "--methods", ",".join(METHODS), "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True)
    rows = json.loads(out.read_text())["rows"]
    return {r["method"]: (r["fp32_ms"], r["bf16_ms"]) for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tram", required=True, help="the built step_time example")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--alternations", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.rounds < 1 or args.alternations < 1:
        sys.exit("--rounds and --alternations must be at least 1")
    machine = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                   "unknown CPU")
    runs = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for a in range(args.alternations):
            for program, timed in (("tram", lambda: run_tram(args.tram, args.rounds, tmp)),
                                   ("pytorch", lambda: run_peer(args.rounds, args.threads, tmp))):
                load = os.getloadavg()[0]
                for method, (fp32, bf16) in timed().items():
                    runs.append({"alternation": a, "program": program, "method": method, "fp32_ms": fp32,
                                 "bf16_ms": bf16, "load_before": load})
    fields = ["machine", "threads", "rounds", "alternation", "program", "method", "fp32_ms", "bf16_ms",
              "load_before", "bf16_over_fp32", "tram_over_pytorch_fp32", "tram_over_pytorch_bf16"]
    rows = [{"machine": machine, "threads": args.threads, "rounds": args.rounds, **r,
             "bf16_over_fp32": r["bf16_ms"] / r["fp32_ms"]} for r in runs]
    print(f"\n{machine}, {args.threads} threads; medians over {args.alternations} alternations of {args.rounds} rounds")
    print(f"{'method':<10} {'tram fp32':>10} {'torch fp32':>10} {'tram bf16':>10} {'torch bf16':>10} "
          f"{'tram/torch fp32':>16} {'tram/torch bf16':>16} {'bf16/fp32 tram':>15} {'bf16/fp32 torch':>16}")
    for m in METHODS:
        med = {(p, k): statistics.median(r[k] for r in runs if r["program"] == p and r["method"] == m)
               for p in ("tram", "pytorch") for k in ("fp32_ms", "bf16_ms")}
        summary = {"machine": machine, "threads": args.threads, "rounds": args.rounds, "alternation": "median",
                   "program": "both", "method": m, "fp32_ms": "", "bf16_ms": "", "load_before": "",
                   "bf16_over_fp32": "",
                   "tram_over_pytorch_fp32": med[("tram", "fp32_ms")] / med[("pytorch", "fp32_ms")],
                   "tram_over_pytorch_bf16": med[("tram", "bf16_ms")] / med[("pytorch", "bf16_ms")]}
        rows.append(summary)
        print(f"{m:<10} {med[('tram', 'fp32_ms')]:>10.0f} {med[('pytorch', 'fp32_ms')]:>10.0f} "
              f"{med[('tram', 'bf16_ms')]:>10.0f} {med[('pytorch', 'bf16_ms')]:>10.0f} "
              f"{summary['tram_over_pytorch_fp32']:>16.3f} {summary['tram_over_pytorch_bf16']:>16.3f} "
              f"{med[('tram', 'bf16_ms')] / med[('tram', 'fp32_ms')]:>15.3f} "
              f"{med[('pytorch', 'bf16_ms')] / med[('pytorch', 'fp32_ms')]:>16.3f}")
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
