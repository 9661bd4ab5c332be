"""Boot Debian's kernel to /init with `vmm run`, and unpack in user mode, inside a machine that
has hardware-assisted KVM: Debian's 6.1 kernel under QEMU TCG with an emulated AMD CPU (SVM +
NPT) loads kvm-amd, and the VMM runs there on its /dev/kvm. For hosts whose own KVM emulates
guest kernel code (tests/test_linux.py skips its boots there) or does not report single steps
in user mode (tests/test_unpack_user.py skips its traces there); `make linux-nested` runs it,
`make demo-linux` runs the flagship demo alone. The outer machine has two CPUs: with one, the
inner guest's vCPUs overcommit it and its cross-CPU spin-waits (TSC synchronisation, IPIs) can
stall for many minutes under TCG.

    python3 tests/nested_linux.py [--timeout SECONDS] [--keep DIR] [--demo] [--only NAME,...]

It reuses what `make e2e` built and cached (the outer kernel, its stock KVM modules and the
Python root with cffi), the patched modules of this tree (patches/out/linux-6.1, from `make
-C patches modules SERIES=6.1`, which `make e2e` runs) and the Linux test assets
(tests/linux_assets.py). With kvm-amd's stock modules: /init on 1, 2 and 4 vCPUs then power-off
(status 0), a shell fed through --serial-input, reboot (status 16), a panic with the pvpanic
driver (status 18), and guest_images/unpack_user.bin unpacked and traced in user mode on the
stock backend. With the patched modules: the same guest on the patched backend, and the demo:
guest_images/upx_demo.c, built static and packed with UPX, runs from a busybox initramfs under
`vmm run --unpack --unpack-user`; its output must be the program's own, and the dump must hold
the text of the unpacked program (`upx -d`), with no layer outside its address space. Prints
one line per case (PASS or FAIL); exit status 1 when any case fails. Needs QEMU 9.1 or later
(QEMU_BREAKPOINTS).
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
import unpack_user_cases  # noqa: E402
from linux_assets import CACHE, Initramfs, busybox, debian_package, stock_kernel  # noqa: E402
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from vmm.errors import EXIT_GUEST_PANIC, EXIT_OK, EXIT_REBOOT  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD = CACHE / "build"
OUTER_KERNEL = BUILD / "6.1" / "vmlinuz"
OUTER_MODULES = BUILD / "6.1" / "modules" / "stock"
PATCHED_MODULES = ROOT / "patches" / "out" / "linux-6.1"
PYTHON_ROOT = BUILD / "python" / "root"
STDLIB_PACKAGES = ("libpython3.11-minimal", "libpython3.11-stdlib")
DEMO_SOURCE = ROOT / "guest_images" / "upx_demo.c"
APPEND = "console=ttyS0 quiet"
DMESG = ("serial8250|ACPI: (RSDP|FACP|APIC)|smpboot: Allowing|Brought up|clocksource: Switched|kvm-clock: Using"
         "|rtc_cmos rtc_cmos: setting|i8042|Hypervisor detected|pci 0000:00:00.0|PCI: Fatal")
CRASH = (r"BUG|Oops|WARNING|RIP:|Call Trace|Code:|panic|soft lockup|hung task|rcu.*stall|NMI|watchdog"
         r"|general protection|invalid opcode|double fault|vmm:")
CRASH_LINES, TAIL_LINES = 60, 20
SMALL = f"/opt/v2e/guest_images/{unpack_user_cases.IMAGE}"
CHECK = "python3 /opt/v2e/unpack_user_cases.py"


class Case:
    """One `vmm run` in the outer machine: its arguments, the modules it runs on ("stock" or
    "patched"), the exit status and output it must give, and a check run after it (a
    unpack_user_cases.py command whose `CHECK PASS` line it must print). again: a failed first
    run is run once more and the second decides, both reported (SMP boots: see SMP_CRASH)."""

    def __init__(self, name, modules, run, status, texts, check=None, again=False):
        self.name, self.modules, self.run, self.status, self.texts, self.check = name, modules, run, status, texts, check
        self.again = again


# Overcommitted SMP boots (inner vCPUs on the outer machine's two TCG CPUs) crash about once
# in 40 runs while the APs come up (README, "Linux guests"; cause not found): their kernel
# panics on an oops and reboots, so the run ends in seconds, and a failed one runs once more.
SMP_CRASH = "oops=panic panic=-1"


def linux(initrd, *options, append=APPEND):
    return f"/inner/vmlinuz --initrd /inner/{initrd} --append \"{append}\" " + " ".join(options)


def smp_boot(vcpus):
    return Case(f"boot-{vcpus}", "stock", linux("boot.cpio", f"--smp {vcpus}", append=f"{APPEND} {SMP_CRASH}"),
                EXIT_OK, [f"init: {vcpus} CPUs online"], again=True)


def small(backend, *options):
    return f"{SMALL} --backend {backend} " + " ".join(options)


def cases(demo_output):
    unpack = f"--unpack {unpack_user_cases.RANGE} --unpack-user"
    guest_output = unpack_user_cases.OUTPUT.decode().splitlines()
    status = unpack_user_cases.EXIT_STATUS
    small_cases = []
    for backend in ("stock", "patched"):
        small_cases += [
            Case(f"unpack-user-{backend}", backend, small(backend, unpack, f"--dump-dir /tmp/{backend}-layers"),
                 status, guest_output, f"layers /tmp/{backend}-layers"),
            Case(f"user-trace-{backend}", backend, small(backend, f"--watch {unpack_user_cases.WATCH}",
                                                         f"--trace /tmp/{backend}-user.jsonl"),
                 status, guest_output, f"user-trace /tmp/{backend}-user.jsonl"),
            Case(f"layer-trace-{backend}", backend, small(backend, unpack, f"--dump-dir /tmp/{backend}-traced",
                                                          f"--trace /tmp/{backend}-layers.jsonl", "--trace-layers"),
                 status, guest_output, f"layer-trace /tmp/{backend}-layers.jsonl"),
        ]
    boots = [
        Case("boot-1", "stock", linux("boot.cpio", "--smp 1"), EXIT_OK, ["init: 1 CPUs online"]),
        smp_boot(2),
        smp_boot(4),
        Case("shell", "stock", linux("shell.cpio", "--serial-input /inner/shell-input.txt"), EXIT_OK,
             ["shell says 42"]),
        Case("reboot", "stock", linux("reboot.cpio"), EXIT_REBOOT, ["rebooting"]),
        Case("panic", "stock", linux("panic.cpio"), EXIT_GUEST_PANIC,
             ["Kernel panic - not syncing: sysrq triggered crash"]),
    ]
    demo = Case("upx-demo", "patched", linux("upx.cpio", "--backend patched --unpack --unpack-user",
                                             "--dump-dir /tmp/upx-layers"),
                EXIT_OK, demo_output + ["upx_demo exited with 0"], "upx /tmp/upx-layers /inner/upx_demo.unpacked")
    return boots + small_cases[:3], small_cases[3:] + [demo], demo


OUTER_INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/tmp PYTHONPATH=/opt/v2e
load() {{
    for m in irqbypass ccp kvm; do insmod /modules/$1/$m.ko || echo "NESTED-ERROR insmod $1 $m failed"; done
    insmod /modules/$1/kvm-amd.ko npt=1 || echo "NESTED-ERROR insmod $1 kvm-amd failed"
    echo "NESTED-KVM $1 $(ls /dev/kvm) npt=$(cat /sys/module/kvm_amd/parameters/npt)"
}}
unload() {{ rmmod kvm_amd; rmmod kvm; rmmod ccp; rmmod irqbypass; }}
cd /inner
{cases}
echo NESTED-DONE
poweroff -f
"""
CASE_LINE = ('echo "NESTED-BEGIN {name}"; a=$(cut -d" " -f1 /proc/uptime); '
             'python3 -m vmm run {run} --timeout {timeout}; s=$?; {check}'
             'echo "NESTED-END {name} status=$s seconds=$(awk -v a=$a \'{{printf "%.1f", $1 - a}}\' /proc/uptime)"')


def init_script(selected, timeout):
    lines, loaded = [], None
    for case in selected:
        if case.modules != loaded:
            lines += ["unload"] if loaded else []
            lines.append(f"load {case.modules}")
            loaded = case.modules
        check = f"{CHECK} {case.check}; " if case.check else ""
        lines.append(CASE_LINE.format(name=case.name, run=case.run, timeout=timeout, check=check))
        if case.again:
            again = CASE_LINE.format(name=f"{case.name}-again", run=case.run, timeout=timeout, check=check)
            lines.append(f'if [ "$s" != {case.status} ]; then {again}; fi')
    return OUTER_INIT.format(cases="\n".join(lines))


def demo_program(directory):
    """guest_images/upx_demo.c built static, packed with UPX, and unpacked again with `upx -d`:
    (the packed program, the unpacked one, the program's output lines run here)."""
    plain, packed, unpacked = directory / "upx_demo", directory / "upx_demo.upx", directory / "upx_demo.unpacked"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(plain), str(DEMO_SOURCE)], check=True)
    packed.unlink(missing_ok=True)
    unpacked.unlink(missing_ok=True)
    subprocess.run(["upx", "-q", "-q", "-o", str(packed), str(plain)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["upx", "-q", "-q", "-d", "-o", str(unpacked), str(packed)], check=True, stdout=subprocess.DEVNULL)
    output = subprocess.run([str(plain)], check=True, capture_output=True, text=True).stdout.splitlines()
    return packed, unpacked, output


def inner_images(directory, kernel, packed, unpacked):
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
    demo = image("/bin/upx_demo; echo upx_demo exited with $?")
    demo.add_program("/bin/upx_demo", packed)
    demo.write(directory / "upx.cpio")
    (directory / "shell-input.txt").write_bytes(b"echo shell says $((6 * 7))\npoweroff -f\n")
    shutil.copy(kernel.vmlinuz, directory / "vmlinuz")
    shutil.copy(unpacked, directory / "upx_demo.unpacked")


# The first QEMU whose VMRUN arms the breakpoints the guest's DR7 enables: before it, the
# stepper's stop at a handler's entry never fires in the SVM guest (e2e/Makefile's host-deps
# installs a later one).
QEMU_BREAKPOINTS = tuple(int(part) for part in (ROOT / "e2e" / "tools" / "qemu-min").read_text().split("."))


def qemu_version():
    """(major, minor) of qemu-system-x86_64, or (0, 0) when its --version says no number."""
    first = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    found = re.search(r"version (\d+)\.(\d+)", first)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def outer_root(root, packed, unpacked):
    """The outer machine's files but its /init: busybox, KVM modules (stock and patched), Python
    with its whole standard library (from Debian's packages), the VMM from this tree with the
    user-mode guest and its checks, the inner kernel and images."""
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
    (target / "guest_images").mkdir()
    shutil.copy(ROOT / "guest_images" / unpack_user_cases.IMAGE, target / "guest_images")
    shutil.copy(pathlib.Path(unpack_user_cases.__file__), target)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy(busybox(), root / "bin" / "busybox")
    shutil.copytree(OUTER_MODULES, root / "modules" / "stock")
    patched = root / "modules" / "patched"
    patched.mkdir()
    for name in ("irqbypass", "ccp"):
        shutil.copy(OUTER_MODULES / f"{name}.ko", patched)
    for name in ("kvm", "kvm-amd"):
        # As make e2e loads them: without .BTF and __mcount_loc, which take seconds at insmod under TCG.
        subprocess.run(["objcopy", "-R", ".BTF", "-R", "__mcount_loc", str(PATCHED_MODULES / f"{name}.ko"),
                        str(patched / f"{name}.ko")], check=True)
    (root / "inner").mkdir()
    inner_images(root / "inner", stock_kernel(), packed, unpacked)


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


def verdict(case, result):
    """(passed, the line to print) for a case's (status, seconds, output)."""
    actual, seconds, output = result
    lines = [line.rstrip("\r") for line in output.splitlines()]
    missing = [text for text in case.texts if not any(text in line for line in lines)]
    checks = [line for line in lines if line.startswith("CHECK ")]
    problems = [f"exit status {actual}, expected {case.status}"] if actual != case.status else []
    problems += [f"{text!r} missing" for text in missing]
    if case.check and not any(line.startswith("CHECK PASS") for line in checks):
        problems += [line for line in checks if line.startswith("CHECK FAIL")] or ["the check printed nothing"]
    line = (f"{'FAIL' if problems else 'PASS'} {case.name}: status {actual} (expected {case.status}), "
            f"{seconds:.1f} s in the outer machine" + "".join(f"; {problem}" for problem in problems))
    return not problems, line


def boot_outer(work, selected, timeout, log_name):
    """Boot the outer machine (its files in work/root) to run `selected`: (its serial log's text,
    None when it ran them all, else how it stopped). QEMU's log of the machine's resets (a
    triple fault) goes beside the serial log."""
    root = work / "root"
    (root / "init").write_text(init_script(selected, timeout))
    (root / "init").chmod(0o755)
    (work / "outer.cpio").write_bytes(cpio_of_tree(root))
    log, qemu_log = work / log_name, work / f"{pathlib.Path(log_name).stem}.qemu.log"
    log.unlink(missing_ok=True)
    qemu_log.unlink(missing_ok=True)
    outer = subprocess.run(["timeout", "-k", "5", str(timeout * len(selected) + 300), "qemu-system-x86_64",
                            "-accel", "tcg", "-cpu", "qemu64,+svm,+npt", "-m", "2048", "-smp", "2", "-nodefaults",
                            "-no-user-config", "-display", "none", "-monitor", "none", "-no-reboot",
                            "-serial", f"file:{log}", "-d", "cpu_reset,guest_errors", "-D", str(qemu_log),
                            "-kernel", str(OUTER_KERNEL), "-initrd", str(work / "outer.cpio"), "-append",
                            "console=ttyS0,115200 mitigations=off nokaslr panic=-1 loglevel=4 cryptomgr.notests=1"],
                           capture_output=True, text=True, errors="replace")
    text = log.read_text(errors="replace") if log.exists() else ""
    if "NESTED-DONE" in text:
        return text, None
    ended = re.findall(r"NESTED-END (\S+)", text)
    return text, (f"QEMU ended with status {outer.returncode} after {ended[-1] if ended else 'no case'} "
                  f"(last serial lines: {' | '.join(text.strip().splitlines()[-3:])}; QEMU: "
                  f"{outer.stderr.strip()[-300:] or 'nothing'}; {log}, {qemu_log})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=int, default=300, help="seconds per inner run (default: 300)")
    parser.add_argument("--keep", help="keep the outer root, initramfs and serial log in this directory")
    parser.add_argument("--demo", action="store_true", help="run the UPX demo alone and show what it found")
    parser.add_argument("--only", metavar="NAME,...", help="run only these cases (by the names it prints)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run each selected case N times (1-1000), each reported on its own as NAME, NAME.2... "
                             "and none run again when it fails: how often a flaky case fails")
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= 1000:
        parser.error(f"--repeat {args.repeat}: 1 to 1000 runs")
    missing = [str(path) for path in (OUTER_KERNEL, OUTER_MODULES, PYTHON_ROOT) if not path.exists()]
    missing += [name for name in ("qemu-system-x86_64", "gcc") if shutil.which(name) is None]
    if missing:
        print(f"nested_linux: needs what `make e2e` builds ({', '.join(missing)} missing)", file=sys.stderr)
        return 2
    version = qemu_version()
    if version < QEMU_BREAKPOINTS:
        print(f"nested_linux: QEMU {'.'.join(map(str, version))} does not arm a guest's hardware breakpoints at "
              f"VMRUN; needs {'.'.join(map(str, QEMU_BREAKPOINTS))} or later (make -C e2e host-deps installs it "
              "from bookworm-backports)", file=sys.stderr)
        return 2
    if not (PATCHED_MODULES / "kvm-amd.ko").exists():
        print(f"nested_linux: needs the patched modules in {PATCHED_MODULES} (make -C patches modules SERIES=6.1, "
              "which make e2e runs)", file=sys.stderr)
        return 2
    if shutil.which("upx") is None:
        print("nested_linux: needs upx (apt-get install -t bookworm-backports upx-ucl)", file=sys.stderr)
        return 2
    work = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="nested-linux-"))
    work.mkdir(parents=True, exist_ok=True)
    packed, unpacked, demo_output = demo_program(work)
    stock_cases, patched_cases, demo = cases(demo_output)
    selected = [demo] if args.demo else stock_cases + patched_cases
    if args.only:
        names = set(args.only.split(","))
        unknown = names - {case.name for case in stock_cases + patched_cases + [demo]}
        if unknown:
            print(f"nested_linux: no case named {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        selected = [case for case in stock_cases + patched_cases + [demo] if case.name in names]
    if args.repeat > 1:
        selected = [Case(case.name if run == 1 else f"{case.name}.{run}", case.modules, case.run, case.status,
                         case.texts, case.check) for case in selected for run in range(1, args.repeat + 1)]
    shutil.rmtree(work / "root", ignore_errors=True)
    outer_root(work / "root", packed, unpacked)
    text, stopped = boot_outer(work, selected, args.timeout, "serial.log")
    results, logs = parse(text), [text]
    failed = 0
    if stopped is not None:
        # The outer machine itself stopped: the cases it did not finish run once more in a new
        # one, and both machines are reported.
        print(f"NOTE outer machine: {stopped}; the cases it did not finish run in a new one")
        text, stopped = boot_outer(work, [case for case in selected if case.name not in results], args.timeout,
                                   "serial-2.log")
        results.update(parse(text))
        logs.append(text)
        if stopped is not None:
            print(f"FAIL outer machine, again: {stopped}")
            failed += 1
    for case in selected:
        if case.name not in results:
            print(f"FAIL {case.name}: did not finish (serial logs in {work})")
            failed += 1
            continue
        passed, line = verdict(case, results[case.name])
        output = results[case.name][2].splitlines()
        again = results.get(f"{case.name}-again") if case.again and not passed else None
        if again is not None:
            first = line.split(": ", 1)[1]
            passed, line = verdict(case, again)
            line += f" (run again: the first run failed: {first})"
        failed += not passed
        print(line)
        if case.name == "boot-4" or (case is demo and args.demo):
            for shown in output:
                if re.search(DMESG, shown) or (case is demo and re.search(r"^(upx_demo|vmm: unpack|CHECK)", shown)):
                    print(f"    {shown.strip()}")
        # What a crash or a stall printed, and how the run ended: the serial log is gone with the run.
        failed_runs = [] if passed and again is None else [output]
        if again is not None and not passed:
            failed_runs.append(again[2].splitlines())
        for run_output in failed_runs:
            crash = [shown for shown in run_output if re.search(CRASH, shown)][:CRASH_LINES]
            for shown in crash + ["..."] + run_output[-TAIL_LINES:]:
                print(f"  | {shown.rstrip()}")
    for line in re.findall(r"NESTED-ERROR .*", "\n".join(logs)):
        print(line.strip())
    if not args.keep:
        shutil.rmtree(work / "root", ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
