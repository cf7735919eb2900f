#!/usr/bin/env bash
# Runs the whole metaprompt test suite: installs missing system packages, then every test of
# every crate. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh

# llama.cpp and friends build with CMake: keep it to the cores we have.
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"

cargo test --workspace --locked "$@"
