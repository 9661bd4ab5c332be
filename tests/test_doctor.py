"""`vmm doctor` reports this host's real facts: checked here against /sys and /proc."""
import json
import os

import pytest

import kvm_abi as abi
from vmm.doctor import _exec_trap_check

from test_cli import vmm

pytestmark = pytest.mark.kvm


def doctor_json(env=None):
    result = vmm("doctor", "--json", env=env)
    return result, json.loads(result.stdout)


def host_virt_flags():
    flags = set()
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return sorted(flags & {"vmx", "svm"})


def host_cpu_vendor():
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    return None


def test_facts_match_sys_and_proc():
    result, report = doctor_json()
    assert result.returncode == 0, result.stdout.decode()
    facts = report["facts"]
    kvm_modules = sorted(name for name in os.listdir("/sys/module") if name.startswith("kvm_"))
    assert facts["kvm_modules"] == kvm_modules
    assert facts["api_version"] == 12
    assert facts["cpu_vendor"] == host_cpu_vendor()
    assert facts["virt_flags"] == host_virt_flags()
    checks = {check["name"]: check for check in report["checks"]}
    vendor = [name for name in kvm_modules if name in ("kvm_intel", "kvm_amd")]
    assert checks["module"]["status"] == ("PASS" if vendor else "WARN")
    assert (vendor or kvm_modules)[0] in checks["module"]["detail"]
    assert checks["cpu"]["status"] == ("PASS" if host_virt_flags() else "WARN")
    assert checks["capabilities"]["status"] == "PASS"
    assert checks["vm"]["status"] == "PASS"
    assert checks["v2e-patch"]["status"] == (
        "PASS" if facts["exec_trap_features"] & abi.KVM_EXEC_TRAP_FEATURE_NX else "WARN")
    for module, parameter in (("kvm_intel", "ept"), ("kvm_amd", "npt")):
        path = f"/sys/module/{module}/parameters/{parameter}"
        if os.path.exists(path):
            assert facts[parameter] == open(path).read().strip()


def test_text_lines_are_pass_warn_or_fail():
    result = vmm("doctor")
    lines = result.stdout.decode().splitlines()
    assert result.returncode == 0
    assert lines and all(line.split()[0] in ("PASS", "WARN", "FAIL") for line in lines), lines
    assert any(line.split()[:2] == ["PASS", "api-version"] for line in lines)


@pytest.mark.parametrize("device, failing", [("/nonexistent/kvm", "device"), ("/dev/null", "open")])
def test_unusable_device_fails_with_the_fix(device, failing):
    result, report = doctor_json(env={"VMM_KVM_DEVICE": device})
    assert result.returncode == 1
    assert report["ok"] is False
    failed = [check["name"] for check in report["checks"] if check["status"] == "FAIL"]
    assert failed == [failing]


def test_permission_denied_names_the_fix(monkeypatch):
    from vmm import doctor
    from vmm.errors import KvmUnavailable

    def refuse(path):
        raise KvmUnavailable(f"permission denied opening {path}: run as root or join the 'kvm' group")

    monkeypatch.setattr(doctor, "Kvm", refuse)
    checks, _ = doctor.diagnose("/dev/kvm")
    opened = [check for check in checks if check.name == "open"]
    assert [check.status for check in opened] == ["FAIL"]
    assert "usermod -aG kvm" in opened[0].detail and 'GROUP="kvm", MODE="0660"' in opened[0].detail


@pytest.mark.parametrize("features, status, words", [
    (0, "WARN", "not loaded"),
    (abi.KVM_EXEC_TRAP_FIRST_ABI, "WARN", "withdrawn first ABI"),
    (abi.KVM_EXEC_TRAP_FEATURE_EMULATOR, "WARN", "without NX"),
    (abi.KVM_EXEC_TRAP_FEATURE_NX | abi.KVM_EXEC_TRAP_FEATURE_EMULATOR, "PASS", "features NX, EMULATOR"),
    (abi.KVM_EXEC_TRAP_FEATURE_NX | 1 << 9, "PASS", "features NX, unknown 0x200"),
])
def test_patch_line_names_the_reported_features(features, status, words):
    check = _exec_trap_check(features)
    assert (check.name, check.status) == ("v2e-patch", status), check
    assert words in check.detail, f"{words!r} not in {check.detail!r}"
