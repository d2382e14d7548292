"""Compressed distributed checkpoints on top of torch.distributed.checkpoint (DCP).

>>> import nzdist.checkpoint as ckpt
>>> ckpt.save({"model": model.state_dict(), "optim": opt.state_dict()}, "run/step100")          # lossless
>>> ckpt.save(sd, "run/step200", previous="run/step100")                                          # delta
>>> ckpt.save(sd, "run/step300", codec=ckpt.Quantized())                                          # lossy, opt-in
>>> ckpt.load(sd, "run/step200")   # any world size; follows the delta chain
>>> ckpt.delete("run/step100")     # refused while run/step200 needs it

Format: format.py. Delta scheme: delta.py. Lossy scheme: lossy.py. Numbers: README.md.
"""

from .api import SaveResult, delete, dependents, load, manifest, save
from .files import CheckpointInUseError
from .format import CheckpointError, ChecksumError
from .lossy import Quantized
from .storage import NzdistStorageReader, NzdistStorageWriter

__all__ = [
    "save",
    "load",
    "delete",
    "dependents",
    "manifest",
    "SaveResult",
    "Quantized",
    "CheckpointError",
    "ChecksumError",
    "CheckpointInUseError",
    "NzdistStorageWriter",
    "NzdistStorageReader",
]
