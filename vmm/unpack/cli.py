"""The unpacking parts of `vmm run`: --unpack [RANGE ...] --dump-dir DIR --max-layers N."""
import argparse
import os
import sys

from ..errors import BadInput
from ..v2e.watch import parse_watch
from .engine import DEFAULT_MAX_LAYERS, Unpacker
from .user import UserUnpacker


def _range(text):
    try:
        return parse_watch(text)
    except BadInput as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _layers(text):
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid layer count {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def add_run_options(run):
    group = run.add_argument_group("unpacking (catch every page written and then executed)")
    group.add_argument("--unpack", type=_range, nargs="*", metavar="GPA-END|GPA+LEN",
                       help="track writes and execution of these guest-physical ranges (default: all guest "
                            "RAM but the VMM's GDT and page tables); each page written then executed is a layer")
    group.add_argument("--dump-dir", metavar="DIR", help="where each layer's region is dumped (needs --unpack)")
    group.add_argument("--max-layers", type=_layers, default=DEFAULT_MAX_LAYERS, metavar="N",
                       help=f"end the unpacking analysis after N layers; the guest runs on (default: {DEFAULT_MAX_LAYERS})")
    group.add_argument("--trace-layers", action="store_true",
                       help="trace each layer from its entry until it leaves its region (V2E), into --trace")
    group.add_argument("--unpack-user", action="store_true",
                       help="report only code run in user mode (CPL 3) that was written after its address space "
                            "first ran in user mode (a process unpacking itself), not what the kernel loaded or runs")


def attach(machine, args, stack, image, on_layer=None):
    """Start the unpacker when --unpack was given (the machine loaded with `image`); the stack
    prints its summary at the end. on_layer(vcpu, record): also told of each layer (after its
    line is printed), on the vCPU's thread."""
    if args.unpack is None:
        if args.dump_dir:
            raise BadInput("--dump-dir needs --unpack")
        if args.unpack_user:
            raise BadInput("--unpack-user needs --unpack")
        return None
    if not args.dump_dir:
        raise BadInput("--unpack needs --dump-dir DIR")
    if args.watch or args.watch_symbol:
        raise BadInput("--unpack and --watch track the same pages differently: use one of them")
    if args.trace_layers and not args.trace:
        raise BadInput("--trace-layers needs --trace PATH")
    tracer = None
    if args.trace:
        from ..v2e.engine import V2E   # the engine only for a run that traces
        tracer = V2E(machine, [], backend=None, trace_path=args.trace, max_instructions=args.max_instructions,
                     tsc_per_step=args.tsc_per_step, image_path=os.path.abspath(args.image), image=image)
        stack.callback(tracer.close)
    kind = UserUnpacker if args.unpack_user else Unpacker
    unpacker = kind(machine, args.dump_dir, args.unpack, backend=args.backend, max_layers=args.max_layers,
                    on_layer=lambda vcpu, record: _on_layer(vcpu, record, args.max_layers, on_layer),
                    tracer=tracer, trace_layers=args.trace_layers)
    stack.callback(_close, unpacker)
    return unpacker


def _on_layer(vcpu, record, max_layers, then):
    _layer_line(record, max_layers)
    if then is not None:
        then(vcpu, record)


def _layer_line(record, max_layers):
    entry, region = record["entry"], record["region"]
    if "address_space" in record:
        where = (f"CPL {record['cpl']}, cr3 {record['cr3']}, address space {record['address_space']['number']}), "
                 f"{region['size'] // 4096} page(s) from linear {region['gva']}")
    else:
        where = f"{region['size'] // 4096} page(s) from {region['gpa']}"
    print(f"vmm: unpack: layer {record['layer']} at rip {entry['rip']} (gpa {entry['gpa']}"
          f"{', ' if 'address_space' in record else '), '}{where} -> {region['file']}", file=sys.stderr)
    if record["layer"] == max_layers:
        print(f"vmm: unpack: {max_layers} layers: the unpacking analysis ends here, the guest runs on",
              file=sys.stderr)


def _close(unpacker):
    unpacker.close()
    summary = unpacker.summary()
    if "address_spaces" in summary:
        print(f"vmm: unpack: {summary['layers']} user-mode layer(s) in {summary['address_spaces']} address space(s) "
              f"seen in user mode ({summary['backend']} backend), dumps in {summary['dump_dir']}", file=sys.stderr)
    else:
        print(f"vmm: unpack: {summary['layers']} layer(s) ({summary['backend']} backend), dumps in "
              f"{summary['dump_dir']}", file=sys.stderr)

