"""PCI configuration mechanism #1 (ports 0xcf8-0xcff) on a bus that holds only the host
bridge, as QEMU's i440FX answers for it at 00:00.0 (vendor 8086, device 1237, class 0600).

The address register at 0xcf8 keeps what the guest writes (firmware and kernels probe for
the mechanism by reading it back, then look for a host bridge on bus 0 to trust it); the
host bridge's configuration space is read-only here, and every other device address
answers all-ones, i.e. "no device".
"""
import struct
import threading

PCI_CONFIG_ADDRESS = 0xCF8
PCI_CONFIG_DATA = 0xCFC
PORT_COUNT = 8
CONFIG_ENABLE = 0x80000000
HOST_BRIDGE_ADDRESS = 0x80000000           # bus 0, device 0, function 0
CONFIG_SPACE_SIZE = 256

# Vendor and device id, command, status, revision, class code (host bridge), header type 0.
HOST_BRIDGE_CONFIG = struct.pack("<HHHHB3sBBBB", 0x8086, 0x1237, 0x0006, 0x0280, 0x02,
                                 bytes([0x00, 0x00, 0x06]), 0, 0, 0, 0).ljust(CONFIG_SPACE_SIZE, b"\0")


class PciHost:
    def __init__(self):
        self._lock = threading.Lock()
        self.address = 0

    def read(self, offset, size):
        with self._lock:
            if offset == 0 and size == 4:
                return self.address
            if offset < 4 or self.address & 0xFFFFFF00 != HOST_BRIDGE_ADDRESS:
                return (1 << (8 * size)) - 1
            register = (self.address & 0xFC) + offset - 4
            return int.from_bytes(HOST_BRIDGE_CONFIG[register:register + size], "little")

    def write(self, offset, size, value):
        if offset == 0 and size == 4:
            with self._lock:
                self.address = value & 0x80FFFFFC
