"""The run loop's extension points (interceptions that stack and restore, observers, a driver
taking over the vCPU) and the machine's paused state."""
import io
import struct
import threading
import time

import pytest

import kvm_abi as abi
from vmm.kvm import install_kick_handler

from conftest import GUESTS

pytestmark = pytest.mark.kvm

HELLO = b"Hello from long mode!\n"
COUNTER = 0x5000
# 1: incq COUNTER; jmp 1b  (long mode, at 0x100000)
COUNTING_LOOP = bytes.fromhex("48ff042500500000" "ebf6")


def hello(machine):
    output = io.BytesIO()
    vm = machine(serial_output=output)
    vm.load((GUESTS / "hello_long.bin").read_bytes(), mode="long")
    return vm, output


def test_interceptions_stack_pass_on_and_restore(machine):
    vm, output = hello(machine)
    loop = vm.loops[0]
    table_handler = loop.handler(abi.KVM_EXIT_IO)
    seen = []

    def outer_handler(exit):
        seen.append("outer")
        outer.pass_on(exit)

    def inner_handler(exit):
        seen.append("inner")
        inner.pass_on(exit)

    inner = loop.intercept(abi.KVM_EXIT_IO, inner_handler)
    outer = loop.intercept(abi.KVM_EXIT_IO, outer_handler)
    assert loop.handler(abi.KVM_EXIT_IO) is outer_handler
    inner.restore()   # the one below goes first: the top one now passes on to the table
    assert loop.handler(abi.KVM_EXIT_IO) is outer_handler
    outcome = vm.run(timeout=10)
    assert outcome.kind == "halt", outcome
    assert output.getvalue() == HELLO, "an interception that passes on must not change the guest"
    assert seen == ["outer"] * (2 * len(HELLO)), f"expected only the outer handler, got {set(seen)}"
    outer.restore()
    assert loop.handler(abi.KVM_EXIT_IO) is table_handler


def test_observers_see_every_exit_with_its_time(machine):
    vm, output = hello(machine)
    observed = []
    observation = vm.loops[0].observe(lambda exit, start, end: observed.append((exit.reason, end - start)))
    outcome = vm.run(timeout=10)
    assert outcome.kind == "halt", outcome
    reasons = [reason for reason, _ in observed]
    assert reasons == [abi.KVM_EXIT_IO] * (2 * len(HELLO)) + [abi.KVM_EXIT_HLT], reasons
    assert all(ns >= 0 for _, ns in observed)
    observation.remove()
    assert vm.loops[0].observers == ()


class SingleStepper:
    """Single-steps `count` instructions, then gives the vCPU back."""

    needs_prepare = False

    def __init__(self, loop, count):
        self.loop = loop
        self.count = count
        self.steps = 0
        self.other_exits = []

    def on_exit(self, exit):
        if exit.reason != abi.KVM_EXIT_DEBUG:
            self.other_exits.append(exit.reason)
            self.loop.dispatch(exit)
            return
        self.steps += 1
        if self.steps == self.count:
            self.loop.vcpu.set_guest_debug()
            self.loop.release()


STEPS = 3 * 12   # hello_long's serial_puts: 12 instructions per character


def test_a_driver_gets_every_exit_until_it_releases(machine):
    vm, output = hello(machine)
    loop = vm.loops[0]
    drivers = []

    def take_over(exit):
        interception.pass_on(exit)
        interception.restore()
        driver = SingleStepper(loop, STEPS)
        drivers.append(driver)
        loop.vcpu.set_guest_debug(single_step=True)
        loop.drive(driver)

    interception = loop.intercept(abi.KVM_EXIT_IO, take_over)
    outcome = vm.run(timeout=10)
    assert outcome.kind == "halt", outcome
    assert output.getvalue() == HELLO
    driver, = drivers
    assert loop.driver is None, "the driver released the vCPU"
    assert driver.steps == STEPS, f"expected the driver to see {STEPS} steps, got {driver.steps}"
    # Three characters' worth of steps: each character is one LSR read and one THR write.
    assert driver.other_exits == [abi.KVM_EXIT_IO] * 6, driver.other_exits
    with pytest.raises(RuntimeError, match="already driven"):
        loop.drive(driver)
        loop.drive(driver)


def test_pause_parks_every_vcpu_until_resume(machine):
    install_kick_handler()
    vm = machine(mem_size=8 << 20)
    vm.load(COUNTING_LOOP, mode="long")

    def counter():
        return struct.unpack("<Q", vm.memory.read(COUNTER, 8))[0]

    samples = []

    def analyst():
        time.sleep(0.2)
        with vm.pause() as pause:
            assert pause is not None
            first = counter()
            time.sleep(0.2)
            samples.append((first, counter()))
        time.sleep(0.2)
        samples.append(counter())
        vm.stop(vm_outcome())

    worker = threading.Thread(target=analyst)
    worker.start()
    outcome = vm.run(timeout=20)
    worker.join()
    assert outcome.kind == "done", outcome
    (paused_first, paused_last), after = samples
    assert paused_first == paused_last, f"the counter moved while paused: {paused_first} -> {paused_last}"
    assert after > paused_last, f"the counter did not move after resume: {paused_last} -> {after}"


def test_pause_of_a_stopped_machine_is_refused(machine):
    vm = machine(mem_size=8 << 20)
    vm.load(COUNTING_LOOP, mode="long")
    vm.stop(vm_outcome())
    assert vm.pause() is None


def vm_outcome():
    from vmm.machine import Outcome
    return Outcome("done", 0, "the test stopped the guest")
