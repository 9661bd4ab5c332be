"""Shared fixtures: KVM availability, machines with teardown, and running guest images."""
import io
import os
import pathlib
import subprocess

import pytest

from vmm.devices.serial import SerialInput
from vmm.errors import KvmUnavailable
from vmm.machine import Machine
from vmm.kvm import Kvm
from vmm.trace.reader import TraceReader

ROOT = pathlib.Path(__file__).resolve().parent.parent
GUESTS = ROOT / "guest_images"


def _kvm_problem():
    try:
        Kvm().close()
    except KvmUnavailable as error:
        return str(error)
    return None


KVM_PROBLEM = _kvm_problem()


def pytest_collection_modifyitems(config, items):
    """Tests marked `kvm` need /dev/kvm: skip them without it, or fail when VMM_REQUIRE_KVM=1."""
    if KVM_PROBLEM is None:
        return
    if os.environ.get("VMM_REQUIRE_KVM") == "1":
        raise pytest.UsageError(f"VMM_REQUIRE_KVM=1 but KVM is unusable: {KVM_PROBLEM}")
    skip = pytest.mark.skip(reason=f"needs /dev/kvm: {KVM_PROBLEM}")
    for item in items:
        if "kvm" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    config.addinivalue_line("markers", "kvm: the test runs guests on /dev/kvm")
    config.addinivalue_line("markers", "malformed_traces: the test writes invalid trace files on purpose")


@pytest.fixture(autouse=True)
def every_trace_validates(request):
    """After each test, every trace file it left in its tmp_path (a *.jsonl file starting with a
    header record, written by the engine or by `vmm run --trace`) must be a valid trace: each
    record as the schema defines it, the records consistent, the last line whole."""
    yield
    tmp_path = request.node.funcargs.get("tmp_path")
    if tmp_path is None or request.node.get_closest_marker("malformed_traces"):
        return
    for path in sorted(tmp_path.rglob("*.jsonl")):
        with open(path, "rb") as trace:
            if not trace.read(16) == b'{"type":"header"':
                continue
        reader = TraceReader(path)
        for _ in reader:
            pass
        assert reader.truncated is None, f"{path}: {reader.truncated}"


class GuestRun:
    """What one guest run produced."""

    def __init__(self, machine, outcome, output):
        self.machine = machine
        self.outcome = outcome
        self.output = output
        self.reports = [call.args for call in machine.ucalls.reports]

    def expect(self, kind, exit_status=None):
        """Assert how the run ended; the failure names the expected and the actual outcome."""
        actual = self.outcome
        detail = f"\n{actual.report}" if actual.report else ""
        assert actual.kind == kind, (
            f"expected the run to end with {kind!r}, got {actual.kind!r}: {actual.message}{detail}\n"
            f"serial output: {self.output!r}")
        if exit_status is not None:
            assert actual.exit_status == exit_status, (
                f"expected exit status {exit_status}, got {actual.exit_status} ({actual.message})")
        return self


@pytest.fixture(scope="session")
def built_guests(tmp_path_factory):
    """guest_images built from source into a fresh directory, once per session (with the
    intermediate files the build keeps in .obj/, such as the plain layers of packed samples)."""
    out = tmp_path_factory.mktemp("guest-build")
    subprocess.run(["make", "-s", "-C", str(GUESTS), f"OUT={out}"], check=True, capture_output=True)
    return out


@pytest.fixture
def machine():
    """A Machine factory; every machine it made is closed at teardown."""
    made = []

    def make(**kwargs):
        kwargs.setdefault("serial_output", io.BytesIO())
        made.append(Machine(**kwargs))
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.fixture
def run_guest(machine):
    """Boot guest_images/NAME.bin in MODE and return a GuestRun.

    A guest assertion reported through the ucall port fails the test with the
    guest's message.
    """
    def run(name, mode, timeout=10.0, serial_input=None, allow_assert=False, **machine_kwargs):
        output = io.BytesIO()
        source = SerialInput(io.BytesIO(serial_input)) if serial_input is not None else None
        vm = machine(serial_output=output, serial_input=source, **machine_kwargs)
        vm.load((GUESTS / f"{name}.bin").read_bytes(), mode=mode)
        outcome = vm.run(timeout=timeout)
        if outcome.kind == "guest-assert" and not allow_assert:
            pytest.fail(f"{name}: {outcome.message}")
        return GuestRun(vm, outcome, output.getvalue())

    return run
