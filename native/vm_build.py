"""cffi build script for the eBPF VM: the C sources in native/vm, the declarations in vm.cdef.h."""
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
VM_DIR = HERE / "vm"

ffibuilder = FFI()
ffibuilder.cdef((VM_DIR / "vm.cdef.h").read_text())
ffibuilder.set_source(
    "zeroserve.native._zsvm",
    '#include "include/zsvm.h"\n',
    sources=sorted(str(p.relative_to(HERE.parent)) for p in VM_DIR.glob("*.c")),
    include_dirs=[str(VM_DIR)],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
)

