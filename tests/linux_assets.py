"""Test assets for Linux guests, built on demand and never committed: Debian's own kernel
package and busybox-static (downloaded with `apt-get download` into the cache `make e2e`
uses, CACHE/debs, so one download serves both), and initramfs images written here.

    kernel = stock_kernel()                      # Kernel(vmlinuz, vmlinux(), modules, release)
    image = Initramfs()
    image.add_busybox(busybox())                 # /bin/busybox and its applets
    image.add_program("/bin/sample", "build/sample")   # any static program
    image.add_file("/etc/motd", b"hello\n")
    image.set_init("echo ready; /bin/sample; poweroff -f")
    image.write(tmp_path / "initrd.cpio")

/init is a busybox shell script: it mounts /proc, /sys and /dev, runs the given commands
and, if they return, powers the machine off.
"""
import glob
import lzma
import os
import pathlib
import shutil
import stat
import subprocess
from dataclasses import dataclass

CACHE = pathlib.Path(os.environ.get("VMM_TEST_CACHE", "/var/cache/v2e-e2e"))
KERNEL_METAPACKAGE = "linux-image-amd64"
XZ_MAGIC, ZSTD_MAGIC = b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd"


class AssetUnavailable(Exception):
    """A package cannot be had (no apt, no network, no such package)."""


def _run(args, **kwargs):
    return subprocess.run(args, check=True, capture_output=True, **kwargs)


def debian_package(name):
    """The path of NAME's .deb in CACHE/debs, downloaded once (as e2e/tools/fetch-deb.sh does)."""
    debs = CACHE / "debs"
    found = sorted(debs.glob(f"{name}_*.deb"))
    if found:
        return found[-1]
    if shutil.which("apt-get") is None:
        raise AssetUnavailable(f"{name}: no apt-get to download it with")
    debs.mkdir(parents=True, exist_ok=True)
    try:
        try:
            _run(["apt-get", "download", "-q", name], cwd=debs)
        except subprocess.CalledProcessError:
            _run(["apt-get", "update", "-qq"])
            _run(["apt-get", "download", "-q", name], cwd=debs)
    except subprocess.CalledProcessError as error:
        raise AssetUnavailable(f"apt-get download {name}: {error.stderr.decode(errors='replace').strip()}") from None
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        raise AssetUnavailable(f"apt-get download {name} left no {name}_*.deb in {debs}")
    return found[-1]


def _extract(deb, dest, *patterns):
    """Extract the members matching the tar wildcards from a .deb into dest (once)."""
    stamp = dest / ".extracted"
    if stamp.exists():
        return dest
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    contents = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    tar = subprocess.run(["tar", "-x", "-C", str(partial), "--wildcards", *patterns], stdin=contents.stdout,
                         capture_output=True)
    contents.stdout.close()
    if contents.wait() != 0 or tar.returncode != 0:
        raise AssetUnavailable(f"{deb}: could not extract {patterns}: {tar.stderr.decode(errors='replace')}")
    (partial / ".extracted").touch()
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return dest


def _stock_kernel_package():
    """The kernel image package Debian's linux-image-amd64 depends on (this distribution's
    current kernel), else the newest one already in the cache."""
    try:
        depends = _run(["apt-cache", "depends", KERNEL_METAPACKAGE], text=True).stdout
        for line in depends.splitlines():
            line = line.strip()
            if line.startswith("Depends: linux-image-"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    cached = sorted(glob.glob(str(CACHE / "debs" / "linux-image-*-amd64*_*.deb")))
    if cached:
        return pathlib.Path(cached[-1]).name.split("_", 1)[0]
    raise AssetUnavailable(f"cannot tell which kernel {KERNEL_METAPACKAGE} is (no apt lists, nothing cached)")


@dataclass(frozen=True)
class Kernel:
    release: str
    vmlinuz: pathlib.Path
    modules: pathlib.Path      # lib/modules/RELEASE of the package

    def vmlinux(self):
        """The ELF kernel inside the bzImage's payload (for the PVH entry), decompressed once."""
        path = self.vmlinuz.with_name(f"vmlinux-{self.release}")
        if not path.exists():
            path.write_bytes(decompress_payload(self.vmlinuz.read_bytes()))
        return path

    def module(self, name):
        """The path of a kernel module (name without .ko) in the package."""
        found = sorted(self.modules.rglob(f"{name}.ko")) + sorted(self.modules.rglob(f"{name}.ko.xz"))
        if not found:
            raise AssetUnavailable(f"no module {name} in {self.modules}")
        return found[0]


def stock_kernel():
    name = _stock_kernel_package()
    deb = debian_package(name)
    root = _extract(deb, CACHE / "tests" / deb.stem, "./boot/vmlinuz-*", "./lib/modules/*/kernel/drivers/misc/*")
    vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))[-1]
    release = vmlinuz.name[len("vmlinuz-"):]
    return Kernel(release, vmlinuz, root / "lib" / "modules" / release)


def busybox():
    deb = debian_package("busybox-static")
    return _extract(deb, CACHE / "tests" / deb.stem, "./bin/busybox") / "bin" / "busybox"


def decompress_payload(bzimage):
    """The ELF vmlinux a bzImage carries: its xz payload through lzma, a zstd one through the
    zstd tool."""
    at = bzimage.find(XZ_MAGIC)
    while at >= 0:
        try:
            data = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[at:])
            if data[:4] == b"\x7fELF":
                return data
        except lzma.LZMAError:
            pass
        at = bzimage.find(XZ_MAGIC, at + 1)
    at = bzimage.find(ZSTD_MAGIC)
    if at >= 0 and shutil.which("zstd"):
        data = subprocess.run(["zstd", "-dcq"], input=bzimage[at:], capture_output=True).stdout
        if data[:4] == b"\x7fELF":
            return data
    raise AssetUnavailable("no xz or zstd compressed ELF payload found in the bzImage")


INIT_TEMPLATE = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
{commands}
poweroff -f
"""


class Initramfs:
    """An uncompressed newc cpio archive (what the kernel unpacks as its initramfs), built in
    memory: entries are owned by root, with fixed times, in the order they were added."""

    def __init__(self):
        self._entries = {}         # path -> (mode, data)
        for directory in ("/bin", "/dev", "/proc", "/sys", "/etc", "/tmp", "/lib", "/lib/modules"):
            self.add_directory(directory)

    def add_directory(self, path):
        self._add_parents(path)
        self._entries[path] = (stat.S_IFDIR | 0o755, b"")

    def _add_parents(self, path):
        parent = os.path.dirname(path)
        if parent not in ("", "/") and parent not in self._entries:
            self.add_directory(parent)

    def add_file(self, path, data, mode=0o644):
        self._add_parents(path)
        self._entries[path] = (stat.S_IFREG | mode, bytes(data))

    def add_symlink(self, path, target):
        self._add_parents(path)
        self._entries[path] = (stat.S_IFLNK | 0o777, target.encode())

    def add_program(self, path, host_path):
        """A static executable from the host at `path` in the image."""
        self.add_file(path, pathlib.Path(host_path).read_bytes(), 0o755)

    def add_busybox(self, host_path):
        self.add_program("/bin/busybox", host_path)

    def set_init(self, commands):
        """/init: mount the pseudo file systems, run `commands` (shell), then power off."""
        self.add_file("/init", INIT_TEMPLATE.format(commands=commands).encode(), 0o755)

    def to_bytes(self):
        out = bytearray()

        def entry(inode, name, mode, data):
            encoded = name.encode() + b"\0"
            fields = (inode, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
            out.extend(b"070701" + "".join(f"{value:08x}" for value in fields).encode() + encoded)
            out.extend(bytes(-len(out) % 4))
            out.extend(data)
            out.extend(bytes(-len(out) % 4))

        for inode, (path, (mode, data)) in enumerate(self._entries.items(), start=1):
            entry(inode, path.lstrip("/"), mode, data)
        entry(len(self._entries) + 1, "TRAILER!!!", 0, b"")
        return bytes(out)

    def write(self, path):
        pathlib.Path(path).write_bytes(self.to_bytes())
        return path
