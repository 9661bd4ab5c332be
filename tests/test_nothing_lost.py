"""Nothing is lost however a run ends: the serial output file holds every byte the
guest sent and the V2E trace file is valid JSON Lines with the summary last, when
the guest triple-faults, when --timeout fires, and on SIGINT or SIGTERM mid-run.
Each case is a real `python -m vmm run` process."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import GUESTS, ROOT

pytestmark = pytest.mark.kvm

CODE_PAGE = "0x100000"
FLOOD_LINE = b"x" * 63 + b"\n"


def start_vmm(tmp_path, image, watched, *args):
    """Start `vmm run` on image with serial, stats and (when watched) trace files in tmp_path."""
    command = [sys.executable, "-m", "vmm", "run", str(GUESTS / f"{image}.bin"),
               "--serial", f"file:{tmp_path / 'serial.txt'}", "--stats-json", str(tmp_path / "stats.json"), *args]
    if watched:
        command += ["--watch", CODE_PAGE, "--trace", str(tmp_path / "trace.jsonl"), "--max-instructions", "200"]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(process, status):
    _, stderr = process.communicate(timeout=30)
    stderr = stderr.decode()
    assert process.returncode == status, f"expected exit status {status}, got {process.returncode}: {stderr}"
    assert "Traceback" not in stderr, f"expected no traceback, got {stderr}"


def com1_writes(tmp_path):
    stats = json.loads((tmp_path / "stats.json").read_text())
    return sum(entry["count"] for entry in stats["io_ports"] if entry["port"] == "0x3f8" and entry["direction"] == "out")


def check_flood_output(tmp_path):
    """The flood guest makes one exit per byte: the file must hold exactly as many."""
    data = (tmp_path / "serial.txt").read_bytes()
    sent = com1_writes(tmp_path)
    assert len(data) == sent, f"expected all {sent} bytes the guest sent in the serial file, got {len(data)}"
    lines = len(data) // len(FLOOD_LINE)
    assert data == FLOOD_LINE * lines + FLOOD_LINE[:len(data) % len(FLOOD_LINE)], "expected only the guest's lines"


def check_trace(tmp_path, outcome, status):
    lines = (tmp_path / "trace.jsonl").read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            pytest.fail(f"trace line {number} of {len(lines)} is not JSON ({error}): {line[:200]!r}")
    kinds = [record.get("type") for record in records]
    assert kinds[0] == "header" and kinds[-1] == "summary", f"expected the header first and the summary last, got {kinds}"
    assert kinds.count("summary") == 1, f"expected one summary record, got {kinds.count('summary')}"
    summary = records[-1]
    assert (summary["outcome"], summary["exit_status"]) == (outcome, status), (
        f"expected the summary to record {outcome!r} with status {status}, "
        f"got {summary['outcome']!r} with {summary['exit_status']}")


@pytest.mark.parametrize("watched", [False, True], ids=["plain", "watched"])
def test_triple_fault(tmp_path, watched):
    process = start_vmm(tmp_path, "triple_fault", watched)
    finish(process, 4)
    data = (tmp_path / "serial.txt").read_bytes()
    assert data == b"about to triple fault\n", f"expected the guest's whole line, got {data!r}"
    if watched:
        check_trace(tmp_path, "triple-fault", 4)


@pytest.mark.parametrize("watched", [False, True], ids=["plain", "watched"])
def test_timeout(tmp_path, watched):
    process = start_vmm(tmp_path, "hostile_port_flood", watched, "--timeout", "1")
    finish(process, 124)
    check_flood_output(tmp_path)
    if watched:
        check_trace(tmp_path, "timeout", 124)


@pytest.mark.parametrize("watched", [False, True], ids=["plain", "watched"])
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_run(tmp_path, watched, signum, status):
    process = start_vmm(tmp_path, "hostile_port_flood", watched)
    serial = tmp_path / "serial.txt"
    deadline = time.monotonic() + 20
    # Mid-run: the guest has sent a few lines (the file is flushed at each newline).
    while not (serial.exists() and serial.stat().st_size >= 4 * len(FLOOD_LINE)):
        assert process.poll() is None, f"expected the flood to run, it ended with {process.returncode}"
        assert time.monotonic() < deadline, "expected the flood guest to write within 20 s"
        time.sleep(0.02)
    os.kill(process.pid, signum)
    finish(process, status)
    check_flood_output(tmp_path)
    if watched:
        check_trace(tmp_path, "interrupted", status)
