"""cffi build script for the BoringSSL binding (Debian's android-libboringssl-dev)."""
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
CDEF_DIR = HERE / "boringssl"
INCLUDE_DIR = pathlib.Path("/usr/include/android")
LIB_DIR = pathlib.Path("/usr/lib/x86_64-linux-gnu/android")

# Declarations refer to types declared before them, so the order is fixed here
# rather than taken from the directory listing.
CDEF_FILES = (
    "base.h", "err.h", "mem.h", "bio.h", "evp.h", "digest.h", "cipher.h", "hmac.h",
    "rand.h", "x509.h", "pem.h", "hpke.h", "ssl.h", "callbacks.h",
)


def read_cdefs():
    """The cdef text of every native/boringssl/*.h, in CDEF_FILES order."""
    present = {p.name for p in CDEF_DIR.glob("*.h")}
    if present != set(CDEF_FILES):
        raise SystemExit(
            f"native/boringssl_build.py: CDEF_FILES lists {sorted(CDEF_FILES)} but native/boringssl/ "
            f"holds {sorted(present)}; list each cdef file exactly once"
        )
    return "\n".join((CDEF_DIR / name).read_text() for name in CDEF_FILES)


def check_boringssl_installed():
    """Stop the build with the package to install when the BoringSSL headers or libraries are missing."""
    missing = [str(p) for p in (INCLUDE_DIR / "openssl" / "ssl.h", LIB_DIR / "libssl.so", LIB_DIR / "libcrypto.so")
               if not p.exists()]
    if missing:
        raise SystemExit(
            f"BoringSSL not found ({', '.join(missing)} missing): install the Debian package "
            "android-libboringssl-dev (apt-get install android-libboringssl-dev), then rebuild"
        )


check_boringssl_installed()
CDEFS = read_cdefs()

ffibuilder = FFI()
ffibuilder.cdef(CDEFS)
ffibuilder.set_source(
    "zeroserve.native._boringssl",
    "#include <openssl/bio.h>\n"
    "#include <openssl/err.h>\n"
    "#include <openssl/evp.h>\n"
    "#include <openssl/hmac.h>\n"
    "#include <openssl/hpke.h>\n"
    "#include <openssl/mem.h>\n"
    "#include <openssl/pem.h>\n"
    "#include <openssl/rand.h>\n"
    "#include <openssl/ssl.h>\n"
    "#include <openssl/x509.h>\n",
    include_dirs=[str(INCLUDE_DIR)],
    library_dirs=[str(LIB_DIR)],
    libraries=["ssl", "crypto"],
    # The android libraries are not on the loader's default path.
    extra_link_args=[f"-Wl,-rpath,{LIB_DIR}"],
)
