"""`vmm doctor`: can this host run the VMM, and with what? (like kvm-ok / virt-host-validate)

Each check prints PASS, WARN or FAIL with the fact it found and, when it fails,
the fix. The exit status is non-zero when any check fails.
"""
import json
import os
import pathlib
import stat
from dataclasses import dataclass

import kvm_abi

from .errors import KvmError, VmmError
from .kvm import KVM_DEVICE, Kvm

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"
EXIT_DOCTOR_FAIL = 1

VENDOR_MODULES = ("kvm_intel", "kvm_amd")
# Capabilities the VMM relies on, with what each one is for.
REQUIRED_CAPABILITIES = (
    ("KVM_CAP_USER_MEMORY", "guest RAM"),
    ("KVM_CAP_EXT_CPUID", "CPUID for long mode"),
    ("KVM_CAP_IMMEDIATE_EXIT", "stopping vCPUs"),
    ("KVM_CAP_SET_GUEST_DEBUG", "single-step tracing"),
    ("KVM_CAP_IRQCHIP", "--machine pc"),
    ("KVM_CAP_PIT2", "--machine pc"),
    ("KVM_CAP_SET_TSS_ADDR", "--machine pc"),
    ("KVM_CAP_SET_IDENTITY_MAP_ADDR", "--machine pc"),
)
DEVICE_FIX = ('add yourself to group kvm (sudo usermod -aG kvm $USER, then log in again) and make '
              'the device group-accessible (udev rule: KERNEL=="kvm", GROUP="kvm", MODE="0660")')


@dataclass(slots=True, frozen=True)
class Check:
    name: str
    status: str
    detail: str

    def as_dict(self):
        return {"name": self.name, "status": self.status, "detail": self.detail}


def _read(path):
    try:
        return pathlib.Path(path).read_text().strip()
    except OSError:
        return None


def cpu_info(proc_root="/proc"):
    """(vendor_id, sorted virtualization flags among vmx/svm) from the first CPU in cpuinfo."""
    text = _read(f"{proc_root}/cpuinfo") or ""
    vendor, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and vendor is None:
            vendor = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return vendor, sorted(flags & {"vmx", "svm"})


def kvm_modules(sys_root="/sys"):
    """Loaded modules named kvm_* (the vendor or backend module behind /dev/kvm)."""
    try:
        names = os.listdir(f"{sys_root}/module")
    except OSError:
        return []
    return sorted(name for name in names if name.startswith("kvm_"))


def _device_checks(kvm_path):
    try:
        info = os.stat(kvm_path)
    except FileNotFoundError:
        return [Check("device", FAIL, f"{kvm_path} does not exist: load kvm_intel or kvm_amd "
                                      f"(modprobe) and enable virtualization in the firmware")], None
    if not stat.S_ISCHR(info.st_mode):
        return [Check("device", FAIL, f"{kvm_path} is not a character device")], None
    try:
        import grp
        group = grp.getgrgid(info.st_gid).gr_name
    except (KeyError, ImportError):
        group = str(info.st_gid)
    checks = [Check("device", PASS, f"{kvm_path}: character device {os.major(info.st_rdev)}:"
                                    f"{os.minor(info.st_rdev)}, {stat.filemode(info.st_mode)}, group {group}")]
    try:
        kvm = Kvm(kvm_path)
    except VmmError as error:
        fix = f"; fix: {DEVICE_FIX}" if "permission" in str(error) else ""
        checks.append(Check("open", FAIL, f"{error}{fix}"))
        return checks, None
    checks.append(Check("open", PASS, f"{kvm_path} opens read-write"))
    checks.append(Check("api-version", PASS, f"KVM API version {kvm_abi.KVM_API_VERSION}"))
    return checks, kvm


def _module_checks(sys_root, facts):
    modules = kvm_modules(sys_root)
    facts["kvm_modules"] = modules
    vendor = [name for name in modules if name in VENDOR_MODULES]
    facts["vendor_module"] = vendor[0] if vendor else (modules[0] if modules else None)
    checks = []
    if vendor:
        checks.append(Check("module", PASS, f"/dev/kvm is backed by {vendor[0]}"))
    elif modules:
        checks.append(Check("module", WARN, f"/dev/kvm is backed by {', '.join(modules)}, not kvm_intel or "
                                            f"kvm_amd (the V2E kernel patch targets kvm_intel)"))
    else:
        checks.append(Check("module", WARN, "no kvm_* module in /sys/module (KVM built in, or not loaded)"))
    paging = [(module, parameter, label) for module, parameter, label
              in (("kvm_intel", "ept", "EPT"), ("kvm_amd", "npt", "NPT")) if module in modules]
    for module, parameter, label in paging:
        value = _read(f"{sys_root}/module/{module}/parameters/{parameter}")
        facts[parameter] = value
        enabled = value in ("Y", "1")
        checks.append(Check(parameter, PASS if enabled else WARN,
                            f"{label} {'enabled' if enabled else f'not enabled ({value})'} in {module}"))
    if not paging:
        checks.append(Check("ept-npt", WARN, "no EPT/NPT parameter to read (no kvm_intel or kvm_amd module)"))
    nested = {module: _read(f"{sys_root}/module/{module}/parameters/nested") for module in modules}
    nested = {module: value for module, value in nested.items() if value is not None}
    facts["nested"] = nested
    if nested:
        checks.append(Check("nested", PASS, ", ".join(f"{module} nested={value}" for module, value in nested.items())))
    else:
        checks.append(Check("nested", WARN, "no readable nested parameter in the kvm_* modules"))
    return checks


def _cpu_checks(proc_root, facts):
    vendor, flags = cpu_info(proc_root)
    facts["cpu_vendor"], facts["virt_flags"] = vendor, flags
    if flags:
        return [Check("cpu", PASS, f"{vendor}: {'/'.join(flags)} in /proc/cpuinfo")]
    return [Check("cpu", WARN, f"{vendor}: no vmx or svm flag in /proc/cpuinfo (a paravirtual or "
                               f"nested KVM; hardware virtualization is not visible to this kernel)")]


def _kvm_checks(kvm, facts):
    checks = []
    missing = []
    for name, purpose in REQUIRED_CAPABILITIES:
        if not kvm.check_extension(getattr(kvm_abi, name)):
            missing.append(f"{name} ({purpose})")
    if missing:
        checks.append(Check("capabilities", FAIL, "missing: " + ", ".join(missing)))
    else:
        checks.append(Check("capabilities", PASS, f"all {len(REQUIRED_CAPABILITIES)} required capabilities present"))
    max_vcpus = kvm.check_extension(kvm_abi.KVM_CAP_MAX_VCPUS) or kvm.check_extension(kvm_abi.KVM_CAP_NR_VCPUS)
    facts["max_vcpus"] = max_vcpus
    checks.append(Check("smp", PASS if max_vcpus > 1 else WARN, f"up to {max_vcpus} vCPUs per VM"))
    try:
        with kvm.create_vm() as vm:
            features = vm.check_extension(kvm_abi.KVM_CAP_EXEC_TRAP)
            vm.create_irqchip()
            vm.create_pit2(kvm_abi.KVM_PIT_SPEAKER_DUMMY)
            with vm.create_vcpu(0) as vcpu:
                tsc_offset = vcpu.has_device_attr(kvm_abi.KVM_VCPU_TSC_CTRL, kvm_abi.KVM_VCPU_TSC_OFFSET)
        checks.append(Check("vm", PASS, "created a VM with in-kernel irqchip, PIT and a vCPU"))
        facts["tsc_offset_attribute"] = tsc_offset
        if tsc_offset:
            checks.append(Check("tsc-offset", PASS, "the vCPU TSC offset attribute (KVM_VCPU_TSC_OFFSET) is there: "
                                                   "time spent tracing is taken out of the guest's TSC"))
        else:
            checks.append(Check("tsc-offset", WARN, "no vCPU TSC offset attribute (KVM_VCPU_TSC_OFFSET): rdtsc in "
                                                   "traced code reads a virtual TSC, but after an event the guest's "
                                                   "TSC shows the time spent tracing"))
    except KvmError as error:
        checks.append(Check("vm", FAIL, f"cannot create a VM with an in-kernel irqchip: {error}"))
        features = kvm.check_extension(kvm_abi.KVM_CAP_EXEC_TRAP)
    facts["exec_trap_features"] = features
    checks.append(_exec_trap_check(features))
    return checks


EXEC_TRAP_FEATURES = (("KVM_EXEC_TRAP_FEATURE_NX", "NX"), ("KVM_EXEC_TRAP_FEATURE_EMULATOR", "EMULATOR"))


def _exec_trap_check(features):
    """The v2e-patch line: which exec-trap features KVM_CAP_EXEC_TRAP reports."""
    if features == 0:
        return Check("v2e-patch", WARN, "exec-trap kernel patch not loaded: V2E uses the stock backend")
    if features == kvm_abi.KVM_EXEC_TRAP_FIRST_ABI:
        return Check("v2e-patch", WARN, "exec-trap kernel patch with the withdrawn first ABI (KVM_CAP_EXEC_TRAP "
                                        "reports 1): V2E uses the stock backend; install the current patch")
    names = [label for name, label in EXEC_TRAP_FEATURES if features & getattr(kvm_abi, name)]
    unknown = features & ~sum(getattr(kvm_abi, name) for name, _ in EXEC_TRAP_FEATURES)
    if unknown:
        names.append(f"unknown {unknown:#x}")
    if not features & kvm_abi.KVM_EXEC_TRAP_FEATURE_NX:
        return Check("v2e-patch", WARN, f"exec-trap kernel patch without NX ({', '.join(names)}): "
                                        "V2E uses the stock backend")
    return Check("v2e-patch", PASS, f"exec-trap kernel patch loaded (features {', '.join(names)})")


def diagnose(kvm_path=KVM_DEVICE, sys_root="/sys", proc_root="/proc"):
    """(checks, facts) for this host."""
    facts = {}
    checks, kvm = _device_checks(kvm_path)
    checks += _module_checks(sys_root, facts)
    checks += _cpu_checks(proc_root, facts)
    if kvm is not None:
        facts["api_version"] = kvm_abi.KVM_API_VERSION
        with kvm:
            checks += _kvm_checks(kvm, facts)
    return checks, facts


def command_doctor(args):
    checks, facts = diagnose(os.environ.get("VMM_KVM_DEVICE", KVM_DEVICE))
    failed = any(check.status == FAIL for check in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [check.as_dict() for check in checks], "facts": facts},
                         indent=2))
    else:
        for check in checks:
            print(f"{check.status}  {check.name:<13} {check.detail}")
    return EXIT_DOCTOR_FAIL if failed else 0
