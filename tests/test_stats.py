"""Exit statistics: exact counts per exit reason and I/O port, time split, table and JSON."""
import json

import pytest

from conftest import GUESTS
from test_cli import assert_one_line_error, vmm
from vmm.errors import EXIT_BAD_INPUT
from vmm.machine.stats import ExitStats

pytestmark = pytest.mark.kvm

KERNEL = str(GUESTS / "multiboot_long.elf")
KERNEL_STATUS = (0x21 << 1) | 1


def port_counts(summary):
    return {(row["port"], row["direction"]): row["count"] for row in summary["io_ports"]}


def test_stats_json_counts_every_exit(tmp_path):
    path = tmp_path / "stats.json"
    result = vmm("run", KERNEL, "--stats-json", str(path), "--timeout", "10")
    assert result.returncode == KERNEL_STATUS, result.stderr.decode()
    summary = json.loads(path.read_text())
    printed = len(result.stdout)
    # One LSR poll (THRE is always set) and one THR write per byte; fw_cfg: two selections,
    # a 4-byte signature and a 2-byte CPU count; one test-exit write.
    assert port_counts(summary) == {("0x3f8", "out"): printed, ("0x3fd", "in"): printed,
                                    ("0x510", "out"): 2, ("0x511", "in"): 6, ("0xf4", "out"): 1}
    assert summary["exits"]["IO"] == 2 * printed + 9
    assert summary["total_exits"] == sum(summary["exits"].values())
    assert summary["kvm_run_seconds"] > 0 and summary["vmm_seconds"] > 0
    assert [vcpu["id"] for vcpu in summary["vcpus"]] == [0]


def test_stats_table_on_stderr_leaves_stdout_alone():
    result = vmm("run", KERNEL, "--stats", "--smp", "2", "--timeout", "10")
    assert result.returncode == KERNEL_STATUS
    assert result.stdout.startswith(b"multiboot: in long mode\n")
    table = result.stderr.decode().splitlines()
    assert table[0] == "exit statistics"
    assert any(line.split() == ["0x511", "in", "6"] for line in table), table
    assert any(line.split()[:2] == ["IO", str(2 * len(result.stdout) + 9)] for line in table), table
    assert any(line.strip().startswith("time in KVM_RUN") for line in table)
    assert any(line.strip().startswith("time in the VMM") for line in table)


def test_unwritable_stats_path_fails_before_the_run(tmp_path):
    result = vmm("run", KERNEL, "--stats-json", str(tmp_path / "missing" / "stats.json"))
    assert_one_line_error(result, EXIT_BAD_INPUT, "cannot write statistics")
    assert result.stdout == b""


def test_collection_observes_the_loop_only_when_enabled(machine):
    vm = machine()
    loop = vm.loops[0]
    assert loop.observers == (), "no observer (and no timing) without statistics"
    stats = ExitStats()
    stats.attach(loop)
    assert len(loop.observers) == 1, f"expected one observer, got {loop.observers}"
    vm.load((GUESTS / "hello_long.bin").read_bytes(), mode="long")
    outcome = vm.run(timeout=10)
    assert outcome.kind == "halt"
    summary = stats.summary()
    assert summary["exits"] == {"IO": 2 * len(b"Hello from long mode!\n"), "HLT": 1}
