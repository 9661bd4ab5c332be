"""SMP: application processors come up through INIT/SIPI from the in-kernel LAPIC,
every CPU reports its APIC id, and any ending stops all vCPU threads."""
import threading

import pytest

import kvm_abi
from conftest import GUESTS
from test_cli import assert_one_line_error, vmm
from vmm.errors import EXIT_BAD_INPUT

pytestmark = pytest.mark.kvm

SMP_STATUS = (0x10 << 1) | 1


def smp_output(cpus):
    lines = [b"smp: fw_cfg reports %d" % cpus]
    lines += [b"cpu with apic id %d online" % apic_id for apic_id in range(cpus)]
    lines.append(b"smp: all %d cpus reported" % cpus)
    return b"\n".join(lines) + b"\n"


@pytest.mark.parametrize("cpus", [1, 2, 4])
def test_every_cpu_reports_its_apic_id(cpus):
    result = vmm("run", str(GUESTS / "smp.elf"), "--smp", str(cpus), "--timeout", "20")
    assert result.stdout == smp_output(cpus), result.stderr.decode()
    assert result.returncode == SMP_STATUS, f"expected {SMP_STATUS}, got {result.returncode}: {result.stderr}"


def test_application_processors_wait_for_sipi(machine):
    vm = machine(vcpus=3, machine_type="pc")
    states = [vcpu.get_mp_state() for vcpu in vm.vcpus]
    assert states == [kvm_abi.KVM_MP_STATE_RUNNABLE] + [kvm_abi.KVM_MP_STATE_UNINITIALIZED] * 2


@pytest.mark.parametrize("name, kind", [("forever", "timeout"), ("triple_fault", "triple-fault")])
def test_any_ending_stops_every_vcpu_thread(machine, name, kind):
    before = {thread.name for thread in threading.enumerate()}
    vm = machine(vcpus=4, machine_type="pc")
    vm.load((GUESTS / f"{name}.bin").read_bytes(), mode="long")
    outcome = vm.run(timeout=1.0)
    assert outcome.kind == kind, f"expected {kind}, got {outcome}"
    left = {thread.name for thread in threading.enumerate()} - before
    assert not left, f"vCPU threads still running: {left}"


@pytest.mark.parametrize("args, text", [
    (["guest_images/hello_long.bin", "--smp", "2"], "--smp needs --machine pc"),
    (["guest_images/smp.elf", "--smp", "0"], "vCPU count must be between 1 and 64"),
    (["guest_images/smp.elf", "--smp", "two"], "invalid vCPU count"),
])
def test_smp_option_errors(args, text):
    assert_one_line_error(vmm("run", *args), EXIT_BAD_INPUT, text)
