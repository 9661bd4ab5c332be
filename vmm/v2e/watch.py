"""The watched set: page-aligned guest-physical ranges whose execution V2E traps."""
from ..errors import BadInput
from ..x86.boot import BOOT_AREA
from ..x86.paging import PAGE_MASK, PAGE_SIZE


def parse_watch(text):
    """'GPA', 'GPA-END' (END exclusive) or 'GPA+LEN' -> (start, end); one page for a bare GPA."""
    try:
        if "+" in text:
            start_text, length_text = text.split("+", 1)
            start = int(start_text, 0)
            end = start + int(length_text, 0)
        elif "-" in text:
            start_text, end_text = text.split("-", 1)
            start, end = int(start_text, 0), int(end_text, 0)
        else:
            start = int(text, 0)
            end = start + PAGE_SIZE
    except ValueError:
        raise BadInput(f"watch range {text!r}: expected GPA, GPA-END or GPA+LEN (e.g. 0x200000+0x1000)") from None
    if start < 0 or end <= start:
        raise BadInput(f"watch range {text!r} is empty")
    if start % PAGE_SIZE or end % PAGE_SIZE:
        raise BadInput(f"watch range {text!r} ({start:#x}-{end:#x}) is not page aligned (4 KiB)")
    return start, end


def page_ranges(pages):
    """Sorted [start, end) ranges covering the given page addresses, adjacent pages merged."""
    ranges = []
    for page in sorted(pages):
        if ranges and ranges[-1][1] == page:
            ranges[-1][1] = page + PAGE_SIZE
        else:
            ranges.append([page, page + PAGE_SIZE])
    return [tuple(each) for each in ranges]


class WatchSet:
    """Non-overlapping page-aligned [start, end) ranges inside guest RAM. `pages` is a set the
    steppers read as it changes: pages can join and leave it (add, discard)."""

    def __init__(self, ranges, memory, mode=None, allow_empty=False):
        ranges = sorted(ranges)
        for start, end in ranges:
            if start % PAGE_SIZE or end % PAGE_SIZE or end <= start:
                raise BadInput(f"watched range {start:#x}-{end:#x} is not a non-empty page-aligned range")
            if not memory.contains(start, end - start):
                raise BadInput(f"watched range {start:#x}-{end:#x} is outside guest memory "
                               f"({memory.size:#x} bytes)")
            # Outside real mode the CPU walks the VMM's GDT and page tables there.
            if mode not in (None, "real") and start < BOOT_AREA[1] and BOOT_AREA[0] < end:
                raise BadInput(f"watched range {start:#x}-{end:#x} overlaps the VMM's GDT and page tables "
                               f"at {BOOT_AREA[0]:#x}-{BOOT_AREA[1]:#x}")
        for (start, end), (next_start, next_end) in zip(ranges, ranges[1:]):
            if next_start < end:
                raise BadInput(f"watched ranges {start:#x}-{end:#x} and {next_start:#x}-{next_end:#x} overlap")
        if not ranges and not allow_empty:
            raise BadInput("no watched range")
        self.pages = {page for start, end in ranges for page in range(start, end, PAGE_SIZE)}

    @property
    def ranges(self):
        return tuple(page_ranges(self.pages))

    def add(self, pages):
        self.pages.update(pages)

    def discard(self, pages):
        self.pages.difference_update(pages)

    def __contains__(self, gpa):
        return (gpa & PAGE_MASK) in self.pages
