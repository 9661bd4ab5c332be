"""QEMU's pvpanic ISA device (port 0x505): a guest kernel's pvpanic driver writes to it when
the kernel panics. Reading it gives the events the device supports."""
PVPANIC_PORT = 0x505
PVPANIC_PANICKED = 1 << 0
PVPANIC_CRASH_LOADED = 1 << 1   # a crash kernel took over: the guest goes on running


class PvPanic:
    def __init__(self, on_panic):
        self._on_panic = on_panic   # called once the guest reports a panic

    def read(self, offset, size):
        return PVPANIC_PANICKED | PVPANIC_CRASH_LOADED

    def write(self, offset, size, value):
        if value & PVPANIC_PANICKED:
            self._on_panic()
