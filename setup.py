"""The native core: one extension module built from plain C11 sources (metadata lives in pyproject.toml)."""

from pathlib import Path

from setuptools import Extension, setup

CORE = Path("src/bitladder/_core")
SOURCES = ["binding.c", "codecs.c", "entropy.c", "dispatch.c", "kernels_scalar.c", "kernels_avx2.c", "kernels_avx512.c"]

setup(
    ext_modules=[
        Extension(
            "bitladder._native",
            sources=[str(CORE / name) for name in SOURCES],
            depends=[str(path) for path in CORE.glob("*.[hi]*")],
            # IEEE binary32 exactly as written: no contraction into FMA, no fast-math, so every path and compiler agree.
            extra_compile_args=["-std=c11", "-O3", "-g", "-ffp-contract=off", "-fno-fast-math", "-Wall", "-Wextra",
                                "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
        )
    ],
)
