"""Only the cffi modules live here; everything else is in pyproject.toml."""
from setuptools import setup

setup(
    cffi_modules=[
        "native/vm_build.py:ffibuilder",
        "native/boringssl_build.py:ffibuilder",
    ],
)
