#!/usr/bin/env bash
# Runs the whole metaprompt test suite: installs missing system packages, checks formatting
# (`cargo fmt --check`) and lints (`cargo clippy --all-targets -- -D warnings`), then runs every
# test of every crate, and prints the wall time. This is the README's test command and what CI
# runs.
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

# Style and lints first: a warning fails the suite as a failing test would. (Both tools come
# with rustup's default profile; a toolchain without them says so and goes on to the tests.)
if cargo fmt --version >/dev/null 2>&1; then
  cargo fmt --all --check
else
  echo "cargo fmt is not installed: formatting not checked" >&2
fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --all-targets --locked -- -D warnings
else
  echo "cargo clippy is not installed: lints not checked" >&2
fi

if [ "$quick" -eq 1 ]; then
  cargo test --workspace --locked "${args[@]}" -- --skip embedded
else
  cargo test --workspace --locked "${args[@]}"
fi
