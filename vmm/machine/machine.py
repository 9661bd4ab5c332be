"""A machine: one VM with its RAM, devices, vCPUs and run loops."""
import contextlib
import functools
import threading
import time

import kvm_abi as abi
from ..devices.bus import MmioBus, PortBus, SerializedDevice
from ..devices import acpi_pm
from ..devices.debug_exit import DEFAULT_IOBASE, DEFAULT_IOSIZE, DebugExit, exit_status
from ..devices.serial import COM1_BASE, PORT_COUNT, Uart16550
from ..devices.ucall import UCALL_PORT, UcallPort
from ..errors import EXIT_KVM_ERROR, BadInput, VmmError
from ..kvm import Kvm, install_kick_handler, kick_handler_installed
from ..loaders import flat
from ..x86 import boot, cpuid
from ..x86.paging import PAGE_SIZE
from . import acpi, pc
from .memory import GuestMemory
from .outcome import (Outcome, guest_assert, interrupted, kvm_error, panicked, powered_off, reset, suspended,
                      timed_out)
from .pause import PauseGate
from .runloop import RunLoop

DEFAULT_MEM = 128 << 20
MAX_MEM = 3 << 30      # RAM stays below the 32-bit MMIO hole
PC_MIN_MEM = 1 << 20   # the PC's ACPI tables live in the BIOS area, below 1 MiB


class Terminated(BaseException):
    """Raised in the main thread by the CLI's SIGTERM handler."""


class _VcpuThread(threading.Thread):
    """A vCPU's thread, whose end is an Event rather than is_alive(): in CPython 3.11 an
    exception raised by a signal handler inside Thread.join(timeout) can mark a thread
    that is still running as stopped, and the machine would be closed under it."""

    def __init__(self, target, args, name):
        super().__init__(target=target, args=args, name=name)
        self.finished = threading.Event()

    def run(self):
        try:
            super().run()
        finally:
            self.finished.set()

    def running(self):
        return self.ident is not None and not self.finished.is_set()


class Machine:
    def __init__(self, mem_size=DEFAULT_MEM, serial_output=None, serial_input=None, vcpus=1,
                 kvm_path="/dev/kvm", machine_type="bare", hide_hypervisor=False):
        if machine_type not in pc.MACHINES:
            raise BadInput(f"unknown machine {machine_type!r}: choose one of {', '.join(pc.MACHINES)}")
        if not 0 < mem_size <= MAX_MEM or mem_size % PAGE_SIZE:
            raise BadInput(f"guest memory of {mem_size} bytes: must be a multiple of 4 KiB "
                           f"between 4 KiB and {MAX_MEM >> 30} GiB")
        if machine_type == "pc" and mem_size < PC_MIN_MEM:
            raise BadInput(f"guest memory of {mem_size} bytes: the pc machine needs at least 1 MiB")
        self.outcome = None
        self.hide_hypervisor = hide_hypervisor
        self._outcome_lock = threading.Lock()
        self._vcpu_threads = []   # while run() runs them
        # Held while vCPU threads start, and while memslots are replaced before they have: no
        # vCPU starts in the window.
        self._threads_lock = threading.RLock()
        self._emulation_failure_exits = 0   # holders of KVM_CAP_EXIT_ON_EMULATION_FAILURE
        self._resources = contextlib.ExitStack()
        try:
            self.kvm = self._resources.enter_context(Kvm(kvm_path))
            self.vm = self._resources.enter_context(self.kvm.create_vm())
            self.memory = GuestMemory(self.vm)
            self.memory.quiesce = self._vcpus_out_of_kvm_run
            self._resources.callback(self.memory.close)
            self.memory.add_ram(0, mem_size)
            self.machine_type = machine_type
            if machine_type == "pc":
                pc.create_chipset(self.vm)
            self.ports = PortBus()
            self.mmio = MmioBus()
            self.serial = Uart16550(serial_output, serial_input,
                                    pc.serial_irq(self.vm) if machine_type == "pc" else None)
            self._resources.callback(self.serial.flush)
            self._resources.callback(self.serial.close)
            self.ports.register(self.serial if vcpus == 1 else SerializedDevice(self.serial), COM1_BASE, PORT_COUNT)
            self.ports.register(DebugExit(self._test_exit), DEFAULT_IOBASE, DEFAULT_IOSIZE)
            self.ucalls = UcallPort(self.memory, self._guest_assert, self._guest_done, self._bad_ucall)
            self.ports.register(self.ucalls, UCALL_PORT, 4)
            self.firmware_areas = []    # what the VMM wrote that images must not cover
            self.acpi_rsdp = None
            self.pc_devices = None
            if machine_type == "pc":
                self.pc_devices = pc.add_devices(self.ports, self.memory, mem_size, vcpus,
                                                 self._reset, self._sleep, self._panic)
                self.firmware_areas = self.pc_devices.firmware_areas + pc.set_legacy_state(self.vm, self.memory)
                self.acpi_rsdp = acpi.RSDP_ADDR
            self.vcpus = []
            for vcpu_id in range(vcpus):
                self.vcpus.append(self._resources.enter_context(self.vm.create_vcpu(vcpu_id)))
            if machine_type == "pc":
                pc.hold_application_processors(self.vcpus)
            self.pause_gate = PauseGate(len(self.vcpus), lambda: self.outcome is not None)
            self.loops = [RunLoop(self, vcpu) for vcpu in self.vcpus]
        except BaseException:
            self._resources.close()
            raise

    # -- set-up --------------------------------------------------------------

    def load(self, image, mode="long", load_addr=None, entry=None, stack=None):
        """Load a flat image and put vCPU 0 in `mode` at its entry point."""
        if mode not in boot.MODES:
            raise BadInput(f"unknown mode {mode!r}: choose one of {', '.join(boot.MODES)}")
        load_addr = boot.DEFAULT_LOAD_ADDR[mode] if load_addr is None else load_addr
        entry = load_addr if entry is None else entry
        flat.load_flat(self.memory, image, load_addr, mode)
        if not self.memory.contains(entry):
            raise BadInput(f"entry point {entry:#x} is outside guest memory")
        self.setup_cpu(mode, entry, stack)

    def setup_cpu(self, mode, entry, stack=None, extra_regs=None):
        stack = boot.DEFAULT_STACK[mode] if stack is None else stack
        supported = self.kvm.supported_cpuid()
        for vcpu in self.vcpus:
            vcpu.set_cpuid(cpuid.cpuid_for_vcpu(supported, vcpu.id, len(self.vcpus), self.hide_hypervisor))
        boot.setup_mode(self.vcpus[0], self.memory, mode, entry, stack, extra_regs)

    # -- running -------------------------------------------------------------

    def stop(self, outcome):
        """Record how the run ends (the first outcome wins) and kick every vCPU out of KVM_RUN."""
        with self._outcome_lock:
            if self.outcome is None:
                self.outcome = outcome
        for vcpu in self.vcpus:
            vcpu.kick()

    @functools.cached_property
    def cpu_vendor(self):
        """'intel' or 'amd': the vCPUs' instruction set, as KVM's CPUID has it."""
        return cpuid.vendor(self.kvm.supported_cpuid())

    def pause(self, exempt=None):
        """Park every vCPU (but the one with id `exempt`) between two KVM_RUNs; returns a Pause
        once they are all parked (resume() it, or use it as a context manager), or None when the
        machine stops first. Asked on a vCPU's thread, a pause that holds that vCPU returns
        once the others are parked, and the vCPU parks when its run loop next turns."""
        caller = next((vcpu.id for vcpu in self.vcpus if vcpu.runs_on_current_thread()), None)
        return self.pause_gate.pause(exempt, lambda vcpu_id: self.vcpus[vcpu_id].kick(), caller)

    def run(self, timeout=None):
        """Run every vCPU on its own thread until an outcome; the caller's thread keeps the clock.
        A guest that suspends to RAM (ACPI S3) sleeps here until its wake-up, then resumes."""
        if threading.current_thread() is threading.main_thread():
            install_kick_handler()
        elif not kick_handler_installed():
            raise VmmError("Machine.run() off the main thread needs vmm.kvm.install_kick_handler() "
                           "called on the main thread first (timeouts must be able to interrupt KVM_RUN)")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._run_vcpus(deadline, timeout)
            if self.outcome.kind != "suspend" or not self._sleep_until_wake(deadline, timeout):
                return self.outcome
            self._resume()
            if self.outcome is not None:
                return self.outcome

    def hold_emulation_failure_exits(self):
        """Have KVM exit on an emulation failure at every CPL (a stock-backend trap is one):
        without KVM_CAP_EXIT_ON_EMULATION_FAILURE it exits only at CPL 0, and at CPL 3 queues
        #UD for the guest instead. False when the host lacks the capability."""
        if not self.vm.check_extension(abi.KVM_CAP_EXIT_ON_EMULATION_FAILURE):
            return False
        if self._emulation_failure_exits == 0:
            self.vm.enable_cap(abi.KVM_CAP_EXIT_ON_EMULATION_FAILURE, 1)
        self._emulation_failure_exits += 1
        return True

    def release_emulation_failure_exits(self):
        self._emulation_failure_exits -= 1
        if self._emulation_failure_exits == 0:
            self.vm.enable_cap(abi.KVM_CAP_EXIT_ON_EMULATION_FAILURE, 0)

    @property
    def emulation_failures_exit(self):
        """Whether an emulation failure above CPL 0 exits to the VMM (the guest's own is then
        the VMM's to deliver as the #UD KVM would have queued: RunLoop does)."""
        return self._emulation_failure_exits > 0

    @contextlib.contextmanager
    def _vcpus_out_of_kvm_run(self):
        """While the vCPU threads run: every vCPU but the caller's is parked outside KVM_RUN
        (GuestMemory.quiesce: its memslots are being replaced)."""
        with self._threads_lock:
            if not self._vcpu_threads:
                yield   # the lock keeps run() from starting vCPU threads meanwhile
                return
        # Every vCPU thread has started: each parks before its next KVM_RUN while the pause holds.
        pause = self.pause()
        try:
            yield
        finally:
            if pause is not None:
                pause.resume()

    def _run_vcpus(self, deadline, timeout):
        errors = []
        threads = [_VcpuThread(self._run_vcpu, (loop, errors), f"vcpu{loop.vcpu.id}") for loop in self.loops]
        try:
            with self._threads_lock:
                self._vcpu_threads = threads
                for thread in threads:
                    thread.start()
            while any(thread.running() for thread in threads):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self.stop(timed_out(timeout))
                    break
                threads[0].finished.wait(0.05 if remaining is None else min(0.05, remaining))
                if self.outcome is not None:
                    break
        except KeyboardInterrupt:
            self.stop(interrupted("SIGINT"))
        except Terminated:
            self.stop(interrupted("SIGTERM"))
        finally:
            self._join_vcpus(threads)
            with self._threads_lock:
                self._vcpu_threads = []
        if errors:
            raise errors[0]

    def _sleep_until_wake(self, deadline, timeout):
        """Sleep in S3 until the RTC alarm (when the guest enabled it as a wake-up event);
        False when the run ends first (timeout, signal)."""
        wake_at = None
        power = self.pc_devices.power
        if power.enable & acpi_pm.RTC_EN:
            wake_at = self.pc_devices.rtc.next_alarm()
        try:
            while wake_at is None or time.time() < wake_at:
                if deadline is not None and time.monotonic() >= deadline:
                    self.outcome = timed_out(timeout)
                    return False
                time.sleep(0.01)
        except KeyboardInterrupt:
            self.outcome = interrupted("SIGINT")
            return False
        except Terminated:
            self.outcome = interrupted("SIGTERM")
            return False
        power.woke(acpi_pm.RTC_STS)
        return True

    def _resume(self):
        """Wake from S3 as firmware does: vCPU 0 starts in real mode at the FACS waking vector,
        the others wait for INIT/SIPI again. Without a waking vector firmware would boot
        afresh: the run ends as a reset."""
        vector = self.pc_devices.waking_vector(self.memory)
        if not vector:
            self.outcome = reset()
            return
        for vcpu in self.vcpus:
            vcpu.complete_pending_io()   # the sleep request's port write, before the state changes
        boot.setup_real_mode_at(self.vcpus[0], vector >> 4, vector & 0xF)
        pc.hold_application_processors(self.vcpus)
        with self._outcome_lock:
            self.outcome = None

    def _join_vcpus(self, threads):
        """Stop and join every vCPU thread; a second SIGINT or SIGTERM must not abandon them
        (they use guest memory and devices that close() releases)."""
        if self.outcome is None:
            self.stop(kvm_error("the run loop ended without an outcome"))
        while any(thread.running() for thread in threads):
            try:
                for thread in threads:
                    while thread.running():
                        self.stop(self.outcome)   # kick again: a kick can land between two KVM_RUNs
                        thread.finished.wait(0.05)
                    if thread.ident is not None:
                        thread.join()   # it has finished: only its return is left
            except (KeyboardInterrupt, Terminated):
                continue
        self.serial.flush()

    def _run_vcpu(self, loop, errors):
        try:
            loop.run()
        except VmmError as error:   # a KVM error, or an analysis that cannot go on (a dump failed)
            kind = "kvm-error" if error.exit_status == EXIT_KVM_ERROR else "error"
            self.stop(Outcome(kind, error.exit_status, f"vCPU {loop.vcpu.id}: {error}", vcpu_id=loop.vcpu.id))
        except BaseException as error:  # a VMM bug: stop the others, re-raise in the caller
            errors.append(error)
            self.stop(kvm_error(f"vCPU {loop.vcpu.id}: internal error: {error!r}"))

    # -- device callbacks ----------------------------------------------------

    def _test_exit(self, value):
        self.stop(Outcome("test-exit", exit_status(value), f"the guest wrote {value:#x} to the test-exit device"))

    def _guest_assert(self, call):
        self.stop(guest_assert(f"guest assertion failed at line {call.line}: {call.message} "
                               f"(expected {call.args[1]:#x}, got {call.args[2]:#x})"))

    def _guest_done(self, call):
        self.stop(Outcome("done", 0, "the guest reported done"))

    def _bad_ucall(self, why):
        self.stop(guest_assert(f"malformed ucall: {why}"))

    def _reset(self):
        self.stop(reset())

    def _panic(self):
        self.stop(panicked())

    def _sleep(self, state):
        self.stop(powered_off() if state == 5 else suspended())

    # -- lifetime ------------------------------------------------------------

    def close(self):
        self._resources.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
