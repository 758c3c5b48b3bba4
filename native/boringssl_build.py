"""cffi build script for the BoringSSL binding (Debian's android-libboringssl-dev)."""
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef("")
ffibuilder.set_source("zeroserve.native._boringssl", "")

