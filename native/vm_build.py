"""cffi build script for the eBPF VM and the scripts' core helpers, one module so helpers reach the cage.

The VM is native/vm (declarations in vm/vm.cdef.h); the request context and
the core helpers scripts call are native/script (script/script.cdef.h). They
link BoringSSL's libcrypto for hashes, HMAC and randomness.
"""
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
VM_DIR = HERE / "vm"
SCRIPT_DIR = HERE / "script"
BORINGSSL_LIB = "/usr/lib/x86_64-linux-gnu/android"
BORINGSSL_INCLUDE = "/usr/include/android"

ffibuilder = FFI()
ffibuilder.cdef((VM_DIR / "vm.cdef.h").read_text() + (SCRIPT_DIR / "script.cdef.h").read_text())
ffibuilder.set_source(
    "zeroserve.native._zsvm",
    '#include "include/zsvm.h"\n#include "zsscript.h"\n',
    sources=sorted(str(p.relative_to(HERE.parent)) for d in (VM_DIR, SCRIPT_DIR) for p in d.glob("*.c")),
    include_dirs=[str(VM_DIR), str(SCRIPT_DIR), BORINGSSL_INCLUDE],
    library_dirs=[BORINGSSL_LIB],
    runtime_library_dirs=[BORINGSSL_LIB],
    extra_link_args=["-l:libcrypto.so.0"],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

