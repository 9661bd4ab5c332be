"""How a run ends: an Outcome, and the constructors for the VMM's own ways of ending."""
from dataclasses import dataclass

from ..errors import (EXIT_GUEST_ASSERT, EXIT_GUEST_PANIC, EXIT_INTERRUPTED, EXIT_KVM_ERROR, EXIT_OK,
                      EXIT_REBOOT, EXIT_TERMINATED, EXIT_TIMEOUT)


@dataclass(slots=True)
class Outcome:
    """kind, the process exit status, a one-line message, optionally a full report and the vCPU."""

    kind: str
    exit_status: int
    message: str
    report: str | None = None
    vcpu_id: int | None = None


def halted():
    return Outcome("halt", EXIT_OK, "the guest halted")


def powered_off():
    return Outcome("poweroff", EXIT_OK, "the guest powered off (ACPI S5)")


def reset():
    return Outcome("reboot", EXIT_REBOOT, "the guest reset the machine (reboot)")


def panicked():
    return Outcome("panic", EXIT_GUEST_PANIC, "the guest kernel panicked (pvpanic)")


def suspended():
    """Not an end: the machine sleeps in S3 until a wake-up event, then resumes."""
    return Outcome("suspend", EXIT_OK, "the guest suspended to RAM (ACPI S3)")


def timed_out(seconds):
    return Outcome("timeout", EXIT_TIMEOUT, f"timeout: the guest ran for {seconds:g} s")


def interrupted(signame="SIGINT"):
    return Outcome("interrupted", EXIT_INTERRUPTED if signame == "SIGINT" else EXIT_TERMINATED,
                   f"interrupted by {signame}")


def guest_assert(message):
    return Outcome("guest-assert", EXIT_GUEST_ASSERT, message)


def kvm_error(message, full_report=None, vcpu_id=None):
    return Outcome("kvm-error", EXIT_KVM_ERROR, message, full_report, vcpu_id)
