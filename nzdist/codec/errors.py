"""Errors raised by the codec."""


class FormatError(ValueError):
    """A payload is malformed, truncated, corrupted, or of an unknown version.

    Raised before anything is written out of bounds; ``decompress(..., out=t)`` leaves ``t`` unspecified but
    never touches memory outside it.
    """


# The decoders' error bits (csrc/validate.h: Err), in words; the bit values are the extension's (_C.ERROR_BITS).
ERROR_TEXT = {
    "header": "malformed header",
    "mismatch": "header disagrees with the destination's dtype/size",
    "index": "normaliser section or chunk index out of bounds",
    "chunk": "chunk layout inconsistent",
    "table": "bad frequency table",
    "stream": "entropy-coded stream corrupted",
    "norm": "block normaliser out of range",
    "crc": "checksum mismatch",
    "slot": "all-gather slot header corrupt",
    "overflow": "slot marked overflow where the ranks agreed it fits",
}


def describe_error_word(word: int) -> str:
    """The error bits of one decode error word, in words (``_C.ERROR_BITS`` gives their values)."""
    from .. import _C

    names = [text for name, text in ERROR_TEXT.items() if word & _C.ERROR_BITS[name]]
    return ", ".join(names) or f"error bits {word:#x}"
