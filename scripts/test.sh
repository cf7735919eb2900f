#!/usr/bin/env bash
# Runs the whole metaprompt test suite: installs missing system packages, then every test of
# every crate, and prints the wall time. This is the README's test command and what CI runs.
#
#   scripts/test.sh            everything
#   scripts/test.sh --quick    everything but the tests that run the embedded model (their names
#                              contain `embedded`): a minute or two once built, for iteration
#
# Other arguments go to `cargo test` (e.g. `-p metaprompt-engine`).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
args=()
for a in "$@"; do
  case "$a" in
    --quick) quick=1 ;;
    *) args+=("$a") ;;
  esac
done

start=$(date +%s)
report() {
  local rc=$? secs=$(( $(date +%s) - start ))
  echo "test suite wall time: $((secs / 60)) min $((secs % 60)) s (exit $rc)" >&2
}
trap report EXIT

bash scripts/deps.sh --tests

# llama.cpp and friends build with CMake: keep it to the cores we have.
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"

if [ "$quick" -eq 1 ]; then
  cargo test --workspace --locked "${args[@]}" -- --skip embedded
else
  cargo test --workspace --locked "${args[@]}"
fi
