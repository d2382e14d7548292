"""Errors raised by the codec."""


class FormatError(ValueError):
    """A payload is malformed, truncated, corrupted, or of an unknown version.

    Raised before anything is written out of bounds; ``decompress(..., out=t)`` leaves ``t`` unspecified but
    never touches memory outside it.
    """
