"""nzdist.codec.cuda without a usable GPU: it says so clearly instead of failing obscurely."""

import pytest
import torch

from nzdist.codec import cuda


def test_available_is_a_bool():
    assert isinstance(cuda.available(), bool)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
def test_calls_without_gpu_raise_clear_errors():
    assert not cuda.available()
    with pytest.raises(RuntimeError, match="CUDA"):
        cuda.compress(torch.zeros(4, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match="CUDA"):
        cuda.decompress_batch([torch.zeros(64, dtype=torch.uint8)], [torch.zeros(4, dtype=torch.bfloat16)])
