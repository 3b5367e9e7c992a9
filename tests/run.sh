#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine, then runs the suite (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
fi
pip install -q -r requirements.txt -r requirements-embed.txt pytest tensorboard  # tensorboard: --tensorboard is optional, its test is not
python -m pytest tests -q
