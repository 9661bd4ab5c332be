"""Random packets, well-formed and not, at the stub of a running guest: the stub never prints
a traceback, always answers again, and the guest is never left hung. Seeded, so a failure
can be replayed (VMM_GDB_FUZZ_SEED, VMM_GDB_FUZZ_COUNT)."""
import os
import random
import re
import socket
import threading
import time

import pytest

from test_gdb import VmmUnderGdb
from vmm.errors import EXIT_GDB_KILL
from test_gdb_protocol import framed

pytestmark = pytest.mark.kvm

SEED = int(os.environ.get("VMM_GDB_FUZZ_SEED", "20261201"))
COUNT = int(os.environ.get("VMM_GDB_FUZZ_COUNT", "2000"))
DOCUMENTED_STATUSES = {0, 4, 6, 8, EXIT_GDB_KILL, 124} | set(range(1, 256, 2))


def _address(rng):
    return rng.choice([rng.randrange(1 << 64), rng.randrange(0x100000, 0x101000), rng.randrange(0, 1 << 32),
                       0xFFFFFFFFFFFFF000 + rng.randrange(0x1000), 0x7FFFFFFF0000 + rng.randrange(0x20000)])


def _thread(rng):
    return rng.choice(["1", "0", "-1", "2", "ff", "", "zz", "%x" % rng.randrange(1 << 64)])


def random_packet(rng, writes):
    """One packet payload (bytes), mostly of the commands gdb sends, with random arguments."""
    kinds = ["?", "g", "p", "m", "Z", "z", "c", "s", "vCont", "H", "T", "q", "qXfer", "qRcmd", "junk"]
    if writes:
        kinds += ["G", "P", "M", "X"]
    kind = rng.choice(kinds)
    address, length = _address(rng), rng.choice([0, 1, 2, 3, 4, 7, 8, 16, 4096, rng.randrange(1 << 20)])
    if kind == "p":
        return b"p%x" % rng.randrange(0, 200)
    if kind == "m":
        return b"m%x,%x" % (address, length)
    if kind in ("Z", "z"):
        return b"%s%d,%x,%x" % (kind.encode(), rng.randrange(0, 6), address, rng.choice([1, 2, 4, 8, 3, 0, length]))
    if kind in ("c", "s"):   # an address is where to resume: a write of the instruction pointer
        return kind.encode() + (b"%x" % address if writes and rng.random() < 0.1 else b"")
    if kind == "vCont":
        action = rng.choice(["c", "s", "C05", "S02", "t", "x"])
        return b"vCont;%s%s" % (action.encode(), (":" + _thread(rng)).encode() if rng.random() < 0.5 else b"")
    if kind == "H":
        return b"H%s%s" % (rng.choice(["g", "c", "x"]).encode(), _thread(rng).encode())
    if kind == "T":
        return b"T" + _thread(rng).encode()
    if kind == "q":
        return rng.choice([b"qC", b"qfThreadInfo", b"qsThreadInfo", b"qAttached", b"qSupported:swbreak+",
                           b"qThreadExtraInfo," + _thread(rng).encode(), b"qSymbol::", b"qOffsets"])
    if kind == "qXfer":
        return b"qXfer:features:read:%s:%x,%x" % (rng.choice([b"target.xml", b"x.xml"]), rng.randrange(5000),
                                                  rng.randrange(1, 5000))
    if kind == "qRcmd":
        command = rng.choice(["v2e status", "info registers", f"pa {address:#x}", "breakpoints", "help",
                              "v2e watch 0x300000", "v2e unwatch", "x" * rng.randrange(100)])
        return b"qRcmd," + command.encode().hex().encode()
    if kind == "G":
        return b"G" + bytes(rng.randrange(256) for _ in range(rng.choice([10, 600, 1000]))).hex().encode()
    if kind == "P":
        return b"P%x=%s" % (rng.randrange(0, 80), bytes(rng.randrange(256) for _ in range(8)).hex().encode())
    if kind == "M":
        data = bytes(rng.randrange(256) for _ in range(4))
        return b"M%x,4:%s" % (rng.randrange(0x500000, 0x600000), data.hex().encode())
    if kind == "X":
        return b"X%x,4:%s" % (rng.randrange(0x500000, 0x600000), bytes(rng.randrange(32, 127) for _ in range(4))
                              .replace(b"$", b"a").replace(b"#", b"b").replace(b"}", b"c").replace(b"*", b"d"))
    junk = bytes(rng.randrange(32, 127) for _ in range(rng.randrange(1, 40))).replace(b"$", b"y").replace(b"#", b"y")
    return junk if writes or junk[:1] not in (b"k", b"D") else b"y" + junk[1:]   # kill and detach end the connection


def random_bytes(rng):
    """Framing-level noise: broken packets, stray acks, interrupts."""
    return rng.choice([
        b"$" + bytes(rng.randrange(256) for _ in range(rng.randrange(30))) + b"#00",
        b"$g#" + bytes([rng.randrange(256), rng.randrange(256)]),
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 30))),
        b"+", b"-", b"\x03", b"$m100000,4",
    ])


class Drain:
    """Reads everything the stub sends, so it never waits on us; counts the packets."""

    def __init__(self, sock):
        self._socket = sock
        self.data = bytearray()
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while chunk := self._socket.recv(65536):
                self.data += chunk
        except OSError:
            pass
        self.closed.set()

    def packets(self):
        return re.findall(rb"\$([^#$]*)#[0-9a-f]{2}", bytes(self.data))


def _answers(sock, drain, timeout=15):
    """Whether the stub answers a qC now (stopping the guest first); None when the connection
    has ended (the run ended)."""
    before = len(drain.packets())
    try:
        sock.sendall(b"\x03" + framed(b"qC"))
    except OSError:
        return None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(packet.startswith((b"QC", b"E10")) for packet in drain.packets()[before:]):
            return True
        if drain.closed.is_set():
            return None
        time.sleep(0.02)
    return False


def _fuzz(vmm, rng, count, writes):
    """Send `count` random items, checking every 250 that the stub still answers; then detach.
    Without writes the connection must last; with them the run may end (the connection with it)."""
    sock = socket.create_connection(("127.0.0.1", vmm.port), timeout=30)
    drain = Drain(sock)
    try:
        for index in range(count + 1):
            if index % 250 == 0 or index == count:
                answered = _answers(sock, drain)
                assert answered or (answered is None and writes), (
                    f"the stub {'closed the connection' if answered is None else 'stopped answering'} "
                    f"after {index} items (seed {SEED})")
                if answered is None:
                    return drain
            item = random_bytes(rng) if rng.random() < 0.2 else framed(random_packet(rng, writes))
            try:
                sock.sendall(item if index < count else framed(b"D"))
            except OSError:
                assert writes, f"the stub closed the connection after {index} items (seed {SEED})"
                return drain
        time.sleep(0.2)
    finally:
        sock.close()
    return drain


def test_random_packets_against_a_running_guest():
    """Reads, breakpoints and resumes only: the guest ends as it would have, by its timeout."""
    vmm = VmmUnderGdb("forever", "--timeout", "10", wait=False)
    try:
        drain = _fuzz(vmm, random.Random(SEED), COUNT, writes=False)
        stdout, status, stderr = vmm.finish(timeout=60)
    finally:
        vmm.close()
    assert (stdout, status) == (b"spinning forever\n", 124), f"seed {SEED}: status {status}\n{stderr}"
    assert len(drain.packets()) > COUNT // 4, "the stub answered the packets"


def test_random_packets_with_writes():
    """Register and memory writes too: the run still ends with a documented status."""
    vmm = VmmUnderGdb("gdb_target", "--timeout", "20")
    try:
        _fuzz(vmm, random.Random(SEED + 1), COUNT // 2, writes=True)
        stdout, status, stderr = vmm.finish(timeout=60)
    finally:
        vmm.close()
    assert status in DOCUMENTED_STATUSES, f"seed {SEED + 1}: status {status}\n{stderr}"
