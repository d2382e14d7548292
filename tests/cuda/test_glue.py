"""nzdist.codec.cuda without a usable GPU: it says so clearly instead of failing obscurely."""

import re

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


def test_unbuilt_kernels_are_named_as_the_reason(monkeypatch):
    monkeypatch.setattr(cuda, "_ext", None)
    assert not cuda.available()
    assert "built without its CUDA kernels" in cuda.unavailable_reason()
    with pytest.raises(RuntimeError, match="NZDIST_CUDA=1"):
        cuda.compress(torch.zeros(4, dtype=torch.bfloat16))


@pytest.mark.skipif(cuda._ext is None, reason="nzdist._cuda is not built (NZDIST_CUDA=1 pip install .)")
def test_missing_driver_or_device_is_reported_in_the_cuda_runtimes_words():
    # The strings come from the CUDA runtime linked into the extension, not from a table of ours.
    assert cuda._ext.describe_error(35).startswith("cudaErrorInsufficientDriver (35): CUDA driver version is")
    assert cuda._ext.describe_error(100) == "cudaErrorNoDevice (100): no CUDA-capable device is detected"
    try:
        count = cuda._ext.device_count()
    except RuntimeError as e:
        message = str(e)
    else:
        pytest.skip(f"the CUDA runtime sees {count} device(s) here")
    found = re.search(r"(cudaError\w+) \((\d+)\): ", message)
    assert found and int(found.group(2)) != 0, message
    assert cuda._ext.describe_error(int(found.group(2))) in message
    assert cuda.unavailable_reason() == message and not cuda.available()
    with pytest.raises(RuntimeError, match=re.escape(found.group(1))):
        cuda.compress(torch.zeros(4, dtype=torch.bfloat16))
