"""cffi build script for the eBPF VM and the scripts' core helpers, one module so helpers reach the cage.

The VM is native/vm (declarations in vm/vm.cdef.h); the request context and
the core helpers scripts call are native/script (script/script.cdef.h); the
ratelimit plugin's shared bucket table and helpers are native/ratelimit
(ratelimit/ratelimit.cdef.h); the sigv4 plugin's signing and helpers are
native/sigv4 (sigv4/sigv4.cdef.h); the HTTP/1.1 fast path is native/fast (fast/fast.cdef.h);
the HTTP/2 glue over libnghttp2 is native/h2 (h2/h2.cdef.h); workers tune libc's allocator
through `mallopt` (MALLOC_CDEF).
They link BoringSSL's libcrypto for hashes, HMAC and randomness, and libssl for the fast path's TLS.
"""
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
VM_DIR = HERE / "vm"
SCRIPT_DIR = HERE / "script"
SIGV4_DIR = HERE / "sigv4"
RATELIMIT_DIR = HERE / "ratelimit"
FAST_DIR = HERE / "fast"
H2_DIR = HERE / "h2"
BORINGSSL_LIB = "/usr/lib/x86_64-linux-gnu/android"
BORINGSSL_INCLUDE = "/usr/include/android"

MALLOC_CDEF = """
#define M_TRIM_THRESHOLD ...
#define M_TOP_PAD ...
#define M_MMAP_THRESHOLD ...
int mallopt(int param, int value);
"""

ffibuilder = FFI()
ffibuilder.cdef(MALLOC_CDEF + (VM_DIR / "vm.cdef.h").read_text() + (SCRIPT_DIR / "script.cdef.h").read_text()
               + (RATELIMIT_DIR / "ratelimit.cdef.h").read_text() + (SIGV4_DIR / "sigv4.cdef.h").read_text()
               + (FAST_DIR / "fast.cdef.h").read_text()
               + (H2_DIR / "h2.cdef.h").read_text())
ffibuilder.set_source(
    "zeroserve.native._zsvm",
    '#include "include/zsvm.h"\n#include "zsscript.h"\n#include "zschain.h"\n#include "zsratelimit.h"\n'
    '#include "sigv4.h"\n#include "sigv4_helpers.h"\n#include "zsfast.h"\n#include "zsh2.h"\n#include <malloc.h>\n',
    sources=sorted(str(p.relative_to(HERE.parent)) for d in (VM_DIR, SCRIPT_DIR, RATELIMIT_DIR, SIGV4_DIR, FAST_DIR, H2_DIR) for p in d.glob("*.c")),
    include_dirs=[str(VM_DIR), str(SCRIPT_DIR), str(RATELIMIT_DIR), str(SIGV4_DIR), str(FAST_DIR), str(H2_DIR), BORINGSSL_INCLUDE],
    library_dirs=[BORINGSSL_LIB],
    runtime_library_dirs=[BORINGSSL_LIB],
    extra_link_args=["-l:libssl.so.0", "-l:libcrypto.so.0", "-lnghttp2"],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

