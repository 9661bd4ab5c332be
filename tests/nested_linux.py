"""Boot Debian's kernel to /init with `vmm run` inside a machine that has hardware-assisted
KVM: Debian's 6.1 kernel under QEMU TCG with an emulated AMD CPU (SVM + NPT) loads
kvm-amd, and the VMM runs there on its /dev/kvm. For hosts whose own KVM emulates guest
kernel code (tests/test_linux.py skips its boots there); `make linux-nested` runs it.
The outer machine has two CPUs: with one, the inner guest's vCPUs overcommit it and its
cross-CPU spin-waits (TSC synchronisation, IPIs) can stall for many minutes under TCG.

    python3 tests/nested_linux.py [--timeout SECONDS] [--keep DIR]

It reuses what `make e2e` built and cached (the outer kernel, its stock KVM modules and
the Python root with cffi) and the Linux test assets (tests/linux_assets.py). The cases
are the ones tests/test_linux.py runs: /init on 1, 2 and 4 vCPUs then power-off (status
0), a shell fed through --serial-input, reboot (status 16), a panic with the pvpanic
driver (status 18). Prints one line per case; exit status 1 when any case fails.
"""
import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from linux_assets import CACHE, Initramfs, busybox, debian_package, stock_kernel  # noqa: E402
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from vmm.errors import EXIT_GUEST_PANIC, EXIT_REBOOT  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD = CACHE / "build"
OUTER_KERNEL = BUILD / "6.1" / "vmlinuz"
OUTER_MODULES = BUILD / "6.1" / "modules" / "stock"
PYTHON_ROOT = BUILD / "python" / "root"
STDLIB_PACKAGES = ("libpython3.11-minimal", "libpython3.11-stdlib")
APPEND = "console=ttyS0 quiet"
DMESG = ("serial8250|ACPI: (RSDP|FACP|APIC)|smpboot: Allowing|Brought up|clocksource: Switched|kvm-clock: Using"
         "|rtc_cmos rtc_cmos: setting|i8042|Hypervisor detected|pci 0000:00:00.0|PCI: Fatal")
CASES = [
    ("boot-1", "boot.cpio", ["--smp", "1"], 0, "init: 1 CPUs online"),
    ("boot-2", "boot.cpio", ["--smp", "2"], 0, "init: 2 CPUs online"),
    ("boot-4", "boot.cpio", ["--smp", "4"], 0, "init: 4 CPUs online"),
    ("shell", "shell.cpio", ["--serial-input", "/inner/shell-input.txt"], 0, "shell says 42"),
    ("reboot", "reboot.cpio", [], EXIT_REBOOT, "rebooting"),
    ("panic", "panic.cpio", [], EXIT_GUEST_PANIC, "Kernel panic - not syncing: sysrq triggered crash"),
]

OUTER_INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/tmp PYTHONPATH=/opt/v2e
for m in irqbypass ccp kvm; do insmod /modules/$m.ko; done
insmod /modules/kvm-amd.ko npt=1
echo "NESTED-KVM $(ls /dev/kvm) npt=$(cat /sys/module/kvm_amd/parameters/npt)"
cd /inner
{cases}
echo NESTED-DONE
poweroff -f
"""
CASE_LINE = ('echo "NESTED-BEGIN {name}"; a=$(cut -d" " -f1 /proc/uptime); '
             'python3 -m vmm run /inner/vmlinuz --initrd /inner/{initrd} --append "{append}" --timeout {timeout} {args}; '
             'echo "NESTED-END {name} status=$? seconds=$(awk -v a=$a \'{{printf "%.1f", $1 - a}}\' /proc/uptime)"')


def inner_images(directory, kernel):
    def image(commands, modules=()):
        initramfs = Initramfs()
        initramfs.add_busybox(busybox())
        for name in modules:
            path = kernel.module(name)
            initramfs.add_file(f"/lib/modules/{path.name}", path.read_bytes())
        initramfs.set_init(commands)
        return initramfs

    image(f'echo "init: $(nproc) CPUs online"; dmesg | grep -E "{DMESG}"').write(directory / "boot.cpio")
    image("setsid cttyhack sh").write(directory / "shell.cpio")
    image("echo rebooting; reboot -f").write(directory / "reboot.cpio")
    image("insmod /lib/modules/pvpanic.ko; insmod /lib/modules/pvpanic-mmio.ko; echo c > /proc/sysrq-trigger",
          ("pvpanic", "pvpanic-mmio")).write(directory / "panic.cpio")
    (directory / "shell-input.txt").write_bytes(b"echo shell says $((6 * 7))\npoweroff -f\n")
    shutil.copy(kernel.vmlinuz, directory / "vmlinuz")


def outer_root(root, timeout):
    """The outer machine's files: busybox, KVM modules, Python with its whole standard
    library (from Debian's packages), the VMM from this tree, the inner kernel and images."""
    shutil.copytree(PYTHON_ROOT, root, symlinks=True)
    for package in STDLIB_PACKAGES:
        contents = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debian_package(package))],
                                    stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(root), "--wildcards", "./usr/lib/python3.11/*",
                        "--exclude=*/test/*", "--exclude=*/idlelib/*", "--exclude=*/tkinter/*"],
                       stdin=contents.stdout, check=True)
        contents.stdout.close()
        contents.wait()
    target = root / "opt" / "v2e"
    shutil.rmtree(target, ignore_errors=True)
    for package in ("vmm", "kvm_abi"):
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy(busybox(), root / "bin" / "busybox")
    shutil.copytree(OUTER_MODULES, root / "modules")
    (root / "inner").mkdir()
    inner_images(root / "inner", stock_kernel())
    cases = "\n".join(CASE_LINE.format(name=name, initrd=initrd, append=APPEND, timeout=timeout, args=" ".join(args))
                      for name, initrd, args, _, _ in CASES)
    (root / "init").write_text(OUTER_INIT.format(cases=cases))
    (root / "init").chmod(0o755)


def cpio_of_tree(root):
    image = Initramfs()
    for path in sorted(root.rglob("*")):
        name = "/" + str(path.relative_to(root))
        if path.is_symlink():
            image.add_symlink(name, os.readlink(path))
        elif path.is_dir():
            image.add_directory(name)
        elif path.is_file():
            image.add_file(name, path.read_bytes(), path.stat().st_mode & 0o777)
    return image.to_bytes()


def parse(log):
    results = {}
    for match in re.finditer(r"NESTED-BEGIN (\S+)\r?\n(.*?)NESTED-END \1 status=(\d+) seconds=([\d.]+)", log, re.S):
        results[match.group(1)] = (int(match.group(3)), float(match.group(4)), match.group(2))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=int, default=300, help="seconds per inner boot (default: 300)")
    parser.add_argument("--keep", help="keep the outer root, initramfs and serial log in this directory")
    args = parser.parse_args(argv)
    missing = [str(path) for path in (OUTER_KERNEL, OUTER_MODULES, PYTHON_ROOT) if not path.exists()]
    if missing or shutil.which("qemu-system-x86_64") is None:
        print(f"nested_linux: needs what `make e2e` builds ({', '.join(missing) or 'qemu-system-x86_64'} missing)",
              file=sys.stderr)
        return 2
    work = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="nested-linux-"))
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "root", ignore_errors=True)
    outer_root(work / "root", args.timeout)
    (work / "outer.cpio").write_bytes(cpio_of_tree(work / "root"))
    log = work / "serial.log"
    log.unlink(missing_ok=True)
    total = args.timeout * len(CASES) + 300
    subprocess.run(["timeout", "-k", "5", str(total), "qemu-system-x86_64", "-accel", "tcg", "-cpu",
                    "qemu64,+svm,+npt", "-m", "2048", "-smp", "2", "-nodefaults", "-no-user-config", "-display", "none",
                    "-monitor", "none", "-no-reboot", "-serial", f"file:{log}", "-kernel", str(OUTER_KERNEL),
                    "-initrd", str(work / "outer.cpio"), "-append",
                    "console=ttyS0,115200 mitigations=off nokaslr panic=-1 loglevel=4 cryptomgr.notests=1"],
                   capture_output=True)
    results = parse(log.read_text(errors="replace"))
    failed = 0
    for name, _, _, status, text in CASES:
        if name not in results:
            print(f"FAIL {name}: did not finish (serial log: {log})")
            failed += 1
            continue
        actual, seconds, output = results[name]
        ok = actual == status and text in output
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'} {name}: status {actual} (expected {status}), {seconds:.1f} s in the "
              f"outer machine{'' if text in output else f'; {text!r} missing'}")
        if name == "boot-4":
            for line in output.splitlines():
                if re.search(DMESG, line):
                    print(f"    {line.strip()}")
    if not args.keep:
        shutil.rmtree(work / "root", ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
