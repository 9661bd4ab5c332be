"""What --unpack-user and V2E must report in user mode, as checks that return their problems
(an empty list: none): for guest_images/unpack_user.bin on either backend (the host's stock
KVM in tests/test_unpack_user.py, kvm-amd with and without the exec-trap patch in
tests/nested_linux.py), and for a UPX-packed program inside Linux (the flagship demo). Runs
where the tests run and inside the nested machine (standard library and the vmm package only).

    python3 unpack_user_cases.py layers DUMP_DIR | user-trace TRACE | layer-trace TRACE
    python3 unpack_user_cases.py upx DUMP_DIR UNPACKED_PROGRAM

prints `CHECK PASS|FAIL: ...` lines; exit status 1 on a problem."""
import json
import os
import sys
from dataclasses import dataclass

IMAGE = "unpack_user.bin"
RANGE = "0x200000+0x10000"          # the user programs' pages and the code they write (see the source)
WATCH = "0x200000+0x1000"           # the writer program's text, run by address spaces A and C
OUTPUT = (b"kernel: ran its own routine\nuser: report 0x00001001\nuser: report 0x00001002\n"
          b"user: report 0x00002002\nuser: report 0x00001003\nkernel: all address spaces exited\n")
EXIT_STATUS = 43                    # the kernel's test-exit write of 0x15
PAGE = 4096
USER_TEXT = 0x40000000
PAYLOAD_MOV_SIZE = 5                # mov $imm32, %edi (the payload's first instruction; see Layer.payload)


@dataclass(frozen=True)
class Layer:
    gva: int                        # the entry, at the start of the layer's only page
    gpa: int
    cr3: int
    space: int                      # the address space's number, in the order first seen in user mode
    seen_before: bool
    written_after_first_user_run: bool
    written_through_mapping: bool
    report: int                     # what its payload reports

    def payload(self):
        """The page as the layer's program wrote it: mov $report, %edi; mov $1, %eax; ud2; ret."""
        code = b"\xbf" + self.report.to_bytes(4, "little") + b"\xb8\x01\x00\x00\x00\x0f\x0b\xc3"
        return code + bytes(PAGE - len(code))


LAYERS = (
    # A writes into its buffer and calls it.
    Layer(0x40001000, 0x201000, 0x180000, 1, True, True, True, 0x1001),
    # B writes into the page the kernel ran its own routine from, handed to B.
    Layer(0x40001000, 0x203000, 0x188000, 2, True, True, True, 0x1002),
    # B writes through one mapping and runs through another, never written through.
    Layer(0x40003000, 0x204000, 0x188000, 2, True, True, False, 0x2002),
    # C starts in A's program text, which ran already: first seen at its layer.
    Layer(0x40001000, 0x205000, 0x190000, 3, False, False, True, 0x1003),
)


def layer_records(dump_dir):
    """The layer records of a dump directory, in order."""
    records = [json.loads(open(os.path.join(dump_dir, name)).read()) for name in os.listdir(dump_dir)
               if name.endswith(".json")]
    return sorted(records, key=lambda record: record["layer"])


def check_layers(dump_dir):
    """The dump directory of --unpack RANGE --unpack-user holds exactly LAYERS."""
    records = layer_records(dump_dir)
    if len(records) != len(LAYERS):
        return [f"expected {len(LAYERS)} layers, got {len(records)}: "
                f"{[(r['entry']['gva'], r['cr3']) for r in records]}"]
    problems = []
    for record, expected in zip(records, LAYERS):
        actual = (int(record["entry"]["gva"], 16), int(record["entry"]["gpa"], 16), int(record["cr3"], 16),
                  record["address_space"]["number"], record["address_space"]["seen_before"],
                  record["written_after_first_user_run"], record["written_through_mapping"], record["cpl"],
                  record["region"]["gva"], record["region"]["size"], record["region"]["pages"])
        wanted = (expected.gva, expected.gpa, expected.cr3, expected.space, expected.seen_before,
                  expected.written_after_first_user_run, expected.written_through_mapping, 3,
                  hex(expected.gva), PAGE, [hex(expected.gpa)])
        if actual != wanted:
            problems.append(f"layer {record['layer']}: expected {wanted}, got {actual}")
        with open(os.path.join(dump_dir, record["region"]["file"]), "rb") as dump:
            if dump.read() != expected.payload():
                problems.append(f"layer {record['layer']}: the dump is not the payload reporting {expected.report:#x}")
    return problems


def _events(path):
    from vmm.trace.reader import read_trace
    records = read_trace(path)
    return records, [record for record in records if record["type"] == "event"]


def check_user_trace(path):
    """The trace of --watch WATCH: address spaces A and C run the watched program text, each an
    event at CPL 3 with its own CR3, traced through the guest's page tables to the system call."""
    records, events = _events(path)
    starts = [(e["cpl"], e["cr3"], e["gpa"]) for e in events if int(e["rip"], 16) == USER_TEXT]
    problems = []
    if starts != [(3, "0x180000", "0x200000"), (3, "0x190000", "0x200000")]:
        every = [(e["event"], e["rip"], e["cpl"], e["cr3"], e["gpa"]) for e in events]
        leaves = [(r["event"], r["reason"], r.get("detail"), r.get("rip"), [i["rip"] for i in records
                   if i["type"] == "insn" and i["event"] == r["event"]]) for r in records if r["type"] == "leave"]
        problems.append(f"events at the program's start: expected A's and C's at CPL 3, got {starts} "
                        f"(every event: {every}; leaves: {leaves})")
    for event in events:
        if event["cr3"] != event["sregs"]["cr3"] or event["cpl"] != 3:
            problems.append(f"event {event['event']}: cpl {event['cpl']}, cr3 {event['cr3']} (sregs "
                            f"{event['sregs']['cr3']})")
        rips = [int(r["rip"], 16) for r in records if r["type"] == "insn" and r["event"] == event["event"]]
        if not rips or not all(USER_TEXT <= rip < USER_TEXT + PAGE for rip in rips):
            problems.append(f"event {event['event']}: {len(rips)} instructions, not all in the program text")
    return problems


def check_layer_trace(path):
    """The trace of --unpack RANGE --unpack-user --trace-layers: a layer record and an event
    at CPL 3 per layer, each event the payload's two instructions before its system call, whose
    ud2 faults (#UD: not recorded, it did not complete) and ends the event."""
    records, events = _events(path)
    expected = [(3, hex(layer.cr3), hex(layer.gva)) for layer in LAYERS]
    problems = []
    layers = [(r["cpl"], r["cr3"], r["region"]["gva"]) for r in records if r["type"] == "layer"]
    if layers != expected:
        problems.append(f"layer records: expected {expected}, got {layers}")
    if [(e["cpl"], e["cr3"], e["rip"]) for e in events] != expected:
        problems.append(f"events: expected {expected}, got {[(e['cpl'], e['cr3'], e['rip']) for e in events]}")
    leaves = {r["event"]: r for r in records if r["type"] == "leave"}
    for event in events:
        start = int(event["rip"], 16)
        rips = [int(r["rip"], 16) for r in records if r["type"] == "insn" and r["event"] == event["event"]]
        leave = leaves.get(event["event"], {})
        ended = (leave.get("reason"), leave.get("detail"))
        if rips != [start, start + PAYLOAD_MOV_SIZE] or ended != ("fault", "#UD"):
            problems.append(f"event {event['event']}: instructions at {[hex(rip) for rip in rips]}, ended by "
                            f"{ended} at rip {leave.get('rip')} ({leave.get('instructions')} traced of "
                            f"{leave.get('steps')} stepped); expected {[hex(start), hex(start + PAYLOAD_MOV_SIZE)]}, "
                            f"then ('fault', '#UD')")
    return problems


def check_upx(dump_dir, unpacked_path):
    """(problems, what was found) for the demo: one layer holds the text of the unpacked
    program (its segment with the entry point, as `upx -d` restores it) at its address, and
    every layer is in that program's address space (none for busybox or anything else)."""
    from vmm.loaders import elf
    with open(unpacked_path, "rb") as program:
        image = program.read()
    parsed = elf.parse(image, 1 << 47, unpacked_path)
    text = next(segment for segment in parsed.segments if segment.vaddr <= parsed.entry < segment.vaddr + segment.memsz)
    expected = image[text.offset:text.offset + text.filesz]
    records = layer_records(dump_dir)
    match = None
    for record in records:
        start = int(record["region"].get("gva", record["region"]["gpa"]), 16)
        if start <= text.vaddr and text.vaddr + text.filesz <= start + record["region"]["size"]:
            with open(os.path.join(dump_dir, record["region"]["file"]), "rb") as dump:
                data = dump.read()
            if data[text.vaddr - start:text.vaddr - start + text.filesz] == expected:
                match = record
    if match is None:
        return ([f"no layer holds the {text.filesz} bytes of the program's text at {text.vaddr:#x} "
                 f"({len(records)} layers: {[(r['entry']['rip'], r['cr3']) for r in records]})"], "")
    others = [record for record in records if record["address_space"]["cr3"] != match["address_space"]["cr3"]]
    problems = [f"layer {record['layer']} at rip {record['entry']['rip']} is in another address space "
                f"(cr3 {record['cr3']})" for record in others]
    found = (f"layer {match['layer']} of {len(records)} (CPL {match['cpl']}, cr3 {match['cr3']}, entry "
             f"{match['entry']['rip']}): the {text.filesz} bytes at {text.vaddr:#x} equal the text of the "
             f"unpacked program; every layer is in its address space")
    return problems, found


def main(argv):
    what, paths = argv[0], argv[1:]
    found = ""
    if what == "upx":
        problems, found = check_upx(*paths)
    else:
        problems = {"layers": check_layers, "user-trace": check_user_trace,
                    "layer-trace": check_layer_trace}[what](*paths)
    for problem in problems:
        print(f"CHECK FAIL {what}: {problem}")
    if not problems:
        print(f"CHECK PASS {what}{': ' + found if found else ''}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
