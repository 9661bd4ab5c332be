"""The pauses the debugger takes: a vCPU's thread stopping the whole machine, itself included
(a breakpoint hit), and another thread letting one vCPU run alone while the others stay
parked (a step with scheduler locking)."""
import io
import struct
import threading
import time

import pytest

import kvm_abi as abi
from vmm.kvm import install_kick_handler
from vmm.machine import Outcome

from conftest import GUESTS

pytestmark = pytest.mark.kvm

HELLO = b"Hello from long mode!\n"
# Two vCPUs of a pc machine count, each in its own quadword: 1: incq (%rdi); jmp 1b.
COUNTING = bytes.fromhex("48ff07" "ebfb")
COUNTERS = 0x5000


def test_a_vcpu_pausing_the_machine_parks_itself_at_its_next_turn(machine):
    install_kick_handler()
    output = io.BytesIO()
    vm = machine(serial_output=output)
    vm.load((GUESTS / "hello_long.bin").read_bytes(), mode="long")
    loop = vm.loops[0]
    accesses = []
    taken = []
    granted = threading.Event()

    def count(exit):
        interception.pass_on(exit)
        accesses.append(exit.port)
        if len(accesses) == 2 and not taken:   # the first character's LSR read and THR write
            taken.append(vm.pause())   # on vCPU 0's thread, holding vCPU 0 too: must not wait for itself
            granted.set()

    interception = loop.intercept(abi.KVM_EXIT_IO, count)
    seen = []

    def debugger():
        assert granted.wait(10), "the vCPU's pause of the machine never returned"
        time.sleep(0.3)
        seen.append(len(accesses))
        taken[0].resume()

    thread = threading.Thread(target=debugger)
    thread.start()
    outcome = vm.run(timeout=20)
    thread.join()
    assert outcome.kind == "halt", outcome
    assert seen == [2], f"vCPU 0 should stay parked after its first character, made {seen} port accesses"
    assert output.getvalue() == HELLO and len(accesses) == 2 * len(HELLO)


def test_one_vcpu_runs_alone_under_a_pause_exempting_it(machine):
    install_kick_handler()
    vm = machine(mem_size=8 << 20, vcpus=2, machine_type="pc")
    vm.load(COUNTING, mode="long")
    vm.setup_cpu("long", 0x100000)
    second = vm.vcpus[1]
    regs, sregs = vm.vcpus[0].get_regs(), vm.vcpus[0].get_sregs()
    second.set_sregs(sregs)
    regs.rdi = COUNTERS + 8
    second.set_regs(regs)
    second.set_mp_state(abi.KVM_MP_STATE_RUNNABLE)
    first_regs = vm.vcpus[0].get_regs()
    first_regs.rdi = COUNTERS
    vm.vcpus[0].set_regs(first_regs)

    def counters():
        return struct.unpack("<QQ", vm.memory.read(COUNTERS, 16))

    samples = []

    def debugger():
        time.sleep(0.2)
        granted = []
        with vm.pause() as everyone:
            assert everyone is not None
            # From this thread, with every vCPU parked: granted without waiting for vCPU 1.
            asking = threading.Thread(target=lambda: granted.append(vm.pause(exempt=1)))
            asking.start()
            asking.join(10)
        samples.append(list(granted))
        if granted:
            before = counters()
            time.sleep(0.3)
            samples.append((before, counters()))
            granted[0].resume()
        vm.stop(Outcome("done", 0, "the test stopped the guest"))
        asking.join()

    thread = threading.Thread(target=debugger)
    thread.start()
    outcome = vm.run(timeout=20)
    thread.join()
    assert outcome.kind == "done", outcome
    assert samples[0] and samples[0][0] is not None, "a pause exempting a parked vCPU was not granted at once"
    (first_before, second_before), (first_after, second_after) = samples[1]
    assert first_after == first_before, f"vCPU 0 counted while held: {first_before} -> {first_after}"
    assert second_after > second_before, f"vCPU 1 did not run alone: {second_before} -> {second_after}"
