#!/usr/bin/env bash
# Install nzdist the way a user on a GPU machine does and use it from outside the checkout (issue 11):
#   1. an sdist of the tracked files, by `python -m build` (the PEP 517 hooks, as any frontend calls them);
#   2. a wheel from that sdist with NZDIST_CUDA=1 through pip (build isolation, as `pip install .` does), so a
#      missing file in the sdist or a build step that only works from the checkout fails here;
#   3. the wheel must hold nzdist/_C, nzdist/_cuda and the configs the package reads at run time;
#   4. installed into a fresh venv, every `nzdist` command's quick form runs from a temporary directory, with the
#      checkout off sys.path (asserted), and `import nzdist._cuda` must work without a GPU, naming the CUDA error.
# Needs nvcc (no GPU) and PyPI for the build requirements. NZDIST_CUDA_ARCHS (default 90) picks the wheel's GPU
# targets; .ci/nvcc_check.sh already compiles every kernel for sm_80 and sm_90.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
PY="${PYTHON:-python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
t_start=$SECONDS
step() { echo "== [$((SECONDS - t_start)) s] $*"; }
timed() {  # timed LOG CMD...: run CMD into LOG; print its wall and CPU time; on failure show LOG's end and stop
  local log=$1; shift
  local rc=0 TIMEFORMAT='%R s wall, %U+%S s CPU'
  { time "$@" >"$log" 2>&1 || rc=$?; } 2>"$log.time"
  echo "   rc=$rc, $(cat "$log.time")"
  if [ "$rc" != 0 ]; then tail -60 "$log"; exit 1; fi
}

step "sdist from the tracked files (a copy: nothing built in the checkout can leak in), by python -m build"
mkdir -p "$work/src"
# Uncommitted edits to tracked files travel too (git ls-files lists paths; tar reads the working tree).
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$work/src"
# `python -m build` in a throwaway venv holding only pyproject's build requirements (build checks they are met).
reqs="$("$PY" -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')"
sdist_build() {  # (&&: errexit is off inside a command whose status is tested)
  # shellcheck disable=SC2086
  "$PY" -m venv "$work/buildenv" && "$work/buildenv/bin/python" -m pip install -q build $reqs \
    && "$work/buildenv/bin/python" -m build --sdist --no-isolation --outdir "$work/sdist" "$work/src"
}
timed "$work/sdist.log" sdist_build
sdist="$(ls "$work"/sdist/nzdist-*.tar.gz)"

step "wheel from the sdist: NZDIST_CUDA=1 pip wheel (sm_${NZDIST_CUDA_ARCHS:-90})"
timed "$work/wheel.log" env NZDIST_CUDA=1 NZDIST_CUDA_ARCHS="${NZDIST_CUDA_ARCHS:-90}" \
  "$PY" -m pip wheel --no-deps -w "$work/wheels" "$sdist"
wheel="$(ls "$work"/wheels/nzdist-*.whl)"
"$PY" - "$wheel" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = {"nzdist/_C": lambda n: n.startswith("nzdist/_C.") and n.endswith(".so"),
        "nzdist/_cuda": lambda n: n.startswith("nzdist/_cuda.") and n.endswith(".so"),
        **{f"nzdist/configs/{c}": (lambda c: lambda n: n == f"nzdist/configs/{c}")(c)
           for c in ("tiny_cpu.json", "gpu_1b.json", "neuzip_zero.json")}}
missing = [k for k, ok in need.items() if not any(ok(n) for n in names)]
print(f"   {sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} files; " + ", ".join(n for n in names if n.endswith(".so")))
sys.exit(f"wheel lacks {missing}" if missing else 0)
EOF

step "install into a fresh venv (system site-packages for torch and the test extras; nzdist from the wheel)"
"$PY" -m venv --system-site-packages --without-pip "$work/venv"
# --ignore-installed: never touch an nzdist installed outside the venv (e.g. the editable one of the tests).
"$PY" -m pip --python "$work/venv/bin/python" install -q --no-deps --ignore-installed "$wheel"
export PATH="$work/venv/bin:$PATH"
unset PYTHONPATH
run="$work/run"
mkdir -p "$run"
cd "$run"
python - "$repo" "$work/venv" <<'EOF'
import os, sys
import nzdist, nzdist._C, nzdist._cuda
from nzdist.codec import cuda
repo, venv = (os.path.realpath(p) for p in sys.argv[1:])
where = os.path.realpath(nzdist.__file__)
assert where.startswith(venv + os.sep), f"nzdist imported from {where}, not from the wheel in {venv}"
assert not any(os.path.realpath(p or ".") == repo for p in sys.path), "the checkout is on sys.path"
print(f"   nzdist from {where}")
reason = cuda.unavailable_reason()
print(f"   nzdist._cuda imported; CUDA codec: {'available' if reason is None else reason}")
assert reason is None or "cudaError" in reason, reason  # the runtime's own words where no GPU is usable
EOF
cp "$repo/tests/cuda/test_glue.py" "$repo/tests/cuda/cuda_cases.py" "$run/"  # the test and its case helper
python -m pytest -q -p no:cacheprovider test_glue.py | tail -1
rm test_glue.py cuda_cases.py
[ "$(command -v nzdist)" = "$work/venv/bin/nzdist" ]

export TQDM_DISABLE=1  # progress bars would fill the log
quick() {  # quick SECONDS CMD...: one CLI command from $run; the end of its output, its wall and CPU time
  local limit=$1; shift
  step "$*"
  timed "$work/cmd.log" timeout "$limit" "$@"
  tail -4 "$work/cmd.log" | sed 's/^/   /'
}
minilm="$(python -c 'from nzdist.bench.codec import minilm_path; print(minilm_path())')"

quick 60 nzdist --help
quick 60 python -m nzdist --help
quick 600 nzdist train --steps 2 --out train_out
test -s train_out/report.json
quick 300 nzdist stats "$minilm" --dtype bf16 --summary --no-progress --json stats.json
quick 600 nzdist bench codec --quick --out bench
quick 600 nzdist bench fsdp --steps 1 --warmup 1 --batch 2 --seq 32 --nproc 2 --out bench
quick 600 nzdist bench deepspeed --steps 1 --warmup 1 --d-model 64 --layers 1 --out bench
quick 600 nzdist bench ckpt --quick --out bench
quick 600 nzdist bench offload --steps 1 --warmup 1 --batch 2 --seq 32 --nproc 2 --out bench
step "a checkpoint and a delta against it, for nzdist ckpt (MiniLM's weights, then a changed copy)"
python - "$minilm" <<'PYEOF'
import sys
import torch
from safetensors.torch import load_file
import nzdist.checkpoint as ckpt
state = {k: v for k, v in load_file(sys.argv[1]).items() if v.is_floating_point()}
ckpt.save({"model": state}, "ckpt/base")
torch.manual_seed(0)
ckpt.save({"model": {k: v + 1e-4 * torch.randn_like(v) for k, v in state.items()}}, "ckpt/step1",
          previous="ckpt/base")
PYEOF
quick 120 nzdist ckpt inspect ckpt/step1 --verify
quick 120 nzdist ckpt convert ckpt/step1 dense.safetensors --dense
quick 120 nzdist ckpt convert ckpt/step1 dense_dcp --dense
test -s dense.safetensors && test -d dense_dcp
quick 600 nzdist demo --out demo
if python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  quick 600 nzdist bench gpu --gib 0.25 --reps 2 --no-nvcomp --no-dfloat11 --out bench
else  # no GPU: it must say why, in the CUDA runtime's words, and exit 2
  step "nzdist bench gpu (no GPU here)"
  rc=0; nzdist bench gpu --out bench >"$work/cmd.log" 2>&1 || rc=$?
  sed 's/^/   /' "$work/cmd.log"
  [ "$rc" = 2 ] && grep -q "cudaError" "$work/cmd.log" || { echo "bench gpu: expected exit 2 and a CUDA error"; exit 1; }
fi
step "wheel check passed"
