#!/usr/bin/env bash
# One-command set-up on a fresh machine: system packages (as root), then a virtualenv with
# digitlab, its training stack (CPU PyTorch pinned to 2.13.0) and the test tools.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(dataset-fashion-mnist chromium chromium-driver wrk)  # wrk: benchmarks/load.py
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "setup: please install the Debian packages: ${missing[*]} (optional: Fashion-MNIST data)" >&2
  fi
fi

python3 -m venv .venv
.venv/bin/pip install -q -e ".[dev]"
echo "setup: done. Activate with: source .venv/bin/activate"
