"""Build step for nzdist._cuda (csrc/cuda): nvcc compiles the .cu files, the host compiler the pybind11
binding, and the extension links the CUDA runtime statically (no libcudart lookup at import, no torch ABI).

setup.py uses it only when nvcc exists and a GPU is visible or NZDIST_CUDA=1; the CPU extension's build is
untouched. NZDIST_CUDA_ARCHS overrides the targets (default "80;90": A100 and H100 SASS, plus compute_90 PTX
so newer GPUs JIT the kernels).
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import subprocess
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, build_ext

ROOT = Path(__file__).resolve().parent
CUDA_DIR = Path("csrc") / "cuda"
EXT_NAME = "nzdist._cuda"


def nvcc_path() -> str:
    nvcc = os.environ.get("NVCC") or shutil.which("nvcc")
    if nvcc is None:
        raise RuntimeError("nvcc not found: install the CUDA toolkit or set NVCC, or build with NZDIST_CUDA=0")
    return nvcc


def cuda_lib_dir() -> Path:
    """The toolkit's library folder holding libcudart_static.a (CUDA_HOME, nvcc's install, /usr/local/cuda)."""
    homes = [
        os.environ.get("CUDA_HOME"),
        os.environ.get("CUDA_PATH"),
        str(Path(os.path.realpath(nvcc_path())).parent.parent),
        "/usr/local/cuda",
    ]
    for home in filter(None, homes):
        for sub in ("lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"):
            if (Path(home) / sub / "libcudart_static.a").exists():
                return Path(home) / sub
    raise RuntimeError("libcudart_static.a not found: set CUDA_HOME to the CUDA toolkit, or build with NZDIST_CUDA=0")


def gencode_flags() -> list[str]:
    archs = [a.strip() for a in os.environ.get("NZDIST_CUDA_ARCHS", "80;90").replace(",", ";").split(";") if a.strip()]
    flags = []
    for a in archs:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    flags += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]
    return flags


def nvcc_command(source: str, output: str) -> list[str]:
    # No --use_fast_math: the decoder's lossy path needs IEEE division/multiplication and denormals (bit-exact
    # with the CPU codec).
    return [
        nvcc_path(),
        "-std=c++17",
        "-O3",
        "-c",
        "-Xcompiler",
        "-fPIC",
        *gencode_flags(),
        "-Icsrc",
        "-o",
        output,
        source,
    ]


def cuda_extension() -> Pybind11Extension:
    lib = cuda_lib_dir()
    ext = Pybind11Extension(
        EXT_NAME,
        [str(CUDA_DIR / "bindings.cpp"), *sorted(str(p) for p in CUDA_DIR.glob("*.cu"))],
        cxx_std=17,
        include_dirs=["csrc"],
        library_dirs=[str(lib)],
        libraries=["cudart_static", "dl", "rt", "pthread"],
    )
    return ext


class CudaBuildExt(build_ext):
    """build_ext that hands .cu sources of nzdist._cuda to nvcc and links the objects into the extension."""

    def build_extension(self, ext):
        cu = [s for s in ext.sources if s.endswith(".cu")]
        if not cu:
            return super().build_extension(ext)
        build_dir = Path(self.build_temp) / "nzdist_cuda"
        build_dir.mkdir(parents=True, exist_ok=True)
        objects = [str((build_dir / (Path(src).stem + ".o")).resolve()) for src in cu]
        commands = [nvcc_command(src, obj) for src, obj in zip(cu, objects)]
        for cmd in commands:
            print(" ".join(cmd), flush=True)
        # One nvcc per .cu file at once (each compiles for every target architecture; minutes on few cores).
        jobs = int(os.environ.get("NZDIST_BUILD_JOBS") or 0) or os.cpu_count() or 1
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(jobs, len(commands))) as pool:
            for done in pool.map(lambda c: subprocess.run(c, cwd=ROOT), commands):
                if done.returncode != 0:
                    raise subprocess.CalledProcessError(done.returncode, done.args)
        ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
        ext.extra_objects = list(ext.extra_objects or []) + objects
        # setuptools relinks only when a source or `depends` entry is newer than the extension, and it does not
        # look at extra_objects: without this, a change to a .cu file alone recompiled but never relinked.
        ext.depends = list(ext.depends or []) + objects
        super().build_extension(ext)
