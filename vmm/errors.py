"""The error types the VMM raises, and the process exit statuses they map to."""
import os

# Process exit statuses: a documented contract (README, "Exit status").
# The guest's test-exit device yields odd statuses, (value << 1) | 1, so the
# VMM's own outcomes are even.
EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_TRIPLE_FAULT = 4
EXIT_KVM_ERROR = 6
EXIT_GUEST_ASSERT = 8
EXIT_NO_KVM = 10
EXIT_OUTPUT = 12         # a dump or trace could not be written (disk full, directory gone)
EXIT_GDB_KILL = 14       # killed from gdb (kill)
EXIT_REBOOT = 16         # the guest reset the machine (a reboot)
EXIT_GUEST_PANIC = 18    # the guest kernel reported a panic (pvpanic)
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130   # SIGINT
EXIT_TERMINATED = 143    # SIGTERM


class VmmError(Exception):
    """An error the user sees as one line; carries the process exit status."""

    exit_status = EXIT_BAD_INPUT


class BadInput(VmmError):
    """A malformed argument, image or file."""


class OutputError(VmmError):
    """A dump or trace file could not be written."""

    exit_status = EXIT_OUTPUT


class KvmUnavailable(VmmError):
    """/dev/kvm is missing or cannot be opened."""

    exit_status = EXIT_NO_KVM


class KvmError(VmmError):
    """A KVM ioctl failed; names the ioctl and the errno."""

    exit_status = EXIT_KVM_ERROR

    def __init__(self, ioctl_name, errno):
        self.ioctl_name = ioctl_name
        self.errno = errno
        super().__init__(f"{ioctl_name} failed: {os.strerror(errno)} (errno {errno})")
