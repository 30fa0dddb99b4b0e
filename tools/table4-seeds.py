"""What a seed moves in Table 4's one-seed comparisons: for the runs of a folder (results/runs/table4/<profile>),
every pair of runs, of one method on two seeds or of two methods on one seed, compared as the runner compares two
methods of the one-seed table: the zero-shot average perplexity's difference and the paired Wilcoxon test over the
zero-shot blocks' losses (SciPy's, two-sided), beside it the in-domain perplexity's difference.

    python3 tools/table4-seeds.py RUNS_FOLDER [TRAINING_SET]

RUNS_FOLDER: e.g. results/runs/table4/seeds after `just reproduce table4 --profile seeds`; TRAINING_SET: the genre
trained on (default "learned"). Prints a Markdown table.
"""
import csv
import glob
import itertools
import math
import os
import sys

from scipy.stats import wilcoxon


def blocks(run):
    """{set: [block losses in index order]} of a run's test sets (validation sets left out)."""
    sets = {}
    with open(os.path.join(run, "examples.csv")) as f:
        for row in csv.DictReader(f):
            if "(validation)" in row["set"]:
                continue
            sets.setdefault(row["set"], []).append((int(row["index"]), float(row["value"])))
    return {s: [v for _, v in sorted(rows)] for s, rows in sets.items()}


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    folder = sys.argv[1]
    train = sys.argv[2] if len(sys.argv) > 2 else "learned"
    runs = {}
    for path in sorted(glob.glob(os.path.join(folder, "*-s*", "examples.csv"))):
        run = os.path.basename(os.path.dirname(path))
        method, seed = run.rsplit("-s", 1)
        runs[(method, int(seed))] = blocks(os.path.dirname(path))
    if not runs:
        sys.exit(f"no finished runs (examples.csv) under {folder}")

    def zero_shot(r):
        return [s for s in sorted(r) if s != train]

    def ppl(r, s):
        return math.exp(sum(r[s]) / len(r[s]))

    def zs_avg(r):
        return sum(ppl(r, s) for s in zero_shot(r)) / len(zero_shot(r))

    print("| pair | runs | in-domain Δ | ZS avg Δ | paired Wilcoxon over the zero-shot blocks |")
    print("|---|---|---|---|---|")
    keys = sorted(runs)
    for a, b in itertools.combinations(keys, 2):
        same_method, same_seed = a[0] == b[0], a[1] == b[1]
        if not (same_method or same_seed):
            continue
        ra, rb = runs[a], runs[b]
        xa = [v for s in zero_shot(ra) for v in ra[s]]
        xb = [v for s in zero_shot(rb) for v in rb[s]]
        p = wilcoxon(xa, xb).pvalue
        kind = "seeds of one method" if same_method else "methods on one seed"
        print(f"| {a[0]} s{a[1]} − {b[0]} s{b[1]} | {kind} | {ppl(ra, train) - ppl(rb, train):+.3f} | "
              f"{zs_avg(ra) - zs_avg(rb):+.3f} | {p:.3g} ({len(xa)} blocks) |")


if __name__ == "__main__":
    main()
