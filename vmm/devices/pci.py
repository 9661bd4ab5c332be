"""PCI configuration mechanism #1 (ports 0xcf8-0xcff) on a bus with no devices.

The address register at 0xcf8 keeps what the guest writes (as on a PC, where
firmware probes for the mechanism by reading it back); every configuration
read through 0xcfc-0xcff answers all-ones, i.e. "no device at this address".
"""
import threading

PCI_CONFIG_ADDRESS = 0xCF8
PCI_CONFIG_DATA = 0xCFC
PORT_COUNT = 8


class EmptyPciHost:
    def __init__(self):
        self._lock = threading.Lock()
        self.address = 0

    def read(self, offset, size):
        if offset == 0 and size == 4:
            with self._lock:
                return self.address
        return (1 << (8 * size)) - 1

    def write(self, offset, size, value):
        if offset == 0 and size == 4:
            with self._lock:
                self.address = value & 0x80FFFFFC
