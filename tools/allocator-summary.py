"""The tables of docs/precision.md's "The allocator, before and after", from what tools/allocator-check.sh wrote:
per method the median step time over the alternations with tram's allocator settings ("keep freed memory") and
with glibc's defaults, and their ratio; the processes' peak resident memory; the wall time of each timed profile
(or part of one).

    python3 tools/allocator-summary.py [results/step-time-allocator-cpu.csv] [results/wall-time-allocator-cpu.csv]
"""
import csv
import statistics
import sys

NAMES = {"base": "Adam", "sam": "SAM", "tram-prev": "TRAM-θ_{t−1}", "tram-x": "TRAM-x"}
KEEP, GLIBC = "keep freed memory", "glibc defaults"


def main():
    steps = sys.argv[1] if len(sys.argv) > 1 else "results/step-time-allocator-cpu.csv"
    wall = sys.argv[2] if len(sys.argv) > 2 else "results/wall-time-allocator-cpu.csv"
    rows = list(csv.DictReader(open(steps)))
    med = lambda m, a, k: statistics.median(float(r[k]) for r in rows if r["method"] == m and r["allocator"] == a)  # noqa: E731
    print("| method | float32 ms: keep freed / glibc defaults | ratio | bf16 ms: keep freed / glibc defaults | ratio |")
    print("|---|---|---|---|---|")
    for m in dict.fromkeys(r["method"] for r in rows):
        k32, g32, k16, g16 = (med(m, a, k) for k in ("fp32_ms", "bf16_ms") for a in (KEEP, GLIBC))
        print(f"| {NAMES.get(m, m)} | {k32:.0f} / {g32:.0f} | {k32 / g32:.2f} | {k16:.0f} / {g16:.0f} | {k16 / g16:.2f} |")
    rss = {a: max(int(r["peak_rss_bytes"]) for r in rows if r["allocator"] == a) for a in (KEEP, GLIBC)}
    print(f"\npeak resident memory of the step-time processes: {rss[KEEP] / 1e9:.2f} GB keeping freed memory, "
          f"{rss[GLIBC] / 1e9:.2f} GB with glibc's defaults ({rss[KEEP] / rss[GLIBC]:.2f}×)")
    try:
        sweeps = {}  # (experiment, profile, set) -> allocator -> row; the last row of each wins
        for r in csv.DictReader(open(wall)):
            sweeps.setdefault((r["experiment"], r["profile"], r["set"]), {})[r["allocator"]] = r
    except FileNotFoundError:
        return
    for (experiment, profile, subset), runs in sweeps.items():
        if KEEP not in runs or GLIBC not in runs:
            continue
        k, g = runs[KEEP], runs[GLIBC]
        kw, gw = float(k["wall_seconds"]), float(g["wall_seconds"])
        print(f"\n{experiment} {profile} {subset or '(whole profile)'} ({k['runs']} runs): {kw:.0f} s keeping freed "
              f"memory, {gw:.0f} s with glibc's defaults ({kw / gw:.2f}×); "
              f"peak resident memory {int(k['peak_rss_bytes']) / 1e9:.2f} and {int(g['peak_rss_bytes']) / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
