"""`vmm run --watch/--trace/--backend/--max-instructions` as real processes: errors are one
line, and the trace file ends with its summary however the run ends (tests/test_trace_cli.py
has the `vmm trace` commands)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import GUESTS, ROOT
from vmm.kvm import Kvm
from vmm.v2e.backends import PatchedBackend

pytestmark = pytest.mark.kvm

PAYLOAD_INSTRUCTIONS = 264
PACKED_OUTPUT = b"loader: unpacking\npayload running\nchecksum d10ce5e0\n"


def vmm(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "vmm", *args], cwd=ROOT, capture_output=True, timeout=timeout)


def guest(name):
    return str(GUESTS / f"{name}.bin")


def records_of(path):
    """Every line parses as JSON; the summary is last."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records and records[-1]["type"] == "summary", f"last record: expected summary, got {records[-1:]}"
    assert [r["type"] for r in records].count("summary") == 1
    return records


def assert_one_line_error(result, status, text):
    stderr = result.stderr.decode()
    assert result.returncode == status, f"expected exit status {status}, got {result.returncode}: {stderr}"
    assert stderr.count("\n") == 1 and stderr.startswith("vmm: "), f"expected one line, got {stderr!r}"
    assert text in stderr, f"expected {text!r} in {stderr!r}"


def test_watched_run_keeps_the_guest_result_and_writes_the_trace(tmp_path):
    path = tmp_path / "packed.jsonl"
    result = vmm("run", guest("packed_long"), "--watch", "0x200000+0x1000", "--trace", str(path),
                 "--backend", "stock")
    assert (result.returncode, result.stdout) == (193, PACKED_OUTPUT), result.stderr
    assert result.stderr == (f"vmm: v2e: 1 event, {PAYLOAD_INSTRUCTIONS} instructions traced "
                             f"(stock backend); trace in {path}\n").encode()
    records = records_of(path)
    assert [r["type"] for r in records].count("insn") == PAYLOAD_INSTRUCTIONS
    assert (records[-1]["outcome"], records[-1]["exit_status"]) == ("test-exit", 193)


ELF_GUEST = str(GUESTS / "hello_elf64.elf")


@pytest.mark.parametrize("image, watch, watched, events", [
    # a symbol without a size: its page; with --watch on the same page, one range
    ([str(GUESTS / "smp.elf"), "--smp", "2"], ["--watch-symbol", "shared_code", "--watch", "0x101000"],
     [["0x101000", "0x102000"]], 50),
    # two functions in one page: one range, entered once (at _start, in the same page)
    ([ELF_GUEST], ["--watch-symbol", "puts", "--watch-symbol", "main64"], [["0x201000", "0x202000"]], 1),
    # a 16 KiB object across five pages: data only, never executed
    ([ELF_GUEST], ["--watch-symbol", "stack"], [["0x203000", "0x208000"]], 0),
])
def test_watch_symbol_watches_the_pages_of_elf_symbols(tmp_path, image, watch, watched, events):
    plain = vmm("run", *image)
    path = tmp_path / "symbol.jsonl"
    result = vmm("run", *image, *watch, "--trace", str(path))
    assert (result.returncode, result.stdout) == (plain.returncode, plain.stdout), result.stderr
    summary = records_of(path)[-1]
    assert (summary["watched"], summary["events"]) == (watched, events), summary


@pytest.mark.parametrize("watch, text", [
    (["0x200800"], "watch range '0x200800' (0x200800-0x201800) is not page aligned (4 KiB)"),
    (["0x200000-0x200000"], "watch range '0x200000-0x200000' is empty"),
    (["0x200000+0x2000", "0x201000"], "watched ranges 0x200000-0x202000 and 0x201000-0x202000 overlap"),
    (["0x7fff000+0x2000"], "watched range 0x7fff000-0x8001000 is outside guest memory (0x8000000 bytes)"),
    (["0x2000"], "watched range 0x2000-0x3000 overlaps the VMM's GDT and page tables at 0x1000-0x8000"),
    (["page"], "watch range 'page': expected GPA, GPA-END or GPA+LEN"),
])
def test_bad_watch_ranges_are_one_line_errors(watch, text):
    args = [item for spec in watch for item in ("--watch", spec)]
    assert_one_line_error(vmm("run", guest("packed_long"), *args), 2, text)


def test_trace_without_watch_is_an_error(tmp_path):
    assert_one_line_error(vmm("run", guest("packed_long"), "--trace", str(tmp_path / "t.jsonl")), 2,
                          "--trace needs at least one --watch range")


def test_patched_backend_on_an_unpatched_host_is_one_line():
    with Kvm() as kvm, kvm.create_vm() as vm:
        if PatchedBackend.available(vm):
            pytest.skip("this host's KVM carries the exec-trap patch")
    assert_one_line_error(vmm("run", guest("packed_long"), "--watch", "0x200000", "--backend", "patched"), 10,
                          "--backend patched: this host's KVM lacks the exec-trap patch")


def test_triple_fault_inside_the_trace_still_ends_with_the_summary(tmp_path):
    path = tmp_path / "fault.jsonl"
    result = vmm("run", guest("triple_fault"), "--watch", "0x100000", "--trace", str(path))
    assert result.returncode == 4, result.stderr
    records = records_of(path)
    assert records[-1]["outcome"] == "triple-fault"
    assert records[-2] == {"type": "leave", "event": 1, "reason": "run-ended", "rip": "0x100028",
                           "instructions": records[-1]["instructions"], "steps": records[-1]["steps"]}


def test_timeout_inside_a_budgeted_trace_ends_with_the_summary(tmp_path):
    path = tmp_path / "timeout.jsonl"
    result = vmm("run", guest("forever"), "--watch", "0x100000", "--trace", str(path), "--max-instructions", "40",
                 "--timeout", "0.5")
    assert result.returncode == 124, result.stderr
    records = records_of(path)
    assert [r["type"] for r in records].count("insn") == 40
    assert (records[-1]["outcome"], records[-1]["exit_status"], records[-1]["instructions"]) == ("timeout", 124, 40)


@pytest.mark.parametrize("signum, status, outcome", [(signal.SIGINT, 130, "interrupted"),
                                                     (signal.SIGTERM, 143, "interrupted")])
def test_signals_end_the_run_with_a_complete_trace(tmp_path, signum, status, outcome):
    path = tmp_path / "signal.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "vmm", "run", guest("forever"), "--watch", "0x100000",
                                "--trace", str(path), "--max-instructions", "20"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (path.exists() and '"type":"leave"' not in path.read_text() and
                   path.read_text().count('"type":"insn"') == 20):
            assert time.monotonic() < deadline, "the guest never reached the watched page"
            time.sleep(0.02)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    records = records_of(path)
    assert (records[-1]["outcome"], records[-1]["exit_status"]) == (outcome, status)
    assert records[-2]["type"] == "leave" and records[-2]["reason"] == "run-ended"
    assert process.returncode == status, stderr
