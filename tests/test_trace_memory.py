"""`vmm trace show|stats|diff` stream: their peak memory is the same on a trace ten times
longer (each is a real process; its peak RSS from wait4)."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from trace_samples import write_loop_trace

SHORT, LONG = 10_000, 100_000     # loop turns: 2 instructions each
SLACK = 4 << 20                   # what may differ between two runs of the same process


def peak_rss(*args):
    process = subprocess.Popen([sys.executable, "-m", "vmm", "trace", *map(str, args)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, process.stderr.read()
    return usage.ru_maxrss * 1024


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    directory = tmp_path_factory.mktemp("long")
    made = {}
    for turns in (SHORT, LONG):
        made[turns] = directory / f"loop-{turns}.jsonl"
        write_loop_trace(made[turns], turns)
    return made


@pytest.mark.parametrize("command", [["show"], ["show", "--max-instructions", "5"], ["stats"], ["diff"]],
                         ids=" ".join)
def test_memory_does_not_grow_with_the_trace(traces, command):
    def measure(path):
        return peak_rss(*command, path, *([path] if command == ["diff"] else []))
    short, long = measure(traces[SHORT]), measure(traces[LONG])
    assert long - short < SLACK, (f"peak RSS {short >> 10} KiB for {2 * SHORT} instructions, {long >> 10} KiB for "
                                  f"{2 * LONG}: it grows with the trace")
