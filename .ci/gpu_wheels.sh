#!/usr/bin/env bash
# Prepare, on the CPU machine, the wheels the GPU image lacks for `nzdist bench gpu`'s baseline columns (nvCOMP
# ANS as NeuZip uses it, DFloat11's decoder; cupy, transformers, accelerate, safetensors are on the image) into
# .whl/ (ignored by git; about 34 MB of the device call's 64 MiB), for a device call with carry [".whl"].
# nzdist itself needs none of them there (zstandard is imported only by checkpoint code the kit does not run).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>"$(git rev-parse --git-path info/exclude)"
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  nvidia-nvcomp-cu13==6.0.0.12 nvidia-libnvcomp-cu13==6.0.0.12 dfloat11==0.5.0 dahuffman==0.4.2
du -sh .whl && ls .whl
