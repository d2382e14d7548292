"""Build nzdist's C++ codec (always) and its CUDA kernels (only where nvcc and a GPU toolchain are present).

The extension takes raw pointers from Python and never includes torch headers, so one build works with any
torch >= 2.7 and survives torch upgrades.
"""

import importlib.util
import os
import platform
import shutil
import subprocess
from pathlib import Path

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

ROOT = Path(__file__).resolve().parent
CPU_SOURCES = ["csrc/bindings.cpp", *sorted(str(p) for p in Path("csrc/cpu").glob("*.cpp"))]


def cpu_flags() -> list[str]:
    flags = ["-O3", "-fno-strict-aliasing"]
    # Built from source on the machine that runs it, so tune for it (SSE4.2 CRC32C, AVX2 bit-plane loops);
    # NZDIST_PORTABLE=1 builds for the baseline ISA, e.g. for a wheel that travels.
    if os.environ.get("NZDIST_PORTABLE", "0") != "1" and platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
    return flags


def cuda_wanted() -> bool:
    """CUDA kernels build when nvcc exists and either a GPU is visible or NZDIST_CUDA=1 forces it."""
    if os.environ.get("NZDIST_CUDA") == "0" or not list(Path("csrc/cuda").glob("*.cu")):
        return False
    if shutil.which("nvcc") is None:
        return False
    if os.environ.get("NZDIST_CUDA") == "1":
        return True
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


# The codec's sources compile in parallel, one per core (NZDIST_BUILD_JOBS caps it).
ParallelCompile("NZDIST_BUILD_JOBS").install()

# Headers count as dependencies: setuptools otherwise rebuilds only when a .cpp changes, and a change to
# format.h or validate.h alone would leave a stale extension.
HEADERS = sorted(str(p) for p in Path("csrc").rglob("*.h"))
ext_modules = [
    Pybind11Extension(
        "nzdist._C", CPU_SOURCES, cxx_std=17, extra_compile_args=cpu_flags(), include_dirs=["csrc"], depends=HEADERS
    )
]


def load_cuda_build():
    """cuda_build.py (the csrc/cuda build logic, kept out of this file), loaded by its path: the PEP 517 backend
    (setuptools.build_meta, what pip uses) runs this file without putting its folder on sys.path, so a plain
    ``import cuda_build`` fails in ``pip install .``."""
    spec = importlib.util.spec_from_file_location("cuda_build", ROOT / "cuda_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cmdclass = {"build_ext": build_ext}
if cuda_wanted():
    cuda_build = load_cuda_build()
    ext_modules.append(cuda_build.cuda_extension())
    cmdclass["build_ext"] = cuda_build.CudaBuildExt

setup(ext_modules=ext_modules, cmdclass=cmdclass)
