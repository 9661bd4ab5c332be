"""A test-exit device compatible with QEMU's isa-debug-exit.

A write of value V ends the run with process exit status (V << 1) | 1, as
`qemu-system-x86_64 -device isa-debug-exit,iobase=0xf4,iosize=0x04` does.
"""
DEFAULT_IOBASE = 0xF4
DEFAULT_IOSIZE = 4


def exit_status(value):
    """The process exit status QEMU gives for a written value (an exit status has 8 bits)."""
    return ((value << 1) | 1) & 0xFF


class DebugExit:
    def __init__(self, on_exit):
        self._on_exit = on_exit  # called with the written value

    def read(self, offset, size):
        return (1 << (8 * size)) - 1

    def write(self, offset, size, value):
        self._on_exit(value)
