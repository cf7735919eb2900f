#!/usr/bin/env bash
# The small-budget tables in BENCHMARKS.md (issue 18 on the embedded base models, issue 35 on the
# instruction-tuned ones): prompt search under a small budget against a careful person's prompt.
# For each task: the baseline (HUMAN: prompts/human.toml, the instruction a person wrote from the
# task description before any optimizer ran; on a chat model prompts/human_chat.toml, the same
# instruction with the answer format, in chat form), the other human prompt and the seed (the
# task's few-shot prompt: demonstrations, no instruction) against it, and what each algorithm
# keeps from the seed with CALLS search metric calls and 30 meta calls on DEV_LIMIT dev examples,
# all scored on the same TEST_LIMIT test examples, each compared with the baseline by the paired
# bootstrap. Tokens are the execution model's input tokens per test example (prompt + example).
#
#   [ALGOS="auto mipro ape"] [EXEC=local:qwen2.5-coder-0.5b-instruct] [HUMAN=human_chat] \
#     [META=local:qwen2.5-coder-1.5b-instruct] [DEV_LIMIT=50] [TEST_LIMIT=100] [CALLS=300] \
#     [WALL=780] [EXTRA="--minibatch 10"] [START=human_chat] [BIN=path/to/metaprompt] [OUT=dir] \
#     scripts/bench-small.sh [TASK...]
#   (default tasks: every examples/* with a prompts/human.toml; EXEC and META: the task's models;
#   WALL: the search's wall-time cap in seconds; ALGOS="": the human and seed rows only;
#   BASE_ROWS=0: the algorithms' rows only; START: the prompt the search starts from, a file in
#   the task's prompts/ (default: the seed), e.g. human_chat to ask whether search improves the
#   careful person's own prompt; BIN: a binary to use instead of building one, so a
#   long run is not changed by a rebuild)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh "$@"
dev=${DEV_LIMIT:-50}
test=${TEST_LIMIT:-100}
base=${HUMAN:-human}
exec_model=()
if [ -n "${EXEC:-}" ]; then exec_model=(-m "$EXEC"); fi
meta=()
if [ -n "${META:-}" ]; then meta=(--meta "$META"); fi
wall=()
if [ -n "${WALL:-}" ]; then wall=(--max-wall "$WALL"); fi
common=(--no-cache --no-library)
echo "| task | prompt | test (n) | vs $base on test [95% CI], p | tokens/example | search calls | meta calls | junk rejected | wall |"
echo "|---|---|---|---|---|---|---|---|---|"
row() { # TASK NAME COMPARE_JSON [OPTIMIZE_JSON]: one table row; the baseline's row first when asked
  python3 - "$@" <<'PY'
import json, sys
task, name, cpath, *rest = sys.argv[1:]
c = json.load(open(cpath))
a, b, t = c["a"], c["b"], c["paired"]
tok = lambda r: f"{r['usage']['input_tokens'] / max(r['examples'], 1):.0f}"
if name == "baseline":
    print(f"| {task} | {a['prompt']} | {a['score']['mean']:.3f} ({a['examples']}) | | {tok(a)} | | | | |")
    sys.exit()
diff = f"{t['diff']:+.3f} [{t['low']:+.3f}, {t['high']:+.3f}], p = {t['p_value']:.4f}"
if not rest:
    print(f"| {task} | {name} | {b['score']['mean']:.3f} | {diff} | {tok(b)} | | | | |")
    sys.exit()
o = json.load(open(rest[0]))
s = o.get("screened", {})
junk = sum(s.get("rejected", {}).values())
kept = "seed kept" if o["kept_seed"] else o["winner"]
h = o.get("confirm")
if h:  # decided on dev examples held out of the search (EXTRA="--hold-out SHARE")
    p = h["paired"]
    kept += f"; {o['best']} on {p['n']} held out {p['diff']:+.3f}, p = {p['p_value']:.3f}"
rounds = len(o["rounds"]) - 1
print(f"| {task} | {name} → {kept} ({rounds} rounds, {o['stop']}) | {b['score']['mean']:.3f} | {diff} | "
      f"{tok(b)} | {o['metric_calls']} | {o['meta_calls']} | {junk} of {s.get('instructions', 0)} | "
      f"{o['wall_secs']:.0f} s |")
PY
}
for task in "${tasks[@]}"; do
  dir="examples/$task"
  human="$dir/prompts/$base.toml"
  # The seed: the few-shot prompt whose demonstrations the human one has, without instruction.
  seed="prompts/$(sed -n 's/.*same demonstrations as \([a-z_]*\.toml\).*/\1/p' "$dir/prompts/human.toml")"
  others=("$dir/$seed")
  if [ "$base" != human ]; then others=("$dir/prompts/human.toml" "${others[@]}"); fi
  first=1
  if [ "${BASE_ROWS:-1}" = 0 ]; then others=(); fi
  for other in "${others[@]}"; do
    name=$(basename "$other" .toml)
    "$bin" "${common[@]}" compare "$dir/task.toml" "$human" "$other" "${exec_model[@]}" \
      --split test --limit "$test" --json >"$out/$task-$name.json"
    if [ $first = 1 ]; then row "$task" baseline "$out/$task-$name.json"; first=0; fi
    label=$name
    if [ "$dir/$seed" = "$other" ]; then label="seed ($name)"; fi
    row "$task" "$label" "$out/$task-$name.json"
  done
  start="$dir/$seed"
  if [ -n "${START:-}" ]; then start="$dir/prompts/$START.toml"; fi
  for algo in ${ALGOS-auto mipro ape}; do
    run="$out/$task-$algo"
    "$bin" "${common[@]}" optimize "$dir/task.toml" --algo "$algo" --yes \
      --prompt "$start" "${exec_model[@]}" "${meta[@]}" "${wall[@]}" \
      --dev-limit "$dev" --test-limit "$test" --max-metric-calls "${CALLS:-300}" --max-meta-calls 30 ${EXTRA:-} \
      --run-dir "$run" --json >"$run.json" 2>"$run.log"
    "$bin" "${common[@]}" compare "$dir/task.toml" "$human" "$run/best.toml" "${exec_model[@]}" \
      --split test --limit "$test" --json >"$run.compare.json"
    label=$algo
    if [ -n "${START:-}" ]; then label="$algo from $START"; fi
    row "$task" "$label" "$run.compare.json" "$run.json"
  done
done
echo "runs: $out" >&2
