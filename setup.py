"""The compiled parts of edgegw: the wasm fast path (edgegw/wasm/_fastcall.c) and the
common case of a request's filter chain (edgegw/wasm/_phase*.c).

Everything else is in pyproject.toml; setuptools reads C extensions only from here.
"""

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Werror", "-Wno-deprecated-declarations"]

setup(
    ext_modules=[
        Extension("edgegw.wasm._fastcall", ["edgegw/wasm/_fastcall.c"], extra_compile_args=FLAGS),
        Extension(
            "edgegw.wasm._phase",
            ["edgegw/wasm/_phase.c", "edgegw/wasm/_phase_types.c", "edgegw/wasm/_phase_chain.c"],
            depends=["edgegw/wasm/_phase.h"],
            extra_compile_args=FLAGS,
        ),
    ]
)
