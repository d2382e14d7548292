"""nzdist.codec.cuda without a usable GPU: it says so clearly instead of failing obscurely."""

import re

import pytest
import torch

import nzdist
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


def test_variants_listed_without_a_gpu():
    names = cuda.variants()
    assert names and names[0] == "v1" and len(set(names)) == len(names)
    with pytest.raises(ValueError, match="variant"):
        cuda._variant_index("no-such-kernel")


def test_unavailable_reason_says_why():
    why = cuda.unavailable_reason()
    assert (why is None) == cuda.available()
    if not torch.cuda.is_available():
        assert why  # e.g. "CUDA runtime: CUDA driver version is insufficient ..." or "built without ..."


class _OnCuda:
    """Stands in for a CUDA tensor where the glue only looks at its device, shape and dtype."""

    def __init__(self, shape=(), dtype=torch.uint8):
        self.device = torch.device("cuda")
        self.shape = torch.Size(shape)
        self.dtype = dtype


def test_gpu_decode_grain_is_each_payloads_chunk_size(monkeypatch):
    """One warp per chunk as written: small-chunk and raw payloads are not decoded at a fixed 65,536 grain."""
    from nzdist.codec import api

    import cuda_cases as cases

    seen = {}
    monkeypatch.setattr(api._gpu, "available", lambda: True)
    monkeypatch.setattr(api, "_is_plain", lambda t: True)  # the stand-ins are decoded into directly
    monkeypatch.setattr(
        api._gpu,
        "decompress_batch",
        lambda payloads, outs, chunk_elems, check, **kw: seen.update(grains=list(chunk_elems)),
    )
    small = nzdist.compress(cases.weights(5000, torch.bfloat16), codec=nzdist.Lossless(chunk_elems=1024))
    raw = nzdist.compress(cases.all_patterns(torch.bfloat16), codec=nzdist.Lossless(chunk_elems=4096))
    default = nzdist.compress(cases.weights(100_000, torch.float32))
    assert raw.header()["mode"] == 0 and small.header()["mode"] == 1
    parsed = [nzdist.CompressedTensor.from_bytes(c.to_bytes()) for c in (small, raw, default)]
    assert [p.chunk_elems for p in parsed] == [1024, None, 65536]  # a raw header records no chunk size
    cts = [nzdist.CompressedTensor(_OnCuda(), c.shape, c.dtype, c.chunk_elems) for c in (small, raw, default)]
    outs = [_OnCuda(c.shape, c.dtype) for c in cts]
    nzdist.decompress_batch(cts, outs)
    assert seen["grains"] == [1024, 4096, 65536]
    parsed_on_gpu = [nzdist.CompressedTensor(_OnCuda(), p.shape, p.dtype, p.chunk_elems) for p in parsed]
    nzdist.decompress_batch(parsed_on_gpu, outs)
    assert seen["grains"] == [1024, 65536, 65536]
