"""QEMU's firmware configuration device, legacy I/O interface (no DMA).

The guest writes a 16-bit item key to the selector port (0x510) and reads the
item's bytes one at a time from the data port (0x511); reads past the end of
an item, or of an item that does not exist, return 0, as in QEMU.
"""
import struct
import threading

FW_CFG_PORT_SEL = 0x510
FW_CFG_PORT_DATA = 0x511
PORT_COUNT = 2

FW_CFG_SIGNATURE = 0x00
FW_CFG_ID = 0x01
FW_CFG_RAM_SIZE = 0x03
FW_CFG_NB_CPUS = 0x05
FW_CFG_MAX_CPUS = 0x0F
FW_CFG_FILE_DIR = 0x19

SIGNATURE = b"QEMU"
FEATURE_TRADITIONAL = 1 << 0   # the I/O port interface (no DMA)


def pc_items(ram_size, cpu_count):
    """The items a QEMU PC machine of this size answers with (little-endian integers)."""
    return {
        FW_CFG_SIGNATURE: SIGNATURE,
        FW_CFG_ID: struct.pack("<I", FEATURE_TRADITIONAL),
        FW_CFG_RAM_SIZE: struct.pack("<Q", ram_size),
        FW_CFG_NB_CPUS: struct.pack("<H", cpu_count),
        FW_CFG_MAX_CPUS: struct.pack("<H", cpu_count),
        FW_CFG_FILE_DIR: struct.pack(">I", 0),   # no named files
    }


class FwCfg:
    """Selector at offset 0, data at offset 1; one selection shared by all vCPUs."""

    def __init__(self, items):
        self._items = dict(items)
        self._lock = threading.Lock()   # select-then-read must not interleave across vCPUs' accesses
        self._current = b""
        self._offset = 0

    def read(self, offset, size):
        if offset != 1:
            return (1 << (8 * size)) - 1
        with self._lock:
            value = 0
            for index in range(size):   # wider reads return consecutive bytes, little-endian
                if self._offset < len(self._current):
                    value |= self._current[self._offset] << (8 * index)
                    self._offset += 1
            return value

    def write(self, offset, size, value):
        if offset != 0:
            return   # the data port is read-only
        with self._lock:
            self._current = self._items.get(value & 0xFFFF, b"")
            self._offset = 0
