"""How a run ends: an Outcome, and the constructors for the VMM's own ways of ending."""
from dataclasses import dataclass

from ..errors import (EXIT_GUEST_ASSERT, EXIT_INTERRUPTED, EXIT_KVM_ERROR, EXIT_OK, EXIT_TERMINATED,
                      EXIT_TIMEOUT)


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


def timed_out(seconds):
    return Outcome("timeout", EXIT_TIMEOUT, f"timeout: the guest ran for {seconds:g} s")


def interrupted(signame="SIGINT"):
    return Outcome("interrupted", EXIT_INTERRUPTED if signame == "SIGINT" else EXIT_TERMINATED,
                   f"interrupted by {signame}")


def guest_assert(message):
    return Outcome("guest-assert", EXIT_GUEST_ASSERT, message)


def kvm_error(message, full_report=None, vcpu_id=None):
    return Outcome("kvm-error", EXIT_KVM_ERROR, message, full_report, vcpu_id)
