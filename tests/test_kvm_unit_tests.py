"""kvm-unit-tests' realmode and s3 tests, run the way its x86/run script runs them under
QEMU (`-kernel FILE`, isa-debug-exit at 0xf4): a test passes when the guest writes 0 to the
debug-exit port, i.e. with exit status 1.

kvm-unit-tests is neither packaged in Debian nor on PyPI, so a machine that only reaches
those cannot build it: set VMM_KVM_UNIT_TESTS to the x86 directory of a built tree
(`./configure && make` in a kvm-unit-tests checkout)."""
import os
import pathlib

import pytest

from test_cli import vmm

TESTS = pathlib.Path(os.environ.get("VMM_KVM_UNIT_TESTS", "/nonexistent"))
PASSED = 1   # the guest's exit(0) through isa-debug-exit: (0 << 1) | 1

pytestmark = [pytest.mark.kvm, pytest.mark.skipif(
    not (TESTS / "realmode.flat").exists(),
    reason="kvm-unit-tests binaries not found: it is packaged neither in Debian nor on PyPI; set "
           "VMM_KVM_UNIT_TESTS to the x86 directory of a built kvm-unit-tests tree")]


@pytest.mark.parametrize("name", ["realmode", "s3"])
def test_kvm_unit_test_passes(name):
    result = vmm("run", str(TESTS / f"{name}.flat"), "--timeout", "240", timeout=300)
    output = result.stdout.decode(errors="replace")
    assert "FAIL" not in output, output[-3000:]
    assert result.returncode == PASSED, f"expected status {PASSED}, got {result.returncode}: {output[-3000:]}"
