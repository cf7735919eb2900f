#!/usr/bin/env bash
# `translate` parity on real models (BENCHMARKS.md, issue 35): a prompt written for one model,
# moved to TO, scored on the same examples. Two moves per task:
#   - prompts/human.toml (text form) from the base model Gemma 3 270M;
#   - prompts/human_chat.toml (chat form) from Qwen2.5-Coder 1.5B Instruct.
# Each variant (v0: the layout converted mechanically; v1…vN: the instruction rewritten by the
# meta model) is scored on TO; the source on its own model. Parity is the chosen variant's
# paired difference from the source. The variant is chosen on the same SPLIT examples it is
# reported on, so the chosen one's parity is optimistic by the selection; v0's is not selected.
#
#   [TO=local:qwen2.5-coder-0.5b-instruct] [META=local:qwen2.5-coder-1.5b-instruct] [N=3] \
#     [SPLIT=test] [LIMIT=100] [BIN=path/to/metaprompt] [OUT=dir] scripts/bench-translate.sh [TASK...]
#   (default tasks: every examples/* with a prompts/human.toml)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh "$@"
to=${TO:-local:qwen2.5-coder-0.5b-instruct}
meta=${META:-local:qwen2.5-coder-1.5b-instruct}
echo "| task | source prompt (model) | source | v0 (layout only) | chosen | parity: chosen − source [95% CI], p | meta calls | wall |"
echo "|---|---|---|---|---|---|---|---|"
for task in "${tasks[@]}"; do
  dir="examples/$task"
  for move in "human:local:gemma-3-270m" "human_chat:local:qwen2.5-coder-1.5b-instruct"; do
    prompt=${move%%:*}
    from=${move#*:}
    run="$out/$task-$prompt"
    start=$(date +%s)
    "$bin" --no-cache --no-library translate "$dir/prompts/$prompt.toml" --task "$dir/task.toml" \
      --from "$from" --to "$to" --meta "$meta" -n "${N:-3}" --split "${SPLIT:-test}" \
      --limit "${LIMIT:-100}" --out "$run.toml" --json >"$run.json" 2>"$run.log"
    wall=$(($(date +%s) - start))
    python3 - "$task" "$prompt" "$from" "$run.json" "$wall" <<'PY'
import json, sys
task, prompt, source_model, path, wall = sys.argv[1:]
t = json.load(open(path))
src = t["source_score"]["mean"]
cands = t["candidates"]
score = lambda c: f"{c['score']['mean']:.3f}" if c.get("score") else "–"
v0 = cands[0] if cands else {}
chosen = cands[t["chosen"]] if t.get("chosen") is not None else None
p = t.get("parity")
parity = (f"{p['paired']['diff']:+.3f} [{p['paired']['low']:+.3f}, {p['paired']['high']:+.3f}], "
          f"p = {p['paired']['p_value']:.4f}") if p else "–"
meta_calls = t["costs"]["meta"]["calls"] if "meta" in t.get("costs", {}) else "?"
print(f"| {task} | {prompt} ({source_model.removeprefix('local:')}) | {src:.3f} | {score(v0)} | "
      f"{chosen['id'] + ' ' + score(chosen) if chosen else '–'} | {parity} | {meta_calls} | {wall} s |")
PY
  done
done
echo "runs: $out" >&2
