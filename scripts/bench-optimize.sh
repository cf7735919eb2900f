#!/usr/bin/env bash
# The optimization table of BENCHMARKS.md: every algorithm on the shipped tasks, on the embedded
# model, with the default budget, from a deliberately weak start (the task's zero-shot prompt).
# Each run has its own response cache (--no-cache: the run directory's), so wall times are not
# helped by earlier runs.
#
#   [ALGOS="opro gepa"] [EXTRA="--dev-limit 20 …"] scripts/bench-optimize.sh [TASK...]
#   (default: sst2 trec, every algorithm, the default budget; EXTRA adds optimize flags)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p metaprompt-cli >&2
bin=target/release/metaprompt
out=$(mktemp -d)
tasks=("${@:-sst2 trec}")
# shellcheck disable=SC2206
tasks=(${tasks[@]})
echo "| task | algorithm | seed dev | seed test | kept | kept dev | kept test | test diff [95% CI] | metric calls (saved) | meta calls | wall |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for task in "${tasks[@]}"; do
  for algo in ${ALGOS:-fewshot opro ape protegi gepa evolve auto}; do
    # shellcheck disable=SC2086  # EXTRA is a list of flags
    "$bin" --no-cache --no-library optimize "examples/$task/task.toml" --algo "$algo" --yes \
      --prompt "examples/$task/prompts/zero_shot.toml" \
      --run-dir "$out/$task-$algo" ${EXTRA:-} --json >"$out/$task-$algo.json" 2>"$out/$task-$algo.log"
    python3 - "$task" "$algo" "$out/$task-$algo.json" <<'PY'
import json, sys
task, algo, path = sys.argv[1:]
o = json.load(open(path))
e = lambda x: f"{x['mean']:.3f} [{x['low']:.3f}, {x['high']:.3f}]" if x else "–"
kept_dev = o["seed_dev"] if o["kept_seed"] else o["best_dev"]
t = o.get("test_paired")
diff = f"{t['diff']:+.3f} [{t['low']:+.3f}, {t['high']:+.3f}]" if t else "– (seed kept)"
print(f"| {task} | {algo} | {e(o['seed_dev'])} | {e(o['seed_test'])} | {o['winner']} | {e(kept_dev)} | {e(o['winner_test'])} | {diff} | {o['metric_calls']} ({o['saved_calls']}) | {o['meta_calls']} | {o['wall_secs']:.0f} s |")
PY
  done
done
echo "runs: $out" >&2
