"""The gdb parts of the command line: `vmm run --gdb ... [--gdb-wait] [--gdb-on-event]`."""
import argparse
import sys

from ..errors import BadInput
from ..loaders import elf

# The stub's modules are imported when --gdb asks for them: a run without it does not wait.


def _endpoint(text):
    from .server import parse_endpoint
    try:
        return parse_endpoint(text)
    except BadInput as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_run_options(run):
    group = run.add_argument_group("gdb (a GDB remote stub: threads are vCPUs)")
    group.add_argument("--gdb", type=_endpoint, metavar="tcp:[HOST:]PORT|unix:PATH",
                       help="listen for gdb (`target remote`); TCP on 127.0.0.1 unless HOST is given")
    group.add_argument("--gdb-wait", action="store_true",
                       help="hold every vCPU at its first instruction until gdb continues")
    group.add_argument("--gdb-on-event", action="store_true",
                       help="stop into gdb at each V2E event (with --watch or `monitor v2e watch`) and each "
                            "unpacking layer (with --unpack)")


class Debugger:
    """The stub of one run: the host probe, execution control, the server and its monitor."""

    def __init__(self, machine, args, image):
        from .control import Controller
        from .monitor import Monitor
        from .probe import probe
        from .server import Server, listen
        from .watching import Watching
        self._verbose = args.verbose
        self.host = probe(machine.kvm)
        self._closed = False
        self.controller = Controller(machine, self.host, self.log)
        self._stop_on_events = args.gdb_on_event
        self.watching = Watching(machine, args.backend, args.max_instructions, self._on_event,
                                 self.controller.on_step)
        # gdb loads an ELF64 file as x86-64 and refuses any other description: such an image
        # gets the 64-bit one whatever mode its code starts in.
        image_bits = 64 if elf.is_elf(image) and elf.elf_class(image) == 64 else None
        try:
            self.server = Server(self.controller, Monitor(self.controller, self.watching),
                                 listen(*args.gdb), self.log, image_bits)
        except BaseException:
            self.controller.close()
            raise
        self._wait = args.gdb_wait

    def log(self, message, always=False):
        if always or self._verbose:
            print(f"vmm: gdb: {message}", file=sys.stderr, flush=True)

    def _on_event(self, event):
        self.controller.on_event(event, self._stop_on_events)

    def on_layer(self, vcpu, record):
        self.controller.on_layer(vcpu, record, self._stop_on_events)

    @property
    def v2e_callbacks(self):
        # The trap re-armed as soon as an event ends: the debugger's breakpoints are suspended
        # while V2E steps.
        return {"on_event": self._on_event, "on_step": self.controller.on_step, "rearm_after_steps": 0}

    def start(self, engine):
        self.watching.adopt(engine)
        self.controller.watched = self.watching.watched
        self.log(f"this host: {self.host.describe()}")
        if not any(self.host.int3.values()):
            self.log("int3 never reaches the VMM: breakpoints live in the four debug registers only")
        elif not all(self.host.int3.values()):
            modes = ", ".join(mode for mode, how in self.host.int3.items() if how is None)
            self.log(f"int3 does not reach the VMM in {modes} mode: breakpoints there live in the four "
                     f"debug registers only")
        if not self.host.data_breakpoints:
            self.log("debug registers do not trigger on data: write watchpoints single-step every vCPU "
                     "and compare the watched bytes (slow); read and access watchpoints are refused")
        if self._wait:
            self.controller.hold_at_start()
        self.server.start()
        self.log(f"{'waiting for gdb' if self._wait else 'listening'} on {self.server.address}", always=True)

    def close(self):
        if self._closed:
            return
        self._closed = True
        self.server.close()
        self.watching.close()
        self.controller.close()


def attach(machine, args, stack, image):
    """The stub for a machine loaded with `image` when --gdb was given (the stack closes it),
    else None."""
    if args.gdb is None:
        if args.gdb_wait or args.gdb_on_event:
            raise BadInput("--gdb-wait and --gdb-on-event need --gdb")
        return None
    debugger = Debugger(machine, args, image)
    stack.callback(debugger.close)
    return debugger


def v2e_callbacks(debugger):
    """What the V2E engine of the command line calls, so the stub sees its events."""
    return {} if debugger is None else debugger.v2e_callbacks


def unpack_callbacks(debugger):
    """What the unpacking engine of the command line calls, so the stub sees its layers."""
    return {} if debugger is None else {"on_layer": debugger.on_layer}


def start(debugger, engine, stack):
    """Serve gdb once the engine (or None) is set up; the stub then closes before the engine."""
    if debugger is not None:
        stack.callback(debugger.close)
        debugger.start(engine)
