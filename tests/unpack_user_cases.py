"""What --unpack-user must report for guest_images/unpack_user.bin, on either backend (the host's
stock KVM in tests/test_unpack_user.py, the exec-trap patch in tests/nested_linux.py)."""
from dataclasses import dataclass

IMAGE = "unpack_user.bin"
RANGE = "0x200000+0x10000"          # the user programs' pages and the code they write (see the source)
OUTPUT = (b"kernel: ran its own routine\nuser: report 0x00001001\nuser: report 0x00001002\n"
          b"user: report 0x00002002\nuser: report 0x00001003\nkernel: all address spaces exited\n")
EXIT_STATUS = 43                    # the kernel's test-exit write of 0x15
PAGE = 4096


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


def check_layer(record, expected, data):
    """Problems of one layer record and its dump against the expected layer (empty: none)."""
    actual = (int(record["entry"]["gva"], 16), int(record["entry"]["gpa"], 16), int(record["cr3"], 16),
              record["address_space"]["number"], record["address_space"]["seen_before"],
              record["written_after_first_user_run"], record["written_through_mapping"], record["cpl"],
              record["region"]["gva"], record["region"]["size"], record["region"]["pages"])
    wanted = (expected.gva, expected.gpa, expected.cr3, expected.space, expected.seen_before,
              expected.written_after_first_user_run, expected.written_through_mapping, 3,
              hex(expected.gva), PAGE, [hex(expected.gpa)])
    problems = []
    if actual != wanted:
        problems.append(f"layer {record['layer']}: expected {wanted}, got {actual}")
    if data != expected.payload():
        problems.append(f"layer {record['layer']}: the dump is not the payload reporting {expected.report:#x}")
    return problems
