"""The one compiled part of edgegw: the wasm fast path (edgegw/wasm/_fastcall.c).

Everything else is in pyproject.toml; setuptools reads C extensions only from here.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "edgegw.wasm._fastcall",
            ["edgegw/wasm/_fastcall.c"],
            extra_compile_args=["-O2", "-Wall", "-Werror", "-Wno-deprecated-declarations"],
        )
    ]
)
