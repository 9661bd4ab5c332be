"""The KVM userspace ABI for x86-64: layouts (cffi, ABI mode), constants, ioctl numbers.

Numbers and layouts only; the VMM in vmm/ holds all logic.
"""
from .constants import *  # noqa: F401,F403
from .ioctls import *  # noqa: F401,F403
from .constants import NEWER_THAN_6_1, NOT_IN_HEADER, PATCH_CONSTANTS
from .ioctls import IOCTL_NAMES
from .layouts import CDEF, PATCH_ONLY, ffi

__all__ = [name for name in dir() if name.startswith("KVM_")] + [
    "CDEF", "IOCTL_NAMES", "NEWER_THAN_6_1", "NOT_IN_HEADER", "PATCH_CONSTANTS", "PATCH_ONLY", "ffi"]
