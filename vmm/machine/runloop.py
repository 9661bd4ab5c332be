"""The run loop: KVM_RUN, decode, dispatch through one table (the userspace twin of KVM's
kvm_vmx_exit_handlers), until the machine has an outcome.

    exit = vcpu.run()                    # a typed exit (vmm.kvm.exits)
    observers(exit, start_ns, end_ns)    # statistics
    driver.on_exit(exit)                 # while a component drives this vCPU, or else
    table[exit.reason](exit)             # a device bus, the VMM's own handlers, an interception

Its extension points each return a handle that undoes them:
- intercept(reason, handler): handle an exit reason instead of the table's handler (the
  Interception can pass an exit on to the handler below it);
- observe(observer): see every exit with the time KVM_RUN took;
- drive(driver): take over the vCPU: every exit goes to driver.on_exit() until release(),
  one KVM_RUN per turn of this loop (V2E single-steps this way); the driver hands the exits
  it does not consume back with dispatch(), and has its prepare() called before the next
  KVM_RUN while its needs_prepare is set.
Before each KVM_RUN the vCPU parks while a pause of the machine holds it.

With the C helper (vmm.fastpath), while nothing drives, observes or intercepts port I/O, the
port accesses the port bus lets a vCPU serve (PortBus.plan: a UART's transmitted bytes, its
constant status registers) are served in C, KVM_RUN after KVM_RUN; the first other exit
comes here as usual, after the bytes before it have reached their device.
"""
import time

import kvm_abi as abi

from .. import fastpath
from ..errors import EXIT_TRIPLE_FAULT
from ..x86.idt import UD_VECTOR
from ..x86.mode import privilege_level
from . import report
from .outcome import Outcome, halted, kvm_error


class Interception:
    """A handler put over an exit reason's handler; restore() takes it off again."""

    __slots__ = ("reason", "handler", "_loop")

    def __init__(self, loop, reason, handler):
        self.reason, self.handler, self._loop = reason, handler, loop

    def pass_on(self, exit):
        """Hand the exit to the handler this interception covers."""
        self._loop.handler_below(self)(exit)

    def restore(self):
        self._loop.remove_interception(self)


class Observation:
    __slots__ = ("observer", "_loop")

    def __init__(self, loop, observer):
        self.observer, self._loop = observer, loop

    def remove(self):
        self._loop.remove_observer(self)


class RunLoop:
    """Runs one vCPU until machine.outcome is set."""

    def __init__(self, machine, vcpu):
        self.machine = machine
        self.vcpu = vcpu
        self._table = {
            abi.KVM_EXIT_IO: machine.ports.handle,
            abi.KVM_EXIT_MMIO: machine.mmio.handle,
            abi.KVM_EXIT_HLT: self._halt,
            abi.KVM_EXIT_INTR: self._interrupted,
            abi.KVM_EXIT_SHUTDOWN: self._triple_fault,
        }
        self._handlers = dict(self._table)   # the table with every interception applied
        self._interceptions = {}             # reason -> [Interception], the last one on top
        self._observers = []
        self._driver = None
        self._port_plan = fastpath.PortPlan() if vcpu.can_run_ports() else None

    # -- extension points ----------------------------------------------------

    def intercept(self, reason, handler):
        interception = Interception(self, reason, handler)
        self._interceptions.setdefault(reason, []).append(interception)
        self._handlers[reason] = handler
        return interception

    def handler_below(self, interception):
        stack = self._interceptions[interception.reason]
        index = stack.index(interception)
        if index:
            return stack[index - 1].handler
        return self._table.get(interception.reason, self._unhandled)

    def remove_interception(self, interception):
        stack = self._interceptions.get(interception.reason, [])
        if interception not in stack:
            return
        stack.remove(interception)
        if stack:
            self._handlers[interception.reason] = stack[-1].handler
        elif interception.reason in self._table:
            self._handlers[interception.reason] = self._table[interception.reason]
        else:
            del self._handlers[interception.reason]

    def observe(self, observer):
        """observer(exit, start_ns, end_ns) after every KVM_RUN (perf_counter_ns times)."""
        observation = Observation(self, observer)
        self._observers.append(observation)
        return observation

    def remove_observer(self, observation):
        if observation in self._observers:
            self._observers.remove(observation)

    def drive(self, driver):
        """Give every exit to driver.on_exit() until release()."""
        if self._driver is not None:
            raise RuntimeError(f"vCPU {self.vcpu.id} is already driven by {self._driver!r}")
        self._driver = driver

    def release(self):
        self._driver = None

    @property
    def driver(self):
        return self._driver

    def dispatch(self, exit):
        """The table's (or an interception's) handling of an exit."""
        self._handlers.get(exit.reason, self._unhandled)(exit)

    def handler(self, reason):
        """What dispatch() calls for an exit reason now."""
        return self._handlers.get(reason, self._unhandled)

    @property
    def served_in_c(self):
        """Port exits the C helper served without this loop (0 without the helper)."""
        return 0 if self._port_plan is None else self._port_plan.handled

    @property
    def observers(self):
        return tuple(observation.observer for observation in self._observers)

    # -- the loop ------------------------------------------------------------

    def run(self):
        vcpu, machine, handlers, unhandled = self.vcpu, self.machine, self._handlers, self._unhandled
        gate, held, vcpu_id = machine.pause_gate, machine.pause_gate.held, vcpu.id
        plan, ports = self._port_plan, machine.ports
        bus_handles_io = self._table[abi.KVM_EXIT_IO]
        vcpu.bind_thread()
        while machine.outcome is None:
            if held[vcpu_id]:
                gate.park(vcpu_id)
                if machine.outcome is not None:
                    break
            driver = self._driver
            if driver is not None and driver.needs_prepare:
                driver.prepare()
                continue
            if self._observers:
                exit = self._observed_run()
            elif (plan is not None and driver is None and handlers.get(abi.KVM_EXIT_IO) is bus_handles_io
                  and ports.plan(plan)):
                try:
                    exit = vcpu.run_ports(plan)
                finally:
                    plan.drain()
                if exit is None:
                    continue
            else:
                exit = vcpu.run()
            driver = self._driver
            if driver is not None:
                driver.on_exit(exit)
            else:
                handlers.get(exit.reason, unhandled)(exit)

    def _observed_run(self):
        clock = time.perf_counter_ns
        start = clock()
        exit = self.vcpu.run()
        end = clock()
        for observation in self._observers:
            observation.observer(exit, start, end)
        return exit

    # -- the VMM's own handlers ----------------------------------------------

    def _queue_ud_above_cpl0(self):
        """The guest's own emulation failure above CPL 0, which exits only because a trap
        asked KVM to: queue the #UD KVM would have (True), or False at CPL 0."""
        vcpu = self.vcpu
        if privilege_level(vcpu.get_sregs(), vcpu.get_regs().rflags) == 0:
            return False
        events = vcpu.get_vcpu_events()
        events.exception.injected, events.exception.nr = 1, UD_VECTOR
        events.exception.has_error_code = events.exception.pending = 0
        vcpu.set_vcpu_events(events)
        return True

    def _halt(self, exit):
        self.machine.stop(halted())

    def _interrupted(self, exit):
        pass  # a kick: the loop condition sees the outcome (or the pause) that caused it

    def _triple_fault(self, exit):
        text = report.exit_report(exit, self.vcpu, self.machine.memory)
        self.machine.stop(Outcome("triple-fault", EXIT_TRIPLE_FAULT,
                                  f"vCPU {self.vcpu.id}: guest triple fault (SHUTDOWN)", text, self.vcpu.id))

    def _unhandled(self, exit):
        """FAIL_ENTRY, INTERNAL_ERROR, UNKNOWN, and every exit without a handler."""
        if (exit.reason == abi.KVM_EXIT_INTERNAL_ERROR and exit.suberror == abi.KVM_INTERNAL_ERROR_EMULATION
                and self.machine.emulation_failures_exit and self._queue_ud_above_cpl0()):
            return
        text = report.exit_report(exit, self.vcpu, self.machine.memory)
        self.machine.stop(kvm_error(f"vCPU {self.vcpu.id}: {report.describe(exit)}", text, self.vcpu.id))
