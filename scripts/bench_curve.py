#!/usr/bin/env python3
"""The convergence curve and the break-even of the runs of a `scripts/bench-small.sh` table.

    python3 scripts/bench_curve.py OUT_DIR [ALGO]

For each `OUT_DIR/<task>-<ALGO>.json` (the `optimize --json` outcome; ALGO defaults to auto):
the best dev score after each round (round 0 is the seed), the share of the final gain reached
by rounds 1, 3 and 5, the metric and meta calls, and the run's break-even as `optimize` reports
it (`break_even`: the run's cost against the kept prompt's saving per correct answer on test).
"""

import json
import pathlib
import sys


def share(rounds, k):
    start, end = rounds[0]["best"], rounds[-1]["best"]
    if end <= start:
        return "–"
    at = rounds[min(k, len(rounds) - 1)]["best"]
    return f"{100 * (at - start) / (end - start):.0f}%"


def main():
    out = pathlib.Path(sys.argv[1])
    algo = sys.argv[2] if len(sys.argv) > 2 else "auto"
    print("| task | best dev by round (0 = seed) | gain by round 1, 3, 5 | metric calls | meta calls | break-even |")
    print("|---|---|---|---|---|---|")
    for path in sorted(out.glob(f"*-{algo}.json")):
        task = path.name[: -len(f"-{algo}.json")]
        try:
            o = json.loads(path.read_text())
        except ValueError:
            continue  # a run still going, or stopped
        rounds = o["rounds"]
        curve = " → ".join(f"{r['best']:.2f}" for r in rounds)
        gains = ", ".join(share(rounds, k) for k in (1, 3, 5))
        b = o.get("break_even")
        if not b:
            be = "seed kept" if o.get("kept_seed") else "–"
        else:
            unit = "model s" if b["unit"] == "model-seconds" else "$"
            n = b.get("executions")
            paid = f"~{n} executions" if n is not None else "never in cost"
            be = (f"{b['one_off']:.0f} {unit} spent; {paid} "
                  f"({b['kept_per_correct']:.3f} vs {b['seed_per_correct']:.3f} {unit} per correct answer)")
        print(f"| {task} | {curve} | {gains} | {o['metric_calls']} | {o['meta_calls']} | {be} |")


if __name__ == "__main__":
    main()
