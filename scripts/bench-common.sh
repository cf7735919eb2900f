# Sourced by the table scripts (bench-small.sh, bench-generate.sh) after `cd` to the repository
# root, with the script's arguments: sets `bin` (BIN, else a release build), `out` (OUT, else a
# temporary directory) and `tasks` (the arguments, else every examples/* with a
# prompts/human.toml).
if [ -n "${BIN:-}" ]; then
  bin=$BIN
else
  cargo build --release -p metaprompt-cli >&2
  bin=target/release/metaprompt
fi
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
if [ $# -gt 0 ]; then
  tasks=("$@")
else
  tasks=()
  for h in examples/*/prompts/human.toml; do tasks+=("$(basename "$(dirname "$(dirname "$h")")")"); done
fi
