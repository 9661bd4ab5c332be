#!/usr/bin/env python3
"""mkcpio.py DIR OUT: write DIR as an uncompressed newc cpio archive (initramfs).

Entries are sorted and owned by root with fixed mtimes, so the archive depends
only on the tree's contents."""
import os
import stat
import sys


def main(root, out):
    ino = 1
    with open(out, "wb") as f:
        def entry(name, mode, data=b"", nlink=1):
            nonlocal ino
            nb = name.encode() + b"\0"
            hdr = "070701" + "".join("%08x" % v for v in (
                ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(nb), 0))
            ino += 1
            f.write(hdr.encode() + nb)
            f.write(b"\0" * ((4 - (110 + len(nb)) % 4) % 4))
            f.write(data)
            f.write(b"\0" * ((4 - len(data) % 4) % 4))

        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = os.path.relpath(dirpath, root)
            if rel != ".":
                entry(rel, stat.S_IFDIR | 0o755, nlink=2)
            for fn in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
                p = os.path.join(dirpath, fn)
                name = os.path.normpath(os.path.join(rel, fn))
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode):
                    entry(name, stat.S_IFLNK | 0o777, os.readlink(p).encode())
                elif stat.S_ISREG(st.st_mode):
                    mode = 0o755 if st.st_mode & 0o111 else 0o644
                    entry(name, stat.S_IFREG | mode, open(p, "rb").read())
        entry("TRAILER!!!", 0)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
