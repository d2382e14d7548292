"""Corrupt, truncated, wrong-version and absurd payloads raise nzdist.FormatError; nothing crashes."""

import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nzdist
from nzdist import _C
from tests.conftest import int_view

SMALL = nzdist.Lossless(chunk_elems=1024)


def payloads():
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(2500, generator=g) * 0.02).bfloat16()
    return {
        "coded": nzdist.compress(w, codec=SMALL).to_bytes(),
        "lossy-normalised": nzdist.compress(w.float(), codec=nzdist.Lossy(3, 256, chunk_elems=1024)).to_bytes(),
        "raw": nzdist.compress(torch.randn(40, generator=g).half()).to_bytes(),
    }


def decode(buf: bytes):
    return nzdist.decompress(nzdist.CompressedTensor.from_bytes(buf))


def reseal(buf: bytearray) -> bytes:
    """Recompute the header checksum so that a test reaches the checks behind it."""
    header_bytes = struct.unpack_from("<H", buf, 6)[0]
    struct.pack_into("<I", buf, 52, 0)
    t = torch.frombuffer(bytearray(buf[:header_bytes]), dtype=torch.uint8)
    struct.pack_into("<I", buf, 52, _C.crc32c(t.data_ptr(), header_bytes, 0))
    return bytes(buf)


@pytest.mark.parametrize("kind", ["coded", "lossy-normalised", "raw"])
def test_every_single_byte_corruption_is_detected(kind, decoder, encoder):
    good = payloads()[kind]  # written by `encoder`
    decode(good)
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x10
        with pytest.raises(nzdist.FormatError):
            decode(bytes(bad))


@pytest.mark.parametrize("kind", ["coded", "raw"])
def test_every_truncation_is_detected(kind):
    good = payloads()[kind]
    for n in range(len(good)):
        with pytest.raises(nzdist.FormatError, match="truncated|magic"):
            decode(good[:n])


def test_trailing_capacity_padding_is_ignored():
    good = payloads()["coded"]
    ct = nzdist.CompressedTensor.from_bytes(good + b"\x00" * 100)
    assert ct.nbytes == len(good)
    decode(good + b"\xff" * 33)


def test_wrong_version():
    bad = bytearray(payloads()["coded"])
    struct.pack_into("<H", bad, 4, 7)
    with pytest.raises(nzdist.FormatError, match="version 7"):
        decode(reseal(bad))


@pytest.mark.parametrize(
    "field,offset,fmt,value,message",
    [
        ("numel", 16, "<Q", 2**61, "shape does not match"),
        ("shape", 64, "<Q", 2**40, "absurd shape|shape does not match"),
        ("total_bytes", 40, "<Q", 2**50, "truncated"),
        ("dtype", 8, "<B", 9, "unknown dtype"),
        ("mode", 9, "<B", 5, "unknown mode"),
        ("chunk_elems", 24, "<I", 1000, "chunk"),
        ("num_chunks", 28, "<I", 2**31, "chunk count"),
        ("keep_bits", 10, "<B", 30, "mantissa"),
    ],
)
def test_absurd_header_values(field, offset, fmt, value, message):
    bad = bytearray(payloads()["coded"])
    struct.pack_into(fmt, bad, offset, value)
    with pytest.raises(nzdist.FormatError, match=message):
        decode(reseal(bad))


def test_not_a_payload():
    for junk in (b"", b"NZDT", b"hello world" * 10, bytes(64)):
        with pytest.raises(nzdist.FormatError):
            decode(junk)
    with pytest.raises(TypeError):
        nzdist.CompressedTensor.from_bytes(torch.zeros(10, dtype=torch.int32))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(min_size=0, max_size=600))
def test_fuzz_random_bytes(data):
    with pytest.raises(nzdist.FormatError):
        decode(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["coded", "lossy-normalised", "raw"]),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.integers(0, 10**6),
    reseal_header=st.booleans(),
)
def test_fuzz_mutated_payloads(kind, edits, cut, reseal_header):
    """Mutations either raise FormatError or (if they changed nothing) decode to the original values."""
    good = payloads()[kind]
    bad = bytearray(good)
    for pos, val in edits:
        bad[pos % len(bad)] = val
    bad = bad[: max(1, len(bad) - cut % 64)]
    if reseal_header and len(bad) >= 64:
        header_bytes = struct.unpack_from("<H", bad, 6)[0]
        if 64 <= header_bytes <= min(len(bad), 64 + 8 * 16):
            bad = bytearray(reseal(bad))
    try:
        out = decode(bytes(bad))
    except nzdist.FormatError:
        return
    assert torch.equal(int_view(out), int_view(decode(good)))
