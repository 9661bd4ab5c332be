"""Addresses as `symbol+offset`, from an ELF image's symbol table."""
import bisect
import hashlib
import os
import stat

from ..errors import BadInput
from ..loaders import elf

# An image larger than this is not read for its symbols.
MAX_IMAGE = 1 << 30


class SymbolTable:
    """name(address) -> 'symbol' or 'symbol+0x1c' for the nearest symbol at or below the
    address; None past the end of a symbol whose size is known, or below every symbol."""

    def __init__(self, entries):
        entries = sorted((value, size, name) for value, size, name in entries)
        self._values = [value for value, _, _ in entries]
        self._entries = entries

    def __len__(self):
        return len(self._entries)

    def name(self, address):
        at = bisect.bisect_right(self._values, address) - 1
        if at < 0:
            return None
        value, size, name = self._entries[at]
        if size and address >= value + size:
            return None
        return name if address == value else f"{name}+{address - value:#x}"


def _read(path, what):
    """The bytes of a regular file of at most MAX_IMAGE bytes (not a FIFO or a device, which a
    trace's header could name)."""
    try:
        status = os.stat(path)
        if not stat.S_ISREG(status.st_mode):
            raise BadInput(f"{path}: cannot read {what}: not a regular file")
        if status.st_size > MAX_IMAGE:
            raise BadInput(f"{path}: cannot read {what}: larger than {MAX_IMAGE >> 30} GiB")
        with open(path, "rb") as image:
            return image.read(MAX_IMAGE + 1)
    except OSError as error:
        raise BadInput(f"{path}: cannot read {what}: {error.strerror}") from None


def from_file(path):
    """The symbols of the ELF file at path (--symbols): BadInput when it has none."""
    data = _read(path, "the symbols")
    table = SymbolTable(elf.symbols(data, path))
    if not len(table):
        raise BadInput(f"{path}: the symbol table names no function or object")
    return table


def from_header(header):
    """(SymbolTable or None, a warning or None) for the image the trace's header names: its
    symbols when it is still there, unchanged (same sha256), and an ELF file with symbols."""
    if header.image is None or header.image_sha256 is None:
        return None, None
    try:
        data = _read(header.image, "the image")
    except BadInput:
        return None, None
    if hashlib.sha256(data).hexdigest() != header.image_sha256:
        return None, f"{header.image} is no longer the traced image (its sha256 differs): no symbols from it"
    if not elf.is_elf(data):
        return None, None
    try:
        entries = elf.symbols(data, header.image)
    except BadInput:
        return None, None
    return (SymbolTable(entries), None) if entries else (None, None)
