"""The compiled part of edgegw: one C extension, ``edgegw.wasm._native``, built from the
files of edgegw/wasm/native/ with their one header (native.h lists what each holds): the
wasm fast path, the common case of a request's filter chain, and the shared data table of
all worker processes.

Everything else is in pyproject.toml; setuptools reads C extensions only from here.
"""

from pathlib import Path

from setuptools import Extension, setup

NATIVE = Path("edgegw/wasm/native")
FLAGS = ["-O2", "-Wall", "-Werror", "-Wno-deprecated-declarations"]

setup(
    ext_modules=[
        Extension(
            "edgegw.wasm._native",
            sorted(str(path) for path in NATIVE.glob("*.c")),
            depends=[str(NATIVE / "native.h")],
            # The shared data table's process-shared robust mutex and the epoch ticker's
            # thread: -pthread.
            extra_compile_args=[*FLAGS, "-pthread"],
            extra_link_args=["-pthread"],
        ),
    ]
)
