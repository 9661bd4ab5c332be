#!/usr/bin/env python3
"""Check that patched KVM modules load on the Debian kernel they are built for.

usage: modcheck.py MODULE.symvers DEBIAN_MODULE_DIR OUR_MODULE...

For every module given:
  - its vermagic must equal the vermagic of Debian's module of the same name
    (from the linux-image package, in DEBIAN_MODULE_DIR, .ko or .ko.xz);
  - every symbol it imports from the Debian kernel (vmlinux or another
    module, e.g. irqbypass or ccp) must carry the CRC that Debian's
    Module.symvers lists, i.e. modversions accept it;
  - all other imports must come from the modules given (kvm-intel and kvm-amd
    import from the patched kvm.ko, whose CRCs change with struct layouts).
"""
import lzma
import os
import struct
import subprocess
import sys
import tempfile


def sections(path):
    data = open(path, "rb").read()
    if path.endswith(".xz"):
        data = lzma.decompress(data)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        ko = os.path.join(tmp, "m.ko")
        with open(ko, "wb") as f:
            f.write(data)
        for sec in ("__versions", ".modinfo", "__ksymtab_strings"):
            dst = os.path.join(tmp, "sec")
            subprocess.run(["objcopy", "-O", "binary", "--only-section=" + sec, ko, dst],
                           check=True)
            with open(dst, "rb") as f:
                out[sec] = f.read()
    versions = {}
    raw = out["__versions"]
    for i in range(0, len(raw), 64):  # struct modversion_info
        crc, = struct.unpack_from("<Q", raw, i)
        versions[raw[i + 8:i + 64].split(b"\0")[0].decode()] = crc & 0xFFFFFFFF
    info = {}
    for item in out[".modinfo"].decode(errors="replace").split("\0"):
        if "=" in item:
            key, value = item.split("=", 1)
            info.setdefault(key, value)
    exports = {s.decode() for s in out["__ksymtab_strings"].split(b"\0") if s}
    return versions, info, exports


def main():
    symvers_path, debian_dir, *ours = sys.argv[1:]
    mods = {os.path.basename(p)[:-3]: sections(p) for p in ours}
    own_exports = set().union(*(m[2] for m in mods.values()))
    debian = {}
    for line in open(symvers_path):
        crc, sym, module = line.split("\t")[:3]
        if module.rsplit("/", 1)[-1] not in mods:
            debian[sym] = int(crc, 16)
    failed = False
    for name, (versions, info, _) in mods.items():
        deb = os.path.join(debian_dir, name + ".ko")
        if not os.path.exists(deb):
            deb += ".xz"
        deb_info = sections(deb)[1]
        problems = []
        if info.get("vermagic") != deb_info.get("vermagic"):
            problems.append(f"vermagic {info.get('vermagic')!r} != Debian's {deb_info.get('vermagic')!r}")
        for sym, crc in sorted(versions.items()):
            if sym in own_exports:
                continue
            if sym not in debian:
                problems.append(f"{sym}: exported neither by Debian's kernel nor the patched modules")
            elif debian[sym] != crc:
                problems.append(f"{sym}: CRC {crc:#x} != Debian's {debian[sym]:#x}")
        vm = sum(1 for s in versions if s not in own_exports)
        if problems:
            failed = True
            print(f"{name}.ko: FAILED")
            for p in problems[:20]:
                print("   ", p)
        else:
            print(f"{name}.ko: vermagic '{info.get('vermagic').strip()}' as Debian's; "
                  f"{vm} imports from Debian's kernel with Debian's CRCs, "
                  f"{len(versions) - vm} from the patched modules")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
