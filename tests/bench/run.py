"""Benchmarks against the physical limit on this host (a script, not a test):

    python -m tests.bench.run [--exits N] [--steps N] [--rounds R] [--json PATH]

- PIO exit throughput: tests/bench/pio_guest.s doing N `out`s to COM1, run by
  pio_loop.c (KVM_RUN and an exit check, nothing else: the physical limit),
  by a bare cffi loop (the floor for any Python VMM), and by the VMM's full
  run loop, port bus and UART.
- Single-step rate: the same guest under KVM_GUESTDBG_SINGLESTEP, run by
  pio_loop.c, by a bare cffi loop and by the VMM's run loop with a DEBUG
  handler; and the V2E engine's tracing rate (instructions recorded per second,
  counted and into a trace file), with the trace's bytes per instruction (the
  loop only changes registers: out, dec, jnz).
- Start-up: wall time and peak RSS of `vmm run` on the hello guests, and of
  QEMU on an equivalent real-mode BIOS image when qemu-system-x86_64 exists.
- Linux boot: Debian's kernel with a busybox initramfs whose /init prints a line
  and powers off: wall time from the start of the process to that line and to
  the process's end, and peak RSS, for `vmm run` (bzImage, and vmlinux through
  PVH) and QEMU `-kernel` (KVM and TCG), each bounded by --linux-timeout.

Rounds are interleaved and the best of each is kept: other load on the host
only ever slows a round down. Prints a table; writes JSON. The VMM's figures are for
the path this process runs: with the C helper (vmm.fastpath), or without it when it was
not built or VMM_FASTPATH=0.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

import kvm_abi
from vmm import fastpath
from vmm.kvm import libc
from vmm.machine import Machine
from vmm.machine.outcome import halted
from vmm.kvm import install_kick_handler

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
GUESTS = os.path.join(ROOT, "guest_images")
LOAD_ADDR = 0x100000
HLT_ADDR = LOAD_ADDR + 15   # pio_guest.s: the hlt after the loop
COUNT_AT = 1                # pio_guest.s: the loop count's imm32


def build(workdir):
    """Assemble the guest and compile the C loop; returns (guest image path, C program path)."""
    obj, guest, program = (os.path.join(workdir, name) for name in ("pio_guest.o", "pio_guest.bin", "pio_loop"))
    subprocess.run(["as", "--32", "-o", obj, os.path.join(HERE, "pio_guest.s")], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-N", f"-Ttext={LOAD_ADDR:#x}", "--oformat", "binary", "-o", guest, obj],
                   check=True)
    subprocess.run(["gcc", "-O2", "-Wall", "-o", program, os.path.join(HERE, "pio_loop.c")], check=True)
    return guest, program


def guest_image(path, iterations):
    image = bytearray(open(path, "rb").read())
    image[COUNT_AT:COUNT_AT + 4] = struct.pack("<I", iterations)
    return bytes(image)


# -- the C loop --------------------------------------------------------------------

def c_loop(program, guest, iterations, single_step=False):
    args = [program, guest, str(iterations)] + (["single-step"] if single_step else [])
    result = json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)
    return result["exits"] / result["seconds"]


# -- Python ------------------------------------------------------------------------

def _on_vcpu_thread(function):
    """Run function() on a fresh thread, as the VMM runs vCPUs; returns its result."""
    result = []
    thread = threading.Thread(target=lambda: result.append(function()))
    thread.start()
    thread.join()
    return result[0]


def cffi_floor(guest, iterations, single_step=False):
    """KVM_RUN through cffi and an exit-reason check, nothing else (under single-step, the
    DEBUG exits' pc too, to stop at the hlt)."""
    with Machine(serial_output=None) as machine:
        machine.load(guest_image(guest, iterations), mode="protected")
        vcpu = machine.vcpus[0]
        if single_step:
            vcpu.set_guest_debug(single_step=True)
        run_ioctl = libc.ffi.cast("int (*)(int, unsigned long, void *)", libc.lib.ioctl)
        fd, request, null, run = vcpu.fd, kvm_abi.KVM_RUN, libc.ffi.NULL, vcpu.run_struct
        io, debug = kvm_abi.KVM_EXIT_IO, kvm_abi.KVM_EXIT_DEBUG

        def loop():
            exits = 0
            start = time.perf_counter()
            while True:
                if run_ioctl(fd, request, null) < 0:
                    raise OSError(libc.ffi.errno, "KVM_RUN")
                exits += 1
                reason = run.exit_reason
                if reason != io and (reason != debug or run.debug.arch.pc == HLT_ADDR):
                    break
            return exits / (time.perf_counter() - start)

        return _on_vcpu_thread(loop)


def vmm_pio(guest, iterations):
    """The VMM's whole path: Machine.run, RunLoop, decode, PortBus, Uart16550."""
    with Machine(serial_output=None) as machine:
        machine.load(guest_image(guest, iterations), mode="protected")
        start = time.perf_counter()
        outcome = machine.run(timeout=600)
        elapsed = time.perf_counter() - start
        if outcome.kind != "halt" or machine.serial.bytes_written != iterations:
            raise RuntimeError(f"the PIO guest ended with {outcome!r} after {machine.serial.bytes_written} bytes")
        return (iterations + 1) / elapsed


def vmm_single_step(guest, iterations):
    """The VMM's run loop under KVM_GUESTDBG_SINGLESTEP, with a DEBUG handler that stops at the hlt."""
    with Machine(serial_output=None) as machine:
        machine.load(guest_image(guest, iterations), mode="protected")
        loop = machine.loops[0]
        exits = [0]

        def on_debug(exit):
            exits[0] += 1
            if exit.pc == HLT_ADDR:
                machine.stop(halted())

        def on_io(exit):
            exits[0] += 1
            io.pass_on(exit)

        loop.intercept(kvm_abi.KVM_EXIT_DEBUG, on_debug)
        io = loop.intercept(kvm_abi.KVM_EXIT_IO, on_io)
        machine.vcpus[0].set_guest_debug(single_step=True)
        start = time.perf_counter()
        outcome = machine.run(timeout=600)
        elapsed = time.perf_counter() - start
        if outcome.kind != "halt":
            raise RuntimeError(f"the single-stepped guest ended with {outcome!r}")
        return exits[0] / elapsed


def v2e_trace_rate(guest, iterations, trace_path=None):
    """Instructions per second the V2E engine records while the guest runs in a watched page
    (into a trace file when trace_path is given)."""
    from vmm.v2e import V2E, Decision
    with Machine(serial_output=None) as machine:
        machine.load(guest_image(guest, iterations), mode="protected")
        page = LOAD_ADDR & ~0xFFF
        with V2E(machine, [(page, page + 4096)], backend="stock", max_instructions=1 << 40, trace_path=trace_path,
                 on_event=lambda event: Decision.TRACE) as engine:
            start = time.perf_counter()
            outcome = machine.run(timeout=600)
            elapsed = time.perf_counter() - start
            engine.finish(outcome)
            if outcome.kind != "halt":
                raise RuntimeError(f"the traced guest ended with {outcome!r}")
            return engine.instructions / elapsed


# -- start-up ----------------------------------------------------------------------

def wall_and_peak_rss(args):
    """(seconds, peak RSS in bytes, exit status) of one process."""
    start = time.perf_counter()
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, usage.ru_maxrss * 1024, process.returncode


QEMU_BIOS_SOURCE = r"""
/* A 64 KiB BIOS image for QEMU: from the reset vector, print the line
 * hello_real prints on COM1 and leave through isa-debug-exit. */
        .code16
        .globl _start
        .org 0
_start:
        mov $0xf000, %ax
        mov %ax, %ds
        mov $message, %si
1:
        lodsb
        test %al, %al
        jz 2f
        mov $0x3f8, %dx
        out %al, %dx
        jmp 1b
2:
        xor %al, %al
        out %al, $0xf4
        hlt
message:
        .asciz "Hello from real mode!\n"
        .org 0xfff0
        ljmp $0xf000, $_start
        .org 0x10000
"""


def build_qemu_bios(workdir):
    source, obj, bios = (os.path.join(workdir, name) for name in ("bios.s", "bios.o", "bios.bin"))
    with open(source, "w") as out:
        out.write(QEMU_BIOS_SOURCE)
    subprocess.run(["as", "--32", "-o", obj, source], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-N", "-Ttext=0", "--oformat", "binary", "-o", bios, obj], check=True)
    return bios


def startup(rounds, workdir):
    cases = {
        "vmm run hello_real": [sys.executable, "-m", "vmm", "run", os.path.join(GUESTS, "hello_real.bin"),
                               "--mode", "real"],
        "vmm run hello_long": [sys.executable, "-m", "vmm", "run", os.path.join(GUESTS, "hello_long.bin")],
    }
    qemu = shutil.which("qemu-system-x86_64")
    if qemu:
        cases["qemu -accel kvm (same line, -bios)"] = [
            qemu, "-accel", "kvm", "-M", "pc", "-m", "128", "-nodefaults", "-display", "none", "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x4", "-bios", build_qemu_bios(workdir)]
    results = {}
    for _ in range(rounds):
        for name, args in cases.items():
            seconds, rss, status = wall_and_peak_rss(args)
            best = results.setdefault(name, {"seconds": seconds, "peak_rss_bytes": rss, "exit_status": status})
            best["seconds"] = min(best["seconds"], seconds)
            best["peak_rss_bytes"] = min(best["peak_rss_bytes"], rss)
    return results


# -- Linux boot --------------------------------------------------------------------

INIT_LINE = b"init: reached userspace"


def linux_assets(workdir):
    """(bzImage, vmlinux, initramfs) for the Linux boot figures."""
    from tests.linux_assets import Initramfs, busybox, stock_kernel
    kernel = stock_kernel()
    image = Initramfs()
    image.add_busybox(busybox())
    image.set_init(f"echo {INIT_LINE.decode()}")
    return kernel.vmlinuz, kernel.vmlinux(), image.write(os.path.join(workdir, "initrd.cpio"))


def timed_boot(args, timeout):
    """Run a boot; returns {seconds_to_init, seconds, peak_rss_bytes, exit_status, last_line}:
    seconds_to_init is None when /init's line never came, exit_status None on timeout."""
    start = time.perf_counter()
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    seen = {"init": None, "last": b""}

    def read():
        for line in process.stdout:
            if line.strip():
                seen["last"] = line.strip()
            if INIT_LINE in line and seen["init"] is None:
                seen["init"] = time.perf_counter() - start

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = start + timeout
    status = rss = None
    while time.perf_counter() < deadline:
        pid, wait_status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            status, rss = os.waitstatus_to_exitcode(wait_status), usage.ru_maxrss * 1024
            break
        time.sleep(0.02)
    if status is None:
        os.killpg(process.pid, 9)
        _, _, usage = os.wait4(process.pid, 0)
        rss = usage.ru_maxrss * 1024
    process.returncode = status
    reader.join(5)
    return {"seconds_to_init": seen["init"], "seconds": time.perf_counter() - start, "peak_rss_bytes": rss,
            "exit_status": status, "last_line": seen["last"][-160:].decode(errors="replace")}


def linux_boot(timeout, workdir):
    vmlinuz, vmlinux, initrd = linux_assets(workdir)
    append = "console=ttyS0 quiet"
    cases = {
        "vmm run bzImage": [sys.executable, "-m", "vmm", "run", str(vmlinuz), "--initrd", str(initrd),
                            "--append", append],
        "vmm run vmlinux (PVH)": [sys.executable, "-m", "vmm", "run", str(vmlinux), "--initrd", str(initrd),
                                  "--append", append],
    }
    qemu = shutil.which("qemu-system-x86_64")
    if qemu:
        for accel in ("kvm", "tcg"):
            cases[f"qemu -accel {accel} -kernel"] = [
                qemu, "-accel", accel, "-M", "pc", "-m", "128", "-nodefaults", "-display", "none", "-no-reboot",
                "-serial", "stdio", "-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", append]
    return {name: timed_boot(args, timeout) for name, args in cases.items()}


# -- the report --------------------------------------------------------------------

def best_of(rounds, measures):
    """Interleave the measures `rounds` times; the best (highest) rate of each."""
    best = {name: 0.0 for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            best[name] = max(best[name], measure())
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--exits", type=int, default=200_000, help="PIO exits per round (default: 200000)")
    parser.add_argument("--steps", type=int, default=50_000, help="single-stepped loop iterations (default: 50000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds, best kept (default: 5)")
    parser.add_argument("--linux-timeout", type=float, default=180,
                        help="seconds each Linux boot may take (default: 180; 0 skips the Linux figures)")
    parser.add_argument("--json", default=os.path.join(ROOT, "build", "bench.json"),
                        help="where to write the results (default: build/bench.json, which git ignores)")
    args = parser.parse_args(argv)
    install_kick_handler()
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as workdir:
        guest, program = build(workdir)
        pio = best_of(args.rounds, {
            "c": lambda: c_loop(program, guest, args.exits),
            "cffi_floor": lambda: cffi_floor(guest, args.exits),
            "vmm": lambda: vmm_pio(guest, args.exits),
        })
        step = best_of(args.rounds, {
            "c": lambda: c_loop(program, guest, args.steps, single_step=True),
            "cffi_floor": lambda: cffi_floor(guest, args.steps, single_step=True),
            "vmm": lambda: vmm_single_step(guest, args.steps),
            "v2e": lambda: v2e_trace_rate(guest, args.steps),
            "v2e_file": lambda: v2e_trace_rate(guest, args.steps, os.path.join(workdir, "trace.jsonl")),
        })
        # The last round's trace: 3 movs, `steps` turns of out, dec, jnz, and the hlt.
        trace_bytes = os.path.getsize(os.path.join(workdir, "trace.jsonl"))
        start = startup(max(args.rounds, 5), workdir)
        linux = linux_boot(args.linux_timeout, workdir) if args.linux_timeout > 0 else {}
    results = {
        "pio_exits_per_second": pio,
        "pio_ratio_vmm_to_c": pio["vmm"] / pio["c"],
        "pio_ratio_cffi_floor_to_c": pio["cffi_floor"] / pio["c"],
        "single_step_per_second": step,
        "single_step_ratio_vmm_to_c": step["vmm"] / step["c"],
        "single_step_ratio_v2e_to_c": step["v2e"] / step["c"],
        "single_step_ratio_v2e_file_to_c": step["v2e_file"] / step["c"],
        "v2e_ratio_file_to_counted": step["v2e_file"] / step["v2e"],
        "trace_bytes_per_instruction": trace_bytes / (3 * args.steps + 4),
        "single_step_ratio_cffi_floor_to_c": step["cffi_floor"] / step["c"],
        "startup": start,
        "linux_boot": linux,
        "parameters": {"exits": args.exits, "steps": args.steps, "rounds": args.rounds,
                       "cpus": os.cpu_count(), "load_average_at_start": load_at_start,
                       "load_average": os.getloadavg(), "c_helper": fastpath.lib is not None},
    }
    print(f"{'PIO exits/s':<44}{'rate':>12}{'ratio to C':>12}")
    for name, label in (("c", "C loop (KVM_RUN only)"), ("cffi_floor", "bare cffi loop"),
                        ("vmm", "VMM run loop + port bus + UART")):
        print(f"  {label:<42}{pio[name]:>12,.0f}{pio[name] / pio['c']:>12.2f}")
    print(f"{'single-step exits/s':<44}{'rate':>12}{'ratio to C':>12}")
    for name, label in (("c", "C loop"), ("cffi_floor", "bare cffi loop"), ("vmm", "VMM run loop, DEBUG handler"),
                        ("v2e", "V2E engine (instructions traced/s)"),
                        ("v2e_file", "V2E engine, into a trace file")):
        print(f"  {label:<42}{step[name]:>12,.0f}{step[name] / step['c']:>12.2f}")
    print(f"  {'into a file / counted':<42}{'':>12}{step['v2e_file'] / step['v2e']:>12.2f}")
    print(f"  {'trace bytes per instruction':<42}{results['trace_bytes_per_instruction']:>12.1f}")
    print(f"{'start-up (best of runs)':<44}{'wall s':>12}{'peak RSS MiB':>14}")
    for name, figures in start.items():
        print(f"  {name:<42}{figures['seconds']:>12.3f}{figures['peak_rss_bytes'] / (1 << 20):>14.1f}")
    if linux:
        print(f"{'Linux boot (Debian kernel, busybox /init)':<44}{'to /init s':>12}{'total s':>10}{'RSS MiB':>9}"
              f"{'status':>8}")
        for name, figures in linux.items():
            reached = f"{figures['seconds_to_init']:.2f}" if figures["seconds_to_init"] is not None else \
                f">{args.linux_timeout:g}"
            status = "timeout" if figures["exit_status"] is None else str(figures["exit_status"])
            print(f"  {name:<42}{reached:>12}{figures['seconds']:>10.2f}{figures['peak_rss_bytes'] / (1 << 20):>9.1f}"
                  f"{status:>8}")
            if figures["seconds_to_init"] is None:
                print(f"    last line: {figures['last_line']}")
    helper = "with the C helper" if fastpath.lib is not None else "without the C helper (Python path)"
    print(f"{helper}; load average {load_at_start[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end, "
          f"on {os.cpu_count()} CPUs; JSON in {args.json}")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as out:
        json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
