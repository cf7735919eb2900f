#!/usr/bin/env bash
# Two evaluations on the embedded model at once, with and without the machine's compute turn
# ([local] share_cores), beside one alone: label scoring (SST-2) and generation (GSM8K).
#   scripts/bench-cores.sh            # Qwen2.5-Coder 0.5B, 30 SST-2 and 4 GSM8K examples
#   MODEL=local:gemma-3-270m SST2=60 GSM8K=8 scripts/bench-cores.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p metaprompt-cli
bin="$PWD/target/debug/metaprompt"
model="${MODEL:-local:qwen2.5-coder-0.5b-instruct}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf '[local]\nshare_cores = true\n' > "$work/on.toml"
printf '[local]\nshare_cores = false\n' > "$work/off.toml"
export METAPROMPT_NO_CACHE=1
"$bin" model pull "${model#local:}" >/dev/null 2>&1 || true

one() { # config task limit out → seconds
  local start end
  start=$(date +%s.%N)
  "$bin" --config "$work/$1.toml" --no-library eval "$2" --model "$model" --limit "$3" \
    --out "$work/$4.jsonl" >/dev/null 2>&1
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}

for case in "sst2 ${SST2:-30} label-scoring" "gsm8k ${GSM8K:-4} generation"; do
  set -- $case
  task="examples/$1/task.toml"
  alone=$(one on "$task" "$2" alone)
  for mode in on off; do
    one "$mode" "$task" "$2" "a-$mode" > "$work/a.t" &
    one "$mode" "$task" "$2" "b-$mode" > "$work/b.t" &
    wait
    printf '%-6s %-13s %3s examples · alone %6.1f s · two at once, share_cores=%-5s %6.1f s and %6.1f s (%.1f× alone)\n' \
      "$1" "$3" "$2" "$alone" "$mode" "$(cat "$work/a.t")" "$(cat "$work/b.t")" \
      "$(echo "$(cat "$work/a.t") / $alone" | bc -l)"
  done
  cmp -s <(jq -c .score "$work/alone.jsonl") <(jq -c .score "$work/a-on.jsonl") \
    && echo "       scores identical alone and shared" || echo "       SCORES DIFFER"
done
