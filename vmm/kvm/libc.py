"""The few libc calls the VMM needs, through cffi in ABI mode (not through the fcntl module).

Pre-parsed at install like kvm_abi's layouts (see kvm_abi.layouts), when those are."""
import os

import kvm_abi
from kvm_abi.layouts import PREPARSED

from ..errors import KvmError

CDEF = """
int ioctl(int fd, unsigned long request, ...);
void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset);
int munmap(void *addr, size_t length);
"""


def _load():
    if PREPARSED:   # the pre-parsed module includes the pre-parsed layouts
        try:
            from ._libc_ffi import ffi as preparsed
            return preparsed
        except ImportError:
            pass
    import cffi
    parsed = cffi.FFI()
    if PREPARSED:   # a compiled FFI cannot be included: declare the layouts again
        parsed.cdef(kvm_abi.CDEF)
    else:
        parsed.include(kvm_abi.ffi)
    parsed.cdef(CDEF)
    return parsed


ffi = _load()
lib = ffi.dlopen(None)

PROT_READ, PROT_WRITE = 0x1, 0x2
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS, MAP_NORESERVE = 0x01, 0x02, 0x20, 0x4000
MAP_FAILED = ffi.cast("void *", -1)
_NO_ARG = ffi.cast("unsigned long", 0)


def ioctl(fd, request, arg=_NO_ARG):
    """ioctl(2) returning its non-negative result; raises KvmError naming the request.

    arg is a cdata pointer or an integer; variadic calls in ABI mode need cdata.
    """
    if not isinstance(arg, ffi.CData):
        arg = ffi.cast("unsigned long", arg)
    result = lib.ioctl(fd, request, arg)
    if result < 0:
        raise KvmError(kvm_abi.IOCTL_NAMES.get(request, hex(request)), ffi.errno)
    return result


def mmap(length, prot, flags, fd=-1, offset=0):
    """mmap(2) returning a void * cdata; raises OSError on failure."""
    addr = lib.mmap(ffi.NULL, length, prot, flags, fd, offset)
    if addr == MAP_FAILED:
        errno = ffi.errno
        raise OSError(errno, f"mmap of {length} bytes failed")
    return addr


def munmap(addr, length):
    if lib.munmap(addr, length) != 0:
        raise OSError(ffi.errno, "munmap failed")


class FileDescriptor:
    """Owns one file descriptor: close() closes it once; usable as a context manager."""

    def __init__(self, fd):
        self.fd = fd

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
