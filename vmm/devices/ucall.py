"""The test-report port: a guest tells the host what it saw (ucall style).

The guest fills a struct ucall in its memory and writes the struct's
guest-physical address to UCALL_PORT with a 32-bit `out`:

    struct ucall { u32 cmd; u32 line; u64 args[4]; };

cmd UCALL_REPORT records args; UCALL_ASSERT records a failed assertion
(args[0] = address of a NUL-terminated message, args[1] = expected,
args[2] = actual) and ends the run; UCALL_DONE ends the run successfully.
Every address the guest passes is checked against guest RAM.
"""
import struct
from dataclasses import dataclass

UCALL_PORT = 0x1000
UCALL_SIZE = 40
UCALL_REPORT, UCALL_ASSERT, UCALL_DONE = 1, 2, 3
MAX_MESSAGE = 256
MAX_RECORDED = 1 << 16


@dataclass(slots=True)
class Ucall:
    cmd: int
    line: int
    args: tuple
    message: str | None = None


class UcallPort:
    def __init__(self, memory, on_assert, on_done, on_bad):
        self._memory = memory
        self._on_assert = on_assert  # called with the Ucall
        self._on_done = on_done
        self._on_bad = on_bad        # called with a description of a malformed ucall
        self.reports = []

    def read(self, offset, size):
        return (1 << (8 * size)) - 1

    def write(self, offset, size, value):
        if offset != 0 or size != 4:
            self._on_bad(f"ucall write of {size} bytes at port offset {offset}")
            return
        if not self._memory.contains(value, UCALL_SIZE):
            self._on_bad(f"ucall structure at {value:#x} is outside guest RAM")
            return
        cmd, line, *args = struct.unpack("<II4Q", self._memory.read(value, UCALL_SIZE))
        call = Ucall(cmd, line, tuple(args))
        if cmd == UCALL_REPORT:
            if len(self.reports) < MAX_RECORDED:
                self.reports.append(call)
        elif cmd == UCALL_ASSERT:
            if self._memory.contains(args[0]):
                call.message = self._memory.read_cstring(args[0], MAX_MESSAGE).decode("utf-8", "replace")
            else:
                call.message = f"<message address {args[0]:#x} outside guest RAM>"
            self._on_assert(call)
        elif cmd == UCALL_DONE:
            self._on_done(call)
        else:
            self._on_bad(f"unknown ucall command {cmd}")
