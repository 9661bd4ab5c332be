"""The run loop: KVM_RUN, decode, dispatch through one table (the userspace twin of
KVM's kvm_vmx_exit_handlers), until the machine has an outcome."""
import kvm_abi as abi

from . import report
from .errors import (EXIT_GUEST_ASSERT, EXIT_INTERRUPTED, EXIT_KVM_ERROR, EXIT_OK,
                     EXIT_TERMINATED, EXIT_TIMEOUT, EXIT_TRIPLE_FAULT)


class Outcome:
    """How a run ended: kind, process exit status, one-line message, optional full report."""

    __slots__ = ("kind", "exit_status", "message", "report", "vcpu_id")

    def __init__(self, kind, exit_status, message, report=None, vcpu_id=None):
        self.kind, self.exit_status, self.message = kind, exit_status, message
        self.report, self.vcpu_id = report, vcpu_id

    def __repr__(self):
        return f"Outcome({self.kind!r}, exit_status={self.exit_status}, message={self.message!r})"


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


class RunLoop:
    """Runs one vCPU until machine.outcome is set."""

    def __init__(self, machine, vcpu):
        self.machine = machine
        self.vcpu = vcpu
        self.handlers = {
            abi.KVM_EXIT_IO: machine.ports.handle,
            abi.KVM_EXIT_MMIO: machine.mmio.handle,
            abi.KVM_EXIT_HLT: self._halt,
            abi.KVM_EXIT_INTR: self._interrupted,
            abi.KVM_EXIT_SHUTDOWN: self._triple_fault,
        }

    def run(self):
        vcpu, handlers, fatal, machine = self.vcpu, self.handlers, self._fatal, self.machine
        vcpu.bind_thread()
        while machine.outcome is None:
            exit = vcpu.run()
            handlers.get(exit.reason, fatal)(exit)

    def _halt(self, exit):
        self.machine.stop(halted())

    def _interrupted(self, exit):
        pass  # a kick: the loop condition sees the outcome that caused it

    def _triple_fault(self, exit):
        text = report.exit_report(exit, self.vcpu, self.machine.memory)
        self.machine.stop(Outcome("triple-fault", EXIT_TRIPLE_FAULT,
                                  f"vCPU {self.vcpu.id}: guest triple fault (SHUTDOWN)", text, self.vcpu.id))

    def _fatal(self, exit):
        """FAIL_ENTRY, INTERNAL_ERROR, UNKNOWN, and every exit without a handler."""
        text = report.exit_report(exit, self.vcpu, self.machine.memory)
        self.machine.stop(kvm_error(f"vCPU {self.vcpu.id}: {report.describe(exit)}", text, self.vcpu.id))
