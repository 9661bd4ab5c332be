"""Interrupt descriptor tables: where the CPU goes for each vector, in real mode (the IVT of
segment:offset pairs), 32-bit protected mode (8-byte gates) and long mode (16-byte gates)."""
from .mode import cpu_mode

EXCEPTION_NAMES = ("#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "coprocessor segment",
                   "#TS", "#NP", "#SS", "#GP", "#PF", "vector 15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP")
# Vectors whose exceptions push an error code in protected and long mode.
DB_VECTOR, BP_VECTOR, UD_VECTOR = 1, 3, 6
ERROR_CODE_VECTORS = frozenset((8, 10, 11, 12, 13, 14, 17, 21, 29, 30))


def vector_name(vector):
    return EXCEPTION_NAMES[vector] if vector < len(EXCEPTION_NAMES) else f"vector {vector:#x}"


def handlers(read_linear, sregs):
    """{vector: linear address of its handler} for every present gate of the IDT (or IVT),
    read with read_linear(linear, size) -> bytes or None."""
    mode, _ = cpu_mode(sregs)
    base, limit = sregs.idt.base, sregs.idt.limit
    found = {}
    if mode == "real":
        table = read_linear(base, min(limit + 1, 1024))
        for vector in range(len(table or b"") // 4):
            offset = int.from_bytes(table[4 * vector:4 * vector + 2], "little")
            segment = int.from_bytes(table[4 * vector + 2:4 * vector + 4], "little")
            found[vector] = (segment << 4) + offset
        return found
    size = 16 if mode == "long" else 8
    table = read_linear(base, min(limit + 1, 256 * size))
    for vector in range(len(table or b"") // size):
        gate = table[size * vector:size * (vector + 1)]
        if not gate[5] & 0x80:   # not present
            continue
        offset = int.from_bytes(gate[0:2], "little") | int.from_bytes(gate[6:8], "little") << 16
        if size == 16:
            offset |= int.from_bytes(gate[8:12], "little") << 32
        found[vector] = offset   # code segments are flat in long mode; 32-bit: the selector's base is ignored
    return found
