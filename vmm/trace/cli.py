"""`vmm trace show|stats|diff`. The commands stream the trace: memory stays the same whatever
its length. Bad input is one `vmm: PATH:LINE: what` line and exit status 2; `diff` exits 1
when the traces diverge."""
import argparse
import itertools
import sys

from ..errors import BadInput
from ..x86.registers import GENERAL_REGISTERS
from .format import IGNORE_MEMORY_BYTES, SYNTAXES

EXIT_DIVERGED = 1


def positive_int(text):
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def address_range(text):
    """'A' (that address), 'A-B' (B exclusive) or 'A+LEN' -> (start, end)."""
    try:
        if "+" in text:
            start, length = (int(part, 0) for part in text.split("+", 1))
            end = start + length
        elif "-" in text:
            start, end = (int(part, 0) for part in text.split("-", 1))
        else:
            start = int(text, 0)
            end = start + 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"address range {text!r}: expected A, A-B or A+LEN") from None
    if not 0 <= start < end <= 1 << 64:
        raise argparse.ArgumentTypeError(f"address range {text!r} is empty or outside 64 bits")
    return start, end


def _add_disassembly_options(parser):
    parser.add_argument("--syntax", choices=SYNTAXES, default="att",
                        help="disassembly syntax (default: att, as objdump and gdb print it)")
    parser.add_argument("--symbols", metavar="FILE",
                        help="an ELF file whose symbols name addresses (default: the traced image, if it is an "
                             "ELF file with symbols)")


def add_trace_command(commands):
    trace = commands.add_parser("trace", help="read V2E trace files")
    actions = trace.add_subparsers(dest="trace_command", metavar="ACTION", parser_class=type(trace))
    actions.required = True

    show = actions.add_parser("show", help="print a trace: events, page dumps, disassembled instructions")
    show.add_argument("path", help="a trace file written by `vmm run --trace`")
    show.add_argument("--max-instructions", type=positive_int, metavar="N",
                      help="show at most N instructions per event")
    show.add_argument("--event", type=positive_int, action="append", default=[], metavar="N",
                      help="only event N (repeatable)")
    show.add_argument("--rip", type=address_range, action="append", default=[], metavar="A-B",
                      help="only instructions at addresses A (inclusive) to B (exclusive); also A or A+LEN "
                           "(repeatable)")
    show.add_argument("--mnemonic", action="append", default=[], metavar="NAME",
                      help="only instructions with this mnemonic (repeatable; in AT&T syntax `mov` also "
                           "matches movl, movq...)")
    show.add_argument("--no-pages", action="store_true", help="leave out the page dumps")
    show.add_argument("--json", action="store_true",
                      help="print the selected records as JSON Lines, instructions with all their registers "
                           "and their disassembly")
    _add_disassembly_options(show)
    show.set_defaults(handler=command_show)

    stats = actions.add_parser("stats", help="count a trace: per event, code pages, hot blocks, mnemonics")
    stats.add_argument("path", help="a trace file written by `vmm run --trace`")
    stats.add_argument("--top", type=positive_int, default=10, metavar="N",
                       help="how many of the hottest basic blocks to list (default: 10)")
    _add_disassembly_options(stats)
    stats.set_defaults(handler=command_stats)

    diff = actions.add_parser("diff", help="the first divergence between two traces of the same guest")
    diff.add_argument("a", help="a trace file")
    diff.add_argument("b", help="another trace file of the same guest")
    diff.add_argument("--context", type=positive_int, default=3, metavar="N",
                      help="equal instructions shown before the divergence (default: 3)")
    diff.add_argument("--ignore", action="append", default=[], choices=GENERAL_REGISTERS + (IGNORE_MEMORY_BYTES,),
                      metavar="REGISTER", help="leave a register out of the comparison, or with `mem` the bytes of "
                      "memory operands (repeatable)")
    _add_disassembly_options(diff)
    diff.set_defaults(handler=command_diff)


def _warn(text):
    print(f"vmm: warning: {text}", file=sys.stderr)


def _open(path):
    """(reader, its records from the header on, the header) for a trace path."""
    from .reader import TraceReader
    reader = TraceReader(path)
    records = iter(reader)
    header = next(records)
    return reader, itertools.chain([header], records), header


def _symbols(args, header):
    from . import symbols
    if args.symbols:
        return symbols.from_file(args.symbols)
    table, warning = symbols.from_header(header)
    if warning:
        _warn(warning)
    return table


def _disassembler(args, header):
    from .disasm import Disassembler
    return Disassembler(args.syntax, header.cpu_vendor)


def _finish(reader, disassembler):
    """The end of a command's reading: a disassembler's problem as a warning, a cut-short
    last line as the error."""
    sys.stdout.flush()
    if disassembler.problem:
        _warn(disassembler.problem)
    if reader.truncated:
        line, what = reader.truncated
        raise BadInput(f"{reader.path}:{line}: {what}")


def command_show(args):
    from .disasm import Lookahead
    from .show import Selection, Show
    reader, records, header = _open(args.path)
    disassembler = _disassembler(args, header)
    lookahead = Lookahead(args.path, disassembler)
    selection = Selection(frozenset(args.event), tuple(args.rip), frozenset(args.mnemonic), args.max_instructions)
    show = Show(sys.stdout.write, args.path, lookahead, _symbols(args, header), selection, args.json,
                not args.no_pages)
    try:
        show.run(records)
    finally:
        lookahead.close()
        sys.stdout.flush()
    show.finish()
    _finish(reader, disassembler)
    return 0


def command_stats(args):
    from .stats import Statistics
    reader, records, header = _open(args.path)
    disassembler = _disassembler(args, header)
    statistics = Statistics(sys.stdout.write, args.path, _symbols(args, header))
    try:
        statistics.run(records)
    finally:
        sys.stdout.flush()
    statistics.report(disassembler, args.top)
    _finish(reader, disassembler)
    return 0


def command_diff(args):
    from .diff import compare
    reader_a, records_a, header_a = _open(args.a)
    reader_b, records_b, _ = _open(args.b)
    disassembler = _disassembler(args, header_a)
    diverged = compare(sys.stdout.write, (args.a, records_a), (args.b, records_b), disassembler,
                       _symbols(args, header_a), args.context, frozenset(args.ignore))
    for reader in (reader_a, reader_b):
        _finish(reader, disassembler)
    return EXIT_DIVERGED if diverged else 0
