"""The V2E parts of `vmm run`: --watch, --watch-symbol, --trace, --backend, --max-instructions,
--tsc-per-step."""
import argparse
import os
import sys

from ..errors import BadInput
from ..loaders import elf
from ..trace.cli import positive_int
from ..trace.format import plural
from ..x86.paging import PAGE_MASK, PAGE_SIZE
from .backends import BACKENDS
from .engine import DEFAULT_MAX_INSTRUCTIONS, DEFAULT_TSC_PER_STEP, V2E
from .watch import page_ranges, parse_watch


def _count(text):
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}") from None
    if not 0 <= value < 1 << 32:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2^32 - 1, got {text!r}")
    return value


def _watch_range(text):
    try:
        return parse_watch(text)
    except BadInput as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_run_options(run):
    group = run.add_argument_group("V2E (trap and trace execution of watched pages)")
    group.add_argument("--watch", type=_watch_range, action="append", default=[], metavar="GPA[-END|+LEN]",
                       help="watch guest-physical pages (page aligned, repeatable; a bare GPA is one page)")
    group.add_argument("--watch-symbol", action="append", default=[], metavar="NAME",
                       help="watch the pages of an ELF image's symbol (repeatable)")
    group.add_argument("--trace", metavar="PATH", help="write the V2E trace (JSON Lines) to PATH")
    group.add_argument("--backend", choices=BACKENDS, default="auto",
                       help="auto (the exec-trap kernel patch when present, else stock), patched or stock")
    group.add_argument("--max-instructions", type=positive_int, default=DEFAULT_MAX_INSTRUCTIONS, metavar="N",
                       help=f"instructions recorded per event at most; the rest of the event is stepped "
                            f"unrecorded (default: {DEFAULT_MAX_INSTRUCTIONS})")
    group.add_argument("--tsc-per-step", type=_count, default=DEFAULT_TSC_PER_STEP, metavar="CYCLES",
                       help=f"TSC cycles the guest sees a traced instruction take (default: {DEFAULT_TSC_PER_STEP})")


def attach(machine, args, stack, image, **engine_options):
    """Start V2E on a machine loaded with `image` when --watch or --watch-symbol was given;
    the stack writes the trace's summary. engine_options: more of V2E's (the callbacks...)."""
    ranges = list(args.watch)
    symbol_pages = _symbol_pages(args.watch_symbol, image, machine.memory.size, args.image)
    ranges += page_ranges(page for page in symbol_pages
                          if not any(start <= page < end for start, end in args.watch))
    if not ranges:
        if args.trace and args.unpack is None:
            raise BadInput("--trace needs at least one --watch range, --watch-symbol or --unpack")
        return None
    engine = V2E(machine, ranges, backend=args.backend, trace_path=args.trace,
                 max_instructions=args.max_instructions, tsc_per_step=args.tsc_per_step,
                 image_path=os.path.abspath(args.image), image=image, **engine_options)
    stack.callback(_close, engine, args.trace)
    return engine


def _symbol_pages(symbols, image, memory_size, name):
    """The guest-physical pages the ELF symbols occupy (a symbol without a size: its first byte)."""
    if not symbols:
        return set()
    if not elf.is_elf(image):
        raise BadInput(f"--watch-symbol needs an ELF image; {name} is not an ELF file")
    segments = elf.parse(image, memory_size, name).segments
    pages = set()
    for symbol in symbols:
        value, size = elf.find_symbol(image, symbol, name)
        start = elf.physical_address(value, segments)
        if start is None:
            raise BadInput(f"{name}: symbol {symbol!r} at {value:#x} is outside every loaded segment")
        # st_size comes from the file: a symbol may not claim more than guest RAM.
        if start + max(size, 1) > memory_size:
            raise BadInput(f"{name}: symbol {symbol!r} at {start:#x} of {size:#x} bytes runs past the end "
                           f"of guest memory ({memory_size:#x} bytes)")
        pages.update(range(start & PAGE_MASK, start + max(size, 1), PAGE_SIZE))
    return pages


def _close(engine, trace_path):
    engine.close()
    where = f"; trace in {trace_path}" if trace_path else ""
    print(f"vmm: v2e: {plural(engine.events, 'event')}, {plural(engine.instructions, 'instruction')} traced "
          f"({engine.backend.name} backend){where}", file=sys.stderr)
