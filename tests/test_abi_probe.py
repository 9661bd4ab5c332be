"""kvm_abi against the system <linux/kvm.h>: every struct size, every declared field
offset and size, every constant and ioctl number, checked by a compiled C probe."""
import shutil
import subprocess

import pytest

import kvm_abi
from kvm_abi import ffi

CC = shutil.which("gcc") or shutil.which("cc")
pytestmark = pytest.mark.skipif(CC is None, reason="needs a C compiler for the probe")


def _structs():
    return sorted(f"struct {name}" for name in ffi.list_types()[1]
                  if f"struct {name}" not in kvm_abi.PATCH_ONLY)


def _fields(ctype, path=()):
    """(dotted member path, offset from the outer struct, cffi type) for every member, recursively."""
    for name, field in ctype.fields or ():
        member = path + (name,)
        yield member, field
        if field.type.kind in ("struct", "union") and field.type.fields:
            for sub, subfield in _fields(field.type, member):
                yield sub, subfield


def _layout_checks():
    """Expected values keyed by probe line name: sizes and offsets, from cffi."""
    expected = {}
    for struct in _structs():
        ctype = ffi.typeof(struct)
        expected[f"sizeof {struct}"] = ffi.sizeof(ctype)
        for member, field in _fields(ctype):
            dotted = ".".join(member)
            if f"{struct}.{member[0]}" in kvm_abi.PATCH_ONLY:
                continue
            expected[f"offsetof {struct} {dotted}"] = ffi.offsetof(struct, *member)
            if field.type.kind != "array" or field.type.length is not None:
                expected[f"sizeof {struct} {dotted}"] = ffi.sizeof(field.type)
    return expected


def _constants():
    names = [name for name in dir(kvm_abi) if name.startswith("KVM_") and isinstance(getattr(kvm_abi, name), int)]
    return {name: getattr(kvm_abi, name) for name in names
            if name not in kvm_abi.PATCH_CONSTANTS and name not in kvm_abi.NOT_IN_HEADER}


def _probe_source(layouts, constants):
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <linux/kvm.h>", "int main(void) {"]
    for key in layouts:
        words = key.split(" ")
        if words[0] == "sizeof" and len(words) == 3:
            lines.append(f'printf("{key} %zu\\n", sizeof({words[1]} {words[2]}));')
        elif words[0] == "sizeof":
            lines.append(f'printf("{key} %zu\\n", sizeof((({words[1]} {words[2]} *)0)->{words[3]}));')
        else:
            lines.append(f'printf("{key} %zu\\n", offsetof({words[1]} {words[2]}, {words[3]}));')
    for name in constants:
        lines += [f"#ifdef {name}", f'printf("const {name} %llu\\n", (unsigned long long)({name}));',
                  "#else", f'printf("const {name} absent\\n");', "#endif"]
    lines += ["return 0;", "}"]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    layouts, constants = _layout_checks(), _constants()
    workdir = tmp_path_factory.mktemp("abi-probe")
    source = workdir / "probe.c"
    source.write_text(_probe_source(layouts, constants))
    binary = workdir / "probe"
    subprocess.run([CC, "-std=gnu11", "-o", str(binary), str(source)], check=True, capture_output=True)
    output = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    measured = dict(line.rsplit(" ", 1) for line in output.splitlines())
    return layouts, constants, measured


def test_every_struct_is_probed():
    assert {"struct kvm_run", "struct kvm_regs", "struct kvm_sregs", "struct kvm_segment", "struct kvm_dtable",
            "struct kvm_userspace_memory_region", "struct kvm_guest_debug", "struct kvm_cpuid2",
            "struct kvm_cpuid_entry2", "struct kvm_translation"} <= set(_structs())


def test_struct_sizes_and_field_offsets_match_the_header(probe):
    layouts, _, measured = probe
    mismatches = [f"{key}: kvm_abi {value}, <linux/kvm.h> {measured[key]}"
                  for key, value in layouts.items() if int(measured[key]) != value]
    assert not mismatches, "\n".join(mismatches)
    assert len(layouts) > 300, "the probe should cover every field of every declared struct"


def test_constants_and_ioctl_numbers_match_the_header(probe):
    _, constants, measured = probe
    mismatches, absent = [], []
    for name, value in constants.items():
        got = measured[f"const {name}"]
        if got == "absent":
            absent.append(name)
        elif int(got) != value:
            mismatches.append(f"{name}: kvm_abi {value:#x}, <linux/kvm.h> {int(got):#x}")
    assert not mismatches, "\n".join(mismatches)
    assert set(absent) <= kvm_abi.NEWER_THAN_6_1, f"missing from <linux/kvm.h>: {sorted(set(absent) - kvm_abi.NEWER_THAN_6_1)}"
    for name in ("KVM_RUN", "KVM_SET_SREGS", "KVM_GET_SUPPORTED_CPUID", "KVM_SET_GUEST_DEBUG", "KVM_TRANSLATE"):
        assert name in constants


def test_patch_members_fit_in_the_exit_union():
    union_start = ffi.offsetof("struct kvm_run", "hw")
    emulate_end = ffi.offsetof("struct kvm_run", "emulate") + ffi.sizeof(ffi.new("struct kvm_run *").emulate)
    assert ffi.offsetof("struct kvm_run", "emulate") == union_start
    assert emulate_end <= ffi.offsetof("struct kvm_run", "kvm_valid_regs")
    assert ffi.sizeof("struct kvm_exec_trap") == 32


def test_patch_exit_payload_starts_like_memory_fault():
    """KVM_EXIT_EMULATE's payload begins with KVM_EXIT_MEMORY_FAULT's fields (flags, gpa, size,
    all __u64, in that order at the start of the exit union) so that switching to upstream's exit
    is mechanical; the exec-trap attribute and exit flag use the bit upstream reserves for X."""
    union_start = ffi.offsetof("struct kvm_run", "hw")
    offsets = [ffi.offsetof("struct kvm_run", "emulate", f) - union_start for f in ("flags", "gpa", "size", "gva")]
    assert offsets == [0, 8, 16, 24], f"emulate field offsets {offsets}"
    assert kvm_abi.KVM_EMULATE_EXIT_FLAG_EXECUTE == kvm_abi.KVM_EXEC_TRAP_ATTR_NX == 1 << 2
    assert kvm_abi.KVM_EMULATE_EXIT_FLAG_GVA_VALID >> 32 and kvm_abi.KVM_EMULATE_EXIT_FLAG_EVENT_DELIVERY >> 32, \
        "the exit's own flags must stay out of the bits KVM_EXIT_MEMORY_FAULT defines (0-31)"
