#!/usr/bin/env bash
# Formatting, checked (never rewritten) in CI: ruff's formatter and lint rules (import order included) on the
# Python, clang-format (.clang-format, pinned below) on csrc/. To fix locally:
#   ruff format nzdist tests launch .ci setup.py cuda_build.py && ruff check --fix nzdist tests launch .ci setup.py cuda_build.py
#   clang-format -i $(git ls-files 'csrc/*.h' 'csrc/*.cpp' 'csrc/*.cu')
set -euo pipefail
cd "$(dirname "$0")/.."
CLANG_FORMAT_VERSION=23.1.5
python -m ruff format --check nzdist tests launch .ci setup.py cuda_build.py
python -m ruff check nzdist tests launch .ci setup.py cuda_build.py
if ! command -v clang-format >/dev/null || [[ "$(clang-format --version)" != *"$CLANG_FORMAT_VERSION"* ]]; then
  python -m pip install -q "clang-format==$CLANG_FORMAT_VERSION"
fi
git ls-files 'csrc/*.h' 'csrc/*.cpp' 'csrc/*.cu' | xargs clang-format --dry-run --Werror
echo "format ok (ruff format, ruff check, clang-format $CLANG_FORMAT_VERSION on csrc/)"
