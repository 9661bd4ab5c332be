#!/usr/bin/env python3
"""Kernel image helpers for the emulated-CPU boot.

  kimage.py vmlinux VMLINUZ OUT        decompress a bzImage payload (xz or zstd) into the ELF vmlinux
  kimage.py pack STUB VMLINUX OUT      flat multiboot image: pvhstub page + kernel segments
  kimage.py modinfo KO FIELD           print a .modinfo field (e.g. depends, vermagic)

The packed image is loaded by a multiboot loader with the a.out kludge at
load_addr = first segment's physical address - 4096; each PT_LOAD segment ends
up at its p_paddr and the bss (memsz beyond the file data) is zeroed by the
loader up to bss_end_addr.
"""
import lzma
import struct
import subprocess
import sys

XEN_ELFNOTE_PHYS32_ENTRY = 18
STUB_SIZE = 4096


def extract_vmlinux(src, dst):
    data = open(src, "rb").read()
    magic = b"\xfd7zXZ\x00"
    pos = data.find(magic)
    while pos >= 0:
        try:
            d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
            out = d.decompress(data[pos:])
        except lzma.LZMAError:
            pos = data.find(magic, pos + 1)
            continue
        if out[:4] == b"\x7fELF":
            open(dst, "wb").write(out)
            return
        pos = data.find(magic, pos + 1)
    # zstd (Debian 6.12): no zstd in the 3.11 stdlib, use the zstd tool
    magic = b"\x28\xb5\x2f\xfd"
    pos = data.find(magic)
    while pos >= 0:
        p = subprocess.run(["zstd", "-dcq"], input=data[pos:], capture_output=True)
        if p.stdout[:4] == b"\x7fELF":
            open(dst, "wb").write(p.stdout)
            return
        pos = data.find(magic, pos + 1)
    sys.exit(f"{src}: no xz- or zstd-compressed ELF payload found")


def elf_segments(img):
    if img[:4] != b"\x7fELF" or img[4] != 2:
        sys.exit("not an ELF64 file")
    (e_phoff,) = struct.unpack_from("<Q", img, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", img, 0x36)
    segs = []
    for i in range(e_phnum):
        p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align = \
            struct.unpack_from("<IIQQQQQQ", img, e_phoff + i * e_phentsize)
        segs.append(dict(type=p_type, offset=p_offset, vaddr=p_vaddr, paddr=p_paddr,
                         filesz=p_filesz, memsz=p_memsz))
    return segs


def pvh_entry(img, segs):
    for s in segs:
        if s["type"] != 4:  # PT_NOTE
            continue
        off, end = s["offset"], s["offset"] + s["filesz"]
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", img, off)
            name = img[off + 12: off + 12 + namesz].rstrip(b"\0")
            doff = off + 12 + ((namesz + 3) & ~3)
            if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                return struct.unpack_from("<I", img, doff)[0]
            off = doff + ((descsz + 3) & ~3)
    sys.exit("no XEN_ELFNOTE_PHYS32_ENTRY note: kernel lacks CONFIG_PVH")


def pack(stub_path, vmlinux_path, out_path):
    stub = bytearray(open(stub_path, "rb").read())
    img = open(vmlinux_path, "rb").read()
    segs = elf_segments(img)
    loads = [s for s in segs if s["type"] == 1 and s["memsz"]]
    base = min(s["paddr"] for s in loads)
    file_end = max(s["paddr"] + s["filesz"] for s in loads)
    mem_end = max(s["paddr"] + s["memsz"] for s in loads)
    entry = pvh_entry(img, segs)
    if len(stub) != STUB_SIZE:
        sys.exit(f"stub must be exactly {STUB_SIZE} bytes")
    hdr = stub.find(struct.pack("<I", 0x1BADB002))
    magic, flags, csum, header_addr, load_addr = struct.unpack_from("<5I", stub, hdr)
    if load_addr + STUB_SIZE != base:
        sys.exit(f"stub linked at {load_addr:#x}, kernel starts at {base:#x}: relink the stub "
                 f"with STUB_BASE={base - STUB_SIZE:#x}")
    struct.pack_into("<II", stub, hdr + 20, file_end, mem_end)  # load_end_addr, bss_end_addr
    m = stub.find(b"PVHENTRY")
    struct.pack_into("<I", stub, m + 8, entry)
    flat = bytearray(file_end - base)
    for s in loads:
        o = s["paddr"] - base
        flat[o:o + s["filesz"]] = img[s["offset"]:s["offset"] + s["filesz"]]
    # trailing zeros become bss: the loader zeroes load_end_addr..bss_end_addr
    used = (len(flat.rstrip(b"\0")) + 4095) & ~4095
    del flat[used:]
    file_end = base + used
    with open(out_path, "wb") as f:
        f.write(stub)
        f.write(flat)
    print(f"{out_path}: load {load_addr:#x}, kernel {base:#x}-{file_end:#x} (bss to {mem_end:#x}), "
          f"PVH entry {entry:#x}")


def modinfo(ko, field):
    data = open(ko, "rb").read()
    key = field.encode() + b"="
    pos = data.find(b"\0" + key)
    if pos < 0:
        return ""
    start = pos + 1 + len(key)
    return data[start:data.index(b"\0", start)].decode()


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "vmlinux" and len(sys.argv) == 4:
        extract_vmlinux(sys.argv[2], sys.argv[3])
    elif cmd == "pack" and len(sys.argv) == 5:
        pack(*sys.argv[2:])
    elif cmd == "modinfo" and len(sys.argv) == 4:
        print(modinfo(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
