#!/usr/bin/env bash
# `generate` from the task description alone (no seed prompt shown to the meta model), against
# the careful person's prompt (BENCHMARKS.md, issue 35). For each task: `generate -n 4` picks
# among its candidates on the dev split, then the kept prompt and the human one (HUMAN: human or
# human_chat) are scored on the same TEST_LIMIT test examples and compared by the paired
# bootstrap. Tokens are the execution model's input tokens per test example.
#
#   [EXEC=local:qwen2.5-coder-0.5b-instruct] [META=local:qwen2.5-coder-1.5b-instruct] \
#     [HUMAN=human_chat] [TEST_LIMIT=100] [N=4] [BIN=path/to/metaprompt] [OUT=dir] \
#     scripts/bench-generate.sh [TASK...]
#   (default tasks: every examples/* with a prompts/human.toml; EXEC and META: the task's models)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh "$@"
base=${HUMAN:-human}
exec_model=()
if [ -n "${EXEC:-}" ]; then exec_model=(-m "$EXEC"); fi
meta=()
if [ -n "${META:-}" ]; then meta=(--meta "$META"); fi
common=(--no-cache --no-library)
echo "| task | $base | generated | difference [95% CI], p | tokens/example ($base, generated) | written, rejected (why) | generate wall | kept instruction |"
echo "|---|---|---|---|---|---|---|---|"
for task in "${tasks[@]}"; do
  dir="examples/$task"
  start=$(date +%s)
  "$bin" "${common[@]}" generate --task "$dir/task.toml" "${exec_model[@]}" "${meta[@]}" \
    -n "${N:-4}" --out "$out/$task.toml" --json >"$out/$task.generate.json" 2>"$out/$task.log"
  wall=$(($(date +%s) - start))
  "$bin" "${common[@]}" compare "$dir/task.toml" "$dir/prompts/$base.toml" "$out/$task.toml" \
    "${exec_model[@]}" --split test --limit "${TEST_LIMIT:-100}" --json >"$out/$task.compare.json"
  python3 - "$task" "$out/$task.generate.json" "$out/$task.compare.json" "$wall" <<'PY'
import json, sys
task, gpath, cpath, wall = sys.argv[1:]
g, c = json.load(open(gpath)), json.load(open(cpath))
a, b, t = c["a"], c["b"], c["paired"]
tok = lambda r: f"{r['usage']['input_tokens'] / max(r['examples'], 1):.0f}"
cands = g["candidates"]
rejected = [x for x in cands if x.get("status") == "rejected"]
why = "; ".join(sorted({w for x in rejected for w in x.get("why", [])}))
chosen = cands[g["chosen"]] if g.get("chosen") is not None else None
instruction = ((chosen or {}).get("prompt") or {}).get("instruction") or ""
why = f" ({why})" if why else ""  # (python3 before 3.12 takes no nested quotes in f-strings)
print(f"| {task} | {a['score']['mean']:.3f} | {b['score']['mean']:.3f} | "
      f"{t['diff']:+.3f} [{t['low']:+.3f}, {t['high']:+.3f}], p = {t['p_value']:.4f} | "
      f"{tok(a)}, {tok(b)} | {len(cands)}, {len(rejected)}{why} | {wall} s | {instruction!r} |")
PY
done
echo "runs: $out" >&2
