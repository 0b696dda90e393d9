"""The compiled parts of edgegw: the wasm fast path (edgegw/wasm/_fastcall.c), the
common case of a request's filter chain (edgegw/wasm/_phase*.c) and the shared data table
of all worker processes (edgegw/wasm/_shm.c).

Everything else is in pyproject.toml; setuptools reads C extensions only from here.
"""

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Werror", "-Wno-deprecated-declarations"]

setup(
    ext_modules=[
        Extension("edgegw.wasm._fastcall", ["edgegw/wasm/_fastcall.c"], extra_compile_args=FLAGS),
        # Shared data for all worker processes (process-shared robust mutex: -pthread).
        Extension(
            "edgegw.wasm._shm",
            ["edgegw/wasm/_shm.c"],
            extra_compile_args=[*FLAGS, "-pthread"],
            extra_link_args=["-pthread"],
        ),
        Extension(
            "edgegw.wasm._phase",
            ["edgegw/wasm/_phase.c", "edgegw/wasm/_phase_types.c", "edgegw/wasm/_phase_chain.c"],
            depends=["edgegw/wasm/_phase.h"],
            extra_compile_args=FLAGS,
        ),
    ]
)
