#!/usr/bin/env bash
# Issue 18's table in BENCHMARKS.md: prompt search on the embedded models under a small budget.
# For each task: the seed (the task's few-shot prompt: demonstrations, no instruction), the
# human-written instruction with the same demonstrations (prompts/human.toml, written from the
# task description before any optimizer ran), and what each algorithm keeps from the seed with
# 300 search metric calls and 30 meta calls on 50 dev examples — all scored on the same 100
# test examples (fewer where the split has fewer), the kept prompt compared with the human one
# by the paired bootstrap.
#
#   [ALGOS="auto mipro ape"] [META=local:smollm2-135m-instruct] [DEV_LIMIT=50] [TEST_LIMIT=100] \
#     [CALLS=300] [EXTRA="--minibatch 10"] scripts/bench-small.sh [TASK...]
#   (default tasks: every examples/* with a prompts/human.toml; META: the task's meta model;
#   CALLS: the search's metric-call cap; EXTRA: more `optimize` flags, for a reduced run)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p metaprompt-cli >&2
bin=target/release/metaprompt
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
if [ $# -gt 0 ]; then
  tasks=("$@")
else
  tasks=()
  for h in examples/*/prompts/human.toml; do tasks+=("$(basename "$(dirname "$(dirname "$h")")")"); done
fi
dev=${DEV_LIMIT:-50}
test=${TEST_LIMIT:-100}
meta=()
if [ -n "${META:-}" ]; then meta=(--meta "$META"); fi
common=(--no-cache --no-library)
echo "| task | prompt | test (n) | vs human on test [95% CI], p | search calls | test calls | meta calls | junk rejected | wall |"
echo "|---|---|---|---|---|---|---|---|---|"
for task in "${tasks[@]}"; do
  human="examples/$task/prompts/human.toml"
  # The seed: the few-shot prompt whose demonstrations the human one has, without instruction.
  seed="prompts/$(sed -n 's/.*same demonstrations as \([a-z_]*\.toml\).*/\1/p' "$human")"
  "$bin" "${common[@]}" compare "examples/$task/task.toml" "$human" "examples/$task/$seed" \
    --split test --limit "$test" --json >"$out/$task-seed.json"
  python3 - "$task" "seed ($(basename "$seed"))" "$out/$task-seed.json" <<'PY'
import json, sys
task, name, path = sys.argv[1:]
c = json.load(open(path))
def est(s): return f"{s['mean']:.3f}"
a, b, t = c["a"]["score"], c["b"]["score"], c["paired"]
n = c["a"].get("examples", "?")
print(f"| {task} | human (prompts/human.toml) | {est(a)} ({n}) | | | | | | |")
print(f"| {task} | {name} | {est(b)} | {t['diff']:+.3f} [{t['low']:+.3f}, {t['high']:+.3f}], p = {t['p_value']:.4f} | | | | | |")
PY
  for algo in ${ALGOS:-auto mipro ape}; do
    run="$out/$task-$algo"
    "$bin" "${common[@]}" optimize "examples/$task/task.toml" --algo "$algo" --yes \
      --prompt "examples/$task/$seed" "${meta[@]}" \
      --dev-limit "$dev" --test-limit "$test" --max-metric-calls "${CALLS:-300}" --max-meta-calls 30 ${EXTRA:-} \
      --run-dir "$run" --json >"$run.json" 2>"$run.log"
    "$bin" "${common[@]}" compare "examples/$task/task.toml" "$human" "$run/best.toml" \
      --split test --limit "$test" --json >"$run.compare.json"
    python3 - "$task" "$algo" "$run.json" "$run.compare.json" <<'PY'
import json, sys
task, algo, path, cpath = sys.argv[1:]
o, c = json.load(open(path)), json.load(open(cpath))
t = c["paired"]
s = o.get("screened", {})
junk = sum(s.get("rejected", {}).values())
kept = "seed kept" if o["kept_seed"] else o["winner"]
rounds = len(o["rounds"]) - 1
print(f"| {task} | {algo} → {kept} ({rounds} rounds, {o['stop']}) | {c['b']['score']['mean']:.3f} | "
      f"{t['diff']:+.3f} [{t['low']:+.3f}, {t['high']:+.3f}], p = {t['p_value']:.4f} | "
      f"{o['metric_calls']} | {o.get('test_calls', 0)} | {o['meta_calls']} | "
      f"{junk} of {s.get('instructions', 0)} | {o['wall_secs']:.0f} s |")
PY
  done
done
echo "runs: $out" >&2
