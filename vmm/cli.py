"""The `vmm` command line."""
import argparse
import os
import signal
import sys
import time

from . import __doc__ as package_doc
from . import loaders
from .devices.serial import SerialInput
from .errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED, BadInput, VmmError
from .loaders.flat import read_image
from .machine import DEFAULT_MEM, MAX_MEM, Machine, Terminated, pc
from .gdb import cli as gdb_cli
from .trace import cli as trace_cli
from .unpack import cli as unpack_cli
from .v2e import cli as v2e_cli
from .version import PrintVersion
from .x86 import boot

EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug in the VMM itself
MAX_SMP = 64
ON_REBOOT = ("exit", "restart")

_SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text):
    """'128M', '1G', '65536', '0x10000' -> bytes."""
    stripped = text.strip().upper().removesuffix("B").removesuffix("I")
    suffix = stripped[-1:] if stripped[-1:] in "KMG" else ""
    try:
        number = int(stripped[:len(stripped) - len(suffix)], 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (examples: 64M, 1G, 0x100000)") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return number * _SIZE_SUFFIXES[suffix]


def parse_address(text):
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid address {text!r} (examples: 0x7c00, 1048576)") from None
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f"address {text!r} is out of range")
    return value


def parse_timeout(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid timeout {text!r} (seconds, e.g. 5 or 0.5)") from None
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError(f"timeout must be positive, got {text!r}")
    return value


def parse_smp(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid vCPU count {text!r}") from None
    if not 1 <= value <= MAX_SMP:
        raise argparse.ArgumentTypeError(f"vCPU count must be between 1 and {MAX_SMP}, got {text!r}")
    return value


def parse_serial(text):
    if text == "stdio" or text == "none":
        return text
    if text.startswith("file:") and len(text) > 5:
        return text
    raise argparse.ArgumentTypeError(f"invalid serial backend {text!r} (stdio, none or file:PATH)")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise BadInput(f"{message} (see '{self.prog} --help')")


def build_parser():
    parser = _Parser(prog="vmm", description=package_doc)
    parser.add_argument("--version", action=PrintVersion)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    run = commands.add_parser("run", help="boot a guest image")
    run.add_argument("image", help="the guest image: a flat binary, a static ELF executable, a multiboot kernel, "
                                   "a Linux bzImage or an ELF kernel with a PVH entry (vmlinux)")
    run.add_argument("--format", choices=loaders.FORMATS, default="auto",
                     help="image format (default: auto: Linux setup header, else multiboot header, else ELF "
                          "(pvh with a PVH entry note), else flat)")
    run.add_argument("--mode", choices=boot.MODES,
                     help="CPU mode at entry (default: long; ELF32 protected; multiboot always protected)")
    run.add_argument("--load-addr", type=parse_address, metavar="ADDR",
                     help="guest-physical load address (default: 0x7c00 real, 0x100000 otherwise)")
    run.add_argument("--entry", type=parse_address, metavar="ADDR", help="entry point (default: load address)")
    run.add_argument("--machine", choices=pc.MACHINES,
                     help="pc: in-kernel irqchip and PIT, fw_cfg, PCI, COM1 on IRQ 4 (default for ELF and "
                          "multiboot); bare: RAM and the VMM's ports only (default for flat images)")
    run.add_argument("--smp", type=parse_smp, default=1, metavar="N",
                     help=f"number of vCPUs, 1-{MAX_SMP} (more than one needs --machine pc)")
    run.add_argument("--append", default="", metavar="CMDLINE",
                     help="kernel command line (Linux: as given; multiboot: after the image name)")
    run.add_argument("--initrd", action="append", default=[], metavar="FILE",
                     help="Linux: the initial RAM disk (several are concatenated); multiboot: a module "
                          "'FILE [ARGS]' (repeatable, in order)")
    run.add_argument("--on-reboot", choices=ON_REBOOT, default="exit",
                     help="when the guest resets the machine: exit (status 16, default) or restart it "
                          "(boot the same image again)")
    run.add_argument("--stats", action="store_true", help="print exit statistics on stderr at the end")
    run.add_argument("--stats-json", metavar="PATH", help="write exit statistics as JSON to PATH")
    run.add_argument("--mem", type=parse_size, default=DEFAULT_MEM, metavar="SIZE",
                     help=f"guest RAM (default: {DEFAULT_MEM >> 20}M, at most {MAX_MEM >> 30}G)")
    run.add_argument("--serial", type=parse_serial, default="stdio", metavar="BACKEND",
                     help="COM1 output: stdio, none or file:PATH (default: stdio)")
    run.add_argument("--serial-input", metavar="PATH",
                     help="COM1 input: a file, or - for stdin (default: none)")
    run.add_argument("--timeout", type=parse_timeout, metavar="SECONDS", help="stop the guest after this long")
    run.add_argument("--verbose", "-v", action="store_true", help="report the run's end and unclaimed accesses")
    run.add_argument("--hide-hypervisor", action="store_true",
                     help="CPUID without the hypervisor bit and the hypervisor leaves (no kvmclock)")
    v2e_cli.add_run_options(run)
    unpack_cli.add_run_options(run)
    gdb_cli.add_run_options(run)
    run.set_defaults(handler=command_run)
    check = commands.add_parser("doctor", help="check that this host can run the VMM")
    check.add_argument("--json", action="store_true", help="print the checks and facts as JSON")
    check.set_defaults(handler=_command_doctor)
    trace_cli.add_trace_command(commands)
    return parser


def _command_doctor(args):
    from . import doctor   # imported when asked for: a run does not wait for it
    return doctor.command_doctor(args)


def _open_serial_output(spec, stack):
    if spec == "stdio":
        return sys.stdout.buffer
    if spec == "none":
        return None
    path = spec[len("file:"):]
    try:
        return stack.enter_context(open(path, "wb"))
    except OSError as error:
        raise BadInput(f"{path}: cannot write serial output: {error.strerror}") from None


def _open_serial_input(path, stack):
    if path is None:
        return None
    if path == "-":
        return SerialInput(sys.stdin.buffer)
    try:
        return SerialInput(stack.enter_context(open(path, "rb")))
    except OSError as error:
        raise BadInput(f"{path}: cannot read serial input: {error.strerror}") from None


def _print_unclaimed(machine):
    for title, counter in (("unclaimed port reads", machine.ports.unclaimed_reads),
                           ("unclaimed port writes", machine.ports.unclaimed_writes),
                           ("unclaimed MMIO reads", machine.mmio.unclaimed_reads),
                           ("unclaimed MMIO writes", machine.mmio.unclaimed_writes)):
        if counter:
            items = ", ".join(f"{key:#x}: {count}" if isinstance(key, int) else f"{key}: {count}"
                              for key, count in sorted(counter.items(), key=lambda kv: str(kv[0])))
            print(f"vmm: {title}: {items}", file=sys.stderr)


def _open_stats_json(path, stack):
    """Opened before the run, so a bad path fails before the guest runs."""
    if path is None:
        return None
    try:
        return stack.enter_context(open(path, "w"))
    except OSError as error:
        raise BadInput(f"{path}: cannot write statistics: {error.strerror}") from None


def command_run(args):
    from contextlib import ExitStack
    with ExitStack() as stack:
        output = _open_serial_output(args.serial, stack)
        serial_input = _open_serial_input(args.serial_input, stack)
        stats_json = _open_stats_json(args.stats_json, stack)
        image = read_image(args.image, args.mem)
        image_format = loaders.detect(image) if args.format == "auto" else args.format
        machine_type = args.machine or ("bare" if image_format == "flat" else "pc")
        if args.smp > 1 and machine_type != "pc":
            raise BadInput("--smp needs --machine pc (the in-kernel LAPICs start the other vCPUs)")
        if args.on_reboot == "restart" and (args.watch or args.watch_symbol or args.unpack is not None
                                            or args.gdb is not None):
            raise BadInput("--on-reboot restart cannot be combined with --watch, --unpack or --gdb (a restart is "
                           "a new machine)")
        if image_format in loaders.KERNEL_FORMATS:
            modules, initrd = (), loaders.read_initrd(args.initrd, args.mem)
        else:
            modules, initrd = loaders.read_modules(args.initrd, args.mem), b""
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        remaining = args.timeout
        while True:
            with ExitStack() as run_stack:
                outcome, machine, exit_stats = _run_once(args, run_stack, image, image_format, machine_type,
                                                         modules, initrd, output, serial_input, remaining)
                if outcome.kind == "reboot" and args.on_reboot == "restart":
                    if args.verbose:
                        print("vmm: the guest reset the machine: restarting it", file=sys.stderr)
                    if deadline is not None:
                        remaining = max(deadline - time.monotonic(), 1e-3)
                    continue
                if args.stats:
                    print(exit_stats.table(), file=sys.stderr)
                if stats_json is not None:
                    exit_stats.write_json(stats_json)
                if outcome.report:
                    print(outcome.report, file=sys.stderr)
                if outcome.kind not in ("halt", "test-exit", "done", "poweroff") or args.verbose:
                    print(f"vmm: {outcome.message}", file=sys.stderr)
                if args.verbose:
                    _print_unclaimed(machine)
                return outcome.exit_status


def _run_once(args, stack, image, image_format, machine_type, modules, initrd, output, serial_input, timeout):
    """Build the machine, load the image, run it; returns (outcome, machine, exit statistics)."""
    machine = stack.enter_context(Machine(args.mem, output, serial_input, vcpus=args.smp,
                                          kvm_path=os.environ.get("VMM_KVM_DEVICE", "/dev/kvm"),
                                          machine_type=machine_type, hide_hypervisor=args.hide_hypervisor))
    loaders.boot(machine, image, image_format, args.image, args.mode, args.load_addr, args.entry,
                 args.append, modules, initrd)
    debugger = gdb_cli.attach(machine, args, stack, image)
    engine = v2e_cli.attach(machine, args, stack, image, **gdb_cli.v2e_callbacks(debugger))
    unpack_cli.attach(machine, args, stack, image, **gdb_cli.unpack_callbacks(debugger))
    gdb_cli.start(debugger, engine, stack)
    exit_stats = None
    if args.stats or args.stats_json:
        from .machine.stats import ExitStats
        exit_stats = ExitStats()
        for loop in machine.loops:
            exit_stats.attach(loop)
    return machine.run(timeout), machine, exit_stats


def _raise_terminated(signum, frame):
    raise Terminated()


def main(argv=None):
    signal.signal(signal.SIGTERM, _raise_terminated)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except VmmError as error:
        print(f"vmm: {error}", file=sys.stderr)
        return error.exit_status
    except KeyboardInterrupt:
        print("vmm: interrupted by SIGINT before the guest ran", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("vmm: interrupted by SIGTERM before the guest ran", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:
        # stdout closed under us (e.g. `vmm run ... | head`): nothing more to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BAD_INPUT
    except Exception as error:  # noqa: BLE001 - a VMM bug: one line, no traceback
        print(f"vmm: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_INTERNAL
