"""The uapi hunk of the kernel patch series against kvm_abi.

The include/uapi/linux/kvm.h part of each series in patches/ is rebased to
the path linux/kvm.h and applied with patch(1) to a copy of this machine's
/usr/include/linux/kvm.h.  A C probe compiled against the patched header
prints the exec-trap constants and layouts, which must equal what kvm_abi
(and its cffi FFI) declares.
"""
import pathlib
import re
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PATCHES = ROOT / "patches"
SYSTEM_HEADER = pathlib.Path("/usr/include/linux/kvm.h")
UAPI_PATH = "include/uapi/linux/kvm.h"

CC = shutil.which("gcc") or shutil.which("cc")
PATCH = shutil.which("patch")

CONSTANTS = ["KVM_EXIT_EMULATE", "KVM_CAP_EXEC_TRAP", "KVM_SET_EXEC_TRAP",
             "KVM_EXEC_TRAP_FEATURE_NX", "KVM_EXEC_TRAP_FEATURE_EMULATOR", "KVM_EXEC_TRAP_ATTR_NX",
             "KVM_EMULATE_EXIT_FLAG_EXECUTE", "KVM_EMULATE_EXIT_FLAG_GVA_VALID",
             "KVM_EMULATE_EXIT_FLAG_EVENT_DELIVERY"]
TRAP_FIELDS = ["address", "size", "attributes", "flags"]
EMULATE_FIELDS = ["flags", "gpa", "size", "gva"]

pytestmark = [
    pytest.mark.skipif(CC is None, reason="needs a C compiler for the probe"),
    pytest.mark.skipif(PATCH is None, reason="needs patch(1)"),
    pytest.mark.skipif(not SYSTEM_HEADER.exists(),
                       reason="needs /usr/include/linux/kvm.h (linux-libc-dev)"),
]

PROBE = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/kvm.h>

#define CONST(x) printf("%s %llu\n", #x, (unsigned long long)(x))
#define OFF(t, f) printf("offsetof %s %s %zu\n", #t, #f, offsetof(t, f))

int main(void)
{
	CONST(KVM_EXIT_EMULATE);
	CONST(KVM_CAP_EXEC_TRAP);
	CONST(KVM_SET_EXEC_TRAP);
	CONST(KVM_EXEC_TRAP_FEATURE_NX);
	CONST(KVM_EXEC_TRAP_FEATURE_EMULATOR);
	CONST(KVM_EXEC_TRAP_ATTR_NX);
	CONST(KVM_EMULATE_EXIT_FLAG_EXECUTE);
	CONST(KVM_EMULATE_EXIT_FLAG_GVA_VALID);
	CONST(KVM_EMULATE_EXIT_FLAG_EVENT_DELIVERY);
	printf("sizeof struct kvm_exec_trap %zu\n", sizeof(struct kvm_exec_trap));
	OFF(struct kvm_exec_trap, address);
	OFF(struct kvm_exec_trap, size);
	OFF(struct kvm_exec_trap, attributes);
	OFF(struct kvm_exec_trap, flags);
	OFF(struct kvm_run, emulate);
	OFF(struct kvm_run, emulate.flags);
	OFF(struct kvm_run, emulate.gpa);
	OFF(struct kvm_run, emulate.size);
	OFF(struct kvm_run, emulate.gva);
	printf("sizeof struct kvm_run %zu\n", sizeof(struct kvm_run));
	return 0;
}
"""


def uapi_hunks(series_dir):
    """The include/uapi/linux/kvm.h diffs of a series, rebased to linux/kvm.h."""
    out = []
    for patch in sorted(series_dir.glob("*.patch")):
        section = None
        for line in patch.read_text().splitlines(keepends=True):
            if line.startswith("diff --git "):
                section = [] if f" a/{UAPI_PATH} " in line else None
                if section is not None:
                    out.append(section)
                continue
            if line.startswith("-- \n") and section is not None:
                section = None  # format-patch signature
                continue
            if section is not None:
                section.append(line.replace(f"a/{UAPI_PATH}", "a/linux/kvm.h")
                               .replace(f"b/{UAPI_PATH}", "b/linux/kvm.h"))
    diff = "".join("".join(s) for s in out)
    # Only the ---/+++ header and the hunks are needed.
    return re.sub(r"^index .*\n", "", diff, flags=re.M)


def patched_header(tmp_path, series):
    series_dir = PATCHES / f"linux-{series}"
    if not any(series_dir.glob("*.patch")):
        pytest.skip(f"no patches in {series_dir}")
    diff = uapi_hunks(series_dir)
    assert diff, f"the {series} series does not touch {UAPI_PATH}"
    (tmp_path / "linux").mkdir()
    shutil.copy(SYSTEM_HEADER, tmp_path / "linux" / "kvm.h")
    (tmp_path / "uapi.diff").write_text(diff)
    return subprocess.run([PATCH, "-p1", "--batch", "--forward", "-i", "uapi.diff"],
                          cwd=tmp_path, capture_output=True, text=True)


def probe(tmp_path):
    (tmp_path / "probe.c").write_text(PROBE)
    subprocess.run([CC, "-Wall", "-Werror", "-I", str(tmp_path), "-o", "probe", "probe.c"],
                   cwd=tmp_path, check=True, capture_output=True, text=True)
    run = subprocess.run([str(tmp_path / "probe")], check=True, capture_output=True, text=True)
    values = {}
    for line in run.stdout.splitlines():
        key, value = line.rsplit(" ", 1)
        values[key] = int(value)
    return values


def expected_from_kvm_abi():
    kvm_abi = pytest.importorskip("kvm_abi")
    ffi = kvm_abi.ffi
    expected = {name: getattr(kvm_abi, name) for name in CONSTANTS}
    expected["sizeof struct kvm_exec_trap"] = ffi.sizeof("struct kvm_exec_trap")
    for field in TRAP_FIELDS:
        expected[f"offsetof struct kvm_exec_trap {field}"] = ffi.offsetof("struct kvm_exec_trap", field)
    expected["offsetof struct kvm_run emulate"] = ffi.offsetof("struct kvm_run", "emulate")
    for field in EMULATE_FIELDS:
        expected[f"offsetof struct kvm_run emulate.{field}"] = ffi.offsetof("struct kvm_run", "emulate", field)
    expected["sizeof struct kvm_run"] = ffi.sizeof("struct kvm_run")
    return expected


def check_series(tmp_path, series):
    expected = expected_from_kvm_abi()
    result = patched_header(tmp_path, series)
    assert result.returncode == 0, f"uapi hunk of {series} does not apply:\n{result.stdout}{result.stderr}"
    assert probe(tmp_path) == expected


def test_uapi_hunk_6_1_matches_kvm_abi(tmp_path):
    """The 6.1 series' uapi hunk must apply to the system header (linux-libc-dev 6.1)."""
    check_series(tmp_path, "6.1")


def test_uapi_hunk_6_12_matches_kvm_abi(tmp_path):
    """The 6.12 series' uapi hunk is checked too where it applies to the system header."""
    expected = expected_from_kvm_abi()
    result = patched_header(tmp_path, "6.12")
    if result.returncode != 0:
        pytest.skip("the 6.12 uapi hunk does not apply to this machine's "
                    f"{SYSTEM_HEADER} (its context is 6.12's header): "
                    + " ".join(result.stdout.split())[:300])
    assert probe(tmp_path) == expected


def test_uapi_hunk_rebase_is_complete():
    """Both series add the same exec-trap uapi lines, only the context differs."""
    added = {}
    for series in ("6.1", "6.12"):
        series_dir = PATCHES / f"linux-{series}"
        if not any(series_dir.glob("*.patch")):
            pytest.skip(f"no patches in {series_dir}")
        added[series] = [line for line in uapi_hunks(series_dir).splitlines()
                         if line.startswith("+") and not line.startswith("+++")]
    assert added["6.1"] == added["6.12"]
