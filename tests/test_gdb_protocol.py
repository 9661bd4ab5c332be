"""The stub's remote protocol spoken directly, the way a misbehaving client would: malformed,
oversized and unknown packets, bad checksums, impossible breakpoints, memory that does not
translate, packets while the guest runs, clients that vanish. Each gets the protocol's error
reply or a NAK and a --verbose line; none gets a traceback or a hung guest."""
import re
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree

import pytest

from conftest import ROOT
from test_gdb import EXIT_GDB_KILL, VmmUnderGdb, assert_same_as_without_gdb, image

pytestmark = pytest.mark.kvm

E_INVALID, E_FAULT, E_NO_THREAD, E_NO_SPACE, E_BUSY = b"E16", b"E0e", b"E03", b"E1c", b"E10"


def framed(payload):
    return b"$%s#%02x" % (payload, sum(payload) % 256)


class Client:
    """A minimal remote-protocol client, independent of the stub's own framing code."""

    def __init__(self, port):
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buffer = b""
        self.acks = True

    def send_raw(self, data):
        self.socket.sendall(data)

    def _fill(self):
        data = self.socket.recv(65536)
        if not data:
            raise ConnectionError("the stub closed the connection")
        self.buffer += data

    def read_byte(self):
        while not self.buffer:
            self._fill()
        byte, self.buffer = self.buffer[:1], self.buffer[1:]
        return byte

    def read_packet(self):
        """The next packet's payload (acknowledged; O packets are returned like any other)."""
        while True:
            while b"$" not in self.buffer:
                self._fill()
            start = self.buffer.index(b"$")
            assert self.buffer[:start].strip(b"+") == b"", f"unexpected bytes before a packet: {self.buffer[:start]!r}"
            while b"#" not in self.buffer[start:] or len(self.buffer) < self.buffer.index(b"#", start) + 3:
                self._fill()
            end = self.buffer.index(b"#", start)
            payload, checksum = self.buffer[start + 1:end], self.buffer[end + 1:end + 3]
            self.buffer = self.buffer[end + 3:]
            assert int(checksum, 16) == sum(payload) % 256, f"bad checksum from the stub on {payload!r}"
            if self.acks:
                self.send_raw(b"+")
            return payload

    def ask(self, payload):
        """Send a packet, expect its ack, return the reply."""
        self.send_raw(framed(payload))
        if self.acks:
            assert self.read_byte() == b"+", "the stub should acknowledge a well-formed packet"
        return self.read_packet()

    def stop_reply(self):
        """The next stop reply, after any console output."""
        while True:
            reply = self.read_packet()
            if not reply.startswith(b"O"):
                return reply

    def close(self):
        self.socket.close()


@pytest.fixture
def stub():
    """A guest held at its first instruction under a verbose stub, and a connected client."""
    made = []

    def start(name="hello_long", *args):
        vmm = VmmUnderGdb(name, *args, verbose=True)
        client = Client(vmm.port)
        made.append((vmm, client))
        return vmm, client

    yield start
    for vmm, client in made:
        client.close()
        vmm.close()


def detach_and_check(vmm, client, name="hello_long", *args):
    assert client.ask(b"D") == b"OK"
    client.close()
    return assert_same_as_without_gdb(vmm, name, *args)


# -- what gdb sees on a sound connection ------------------------------------------

def test_features_stop_reason_and_threads(stub):
    vmm, client = stub()
    features = client.ask(b"qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386").split(b";")
    assert b"qXfer:features:read+" in features and b"swbreak+" in features and b"hwbreak+" in features
    packet_size = int(next(f for f in features if f.startswith(b"PacketSize=")).split(b"=")[1], 16)
    assert packet_size >= 4096
    assert client.ask(b"?") == b"T05thread:1;"
    assert client.ask(b"qfThreadInfo") == b"m1" and client.ask(b"qsThreadInfo") == b"l"
    assert client.ask(b"qC") == b"QC1" and client.ask(b"qAttached") == b"1"
    assert bytes.fromhex(client.ask(b"qThreadExtraInfo,1").decode()) == b"vCPU 0: long mode, 64-bit code"
    assert client.ask(b"vMustReplyEmpty") == b"" and client.ask(b"qNoSuchThing") == b""
    detach_and_check(vmm, client)


def _target_xml(client):
    document, offset = b"", 0
    while True:
        reply = client.ask(b"qXfer:features:read:target.xml:%x,200" % offset)
        assert reply[:1] in (b"m", b"l"), reply
        document += reply[1:]
        offset += len(reply) - 1
        if reply[:1] == b"l":
            return ElementTree.fromstring(document)


@pytest.mark.parametrize("name, args, architecture, registers", [
    ("hello_long", (), "i386:x86-64", {"rax", "r15", "rip", "eflags", "fs_base", "gs_base", "xmm15", "mxcsr",
                                        "st7", "fop", "cr3", "efer", "cs", "gs"}),
    ("hello_protected", ("--mode", "protected"), "i386", {"eax", "edi", "eip", "xmm7", "cr0", "fs_base", "ss"}),
    ("hello_real", ("--mode", "real"), "i8086", {"eax", "eip", "cs", "ds", "cr0"}),
])
def test_the_description_follows_the_cpu_mode_and_sizes_the_g_packet(stub, name, args, architecture, registers):
    vmm, client = stub(name, *args)
    root = _target_xml(client)
    assert root.findtext("architecture") == architecture
    found = {reg.get("name"): int(reg.get("bitsize")) for reg in root.iter("reg")}
    assert registers <= set(found), f"missing registers: {registers - set(found)}"
    if architecture != "i386:x86-64":
        assert "rax" not in found and "xmm8" not in found
        assert not any(feature.get("name") == "org.gnu.gdb.i386.segments" for feature in root.iter("feature"))
    registers_hex = client.ask(b"g")
    assert len(registers_hex) == 2 * sum(found.values()) // 8, "the g reply carries every described register"
    numbers = {reg.get("name"): int(reg.get("regnum")) for reg in root.iter("reg")}
    pc = "rip" if architecture == "i386:x86-64" else "eip"
    pc_value = int.from_bytes(bytes.fromhex(client.ask(b"p%x" % numbers[pc]).decode()), "little")
    assert pc_value == (0x7C00 if architecture == "i8086" else 0x100000)
    detach_and_check(vmm, client, name, *args)


def test_an_elf64_image_gets_the_64_bit_description_in_any_mode(stub):
    """gdb, given an ELF64 file, refuses any description but x86-64's (its code here starts
    in 32-bit mode, as a 64-bit kernel's boot code does)."""
    vmm, client = stub("gdb_target", "--mode", "protected")
    assert bytes.fromhex(client.ask(b"qThreadExtraInfo,1").decode()).startswith(b"vCPU 0: protected mode")
    root = _target_xml(client)
    assert root.findtext("architecture") == "i386:x86-64"
    client.send_raw(framed(b"k"))
    assert vmm.finish()[1] == EXIT_GDB_KILL


# -- framing ---------------------------------------------------------------------------

def test_bad_checksums_oversized_and_broken_packets_are_refused_with_a_nak(stub):
    vmm, client = stub()
    client.send_raw(b"$g#00")
    assert client.read_byte() == b"-", "a bad checksum gets a NAK"
    client.send_raw(b"$g#zz")
    assert client.read_byte() == b"-", "a malformed checksum gets a NAK"
    client.send_raw(b"$" + b"m" * 0x10000 + b"#00")
    assert client.read_byte() == b"-", "an oversized packet gets a NAK"
    client.send_raw(b"$qC" + framed(b"qC"))   # a packet starting inside another
    assert client.read_byte() == b"-" and client.read_byte() == b"+"
    assert client.read_packet() == b"QC1"
    client.send_raw(b"noise between packets")
    assert client.ask(b"?") == b"T05thread:1;"
    client.send_raw(b"-")   # asking for the last reply again
    assert client.read_packet() == b"T05thread:1;"
    stderr = detach_and_check(vmm, client)
    assert stderr.count("vmm: gdb: dropped a bad checksum") == 1, stderr
    assert "dropped a malformed checksum" in stderr and "dropped a packet longer than" in stderr, stderr
    assert "dropped a packet started inside another" in stderr, stderr


def test_no_ack_mode(stub):
    vmm, client = stub()
    assert client.ask(b"QStartNoAckMode") == b"OK"
    client.acks = False
    client.send_raw(framed(b"qC"))
    assert client.read_byte() == b"$", "no acknowledgement once in no-ack mode"
    client.buffer = b"$" + client.buffer
    assert client.read_packet() == b"QC1"
    detach_and_check(vmm, client)


# -- malformed and impossible requests ------------------------------------------------

MALFORMED = [
    (b"m", E_INVALID), (b"mxyz,4", E_INVALID), (b"m100000", E_INVALID), (b"m100000,", E_INVALID),
    (b"m1" + b"0" * 20 + b",4", E_INVALID), (b"Gzz", E_INVALID), (b"G00", E_INVALID),
    (b"p", E_INVALID), (b"p9999", E_INVALID), (b"P10=00", E_INVALID), (b"Pzz=00", E_INVALID),
    (b"P0", E_INVALID), (b"M100000,2:00", E_INVALID), (b"M100000,1:0", E_INVALID),
    (b"X100000,4:ab", E_INVALID), (b"X100000,1:}", E_INVALID),
    (b"Z0,100000", E_INVALID), (b"Z9,100000,1", E_INVALID), (b"Z0,100000,2", E_INVALID),
    (b"Z1,100000,4", E_INVALID), (b"Z2,180000,0", E_INVALID), (b"Z2,180000,100000", E_INVALID),
    (b"z0,100000,1", E_INVALID), (b"Hx1", E_INVALID), (b"Hg99", E_NO_THREAD), (b"Hgzz", E_INVALID),
    (b"T99", E_NO_THREAD), (b"vCont;x", E_INVALID), (b"vCont;s:99", E_NO_THREAD), (b"vCont", E_INVALID),
    (b"qThreadExtraInfo,99", E_NO_THREAD), (b"qXfer:features:read:other.xml:0,100", E_INVALID),
    (b"qXfer:features:read:target.xml:zz", E_INVALID), (b"qRcmd,zz", E_INVALID),
    (b"C", E_INVALID), (b"Szz", E_INVALID), (b"cxyz", E_INVALID),
]


def test_malformed_packets_get_an_error_reply_and_a_verbose_line(stub):
    vmm, client = stub()
    for packet, reply in MALFORMED:
        assert (packet, client.ask(packet)) == (packet, reply)
        assert client.ask(b"?") == b"T05thread:1;", f"the stub goes on answering after {packet!r}"
    stderr = detach_and_check(vmm, client)
    lines = [line for line in stderr.splitlines() if line.startswith("vmm: gdb: ")
             and not re.match(r"vmm: gdb: (this host|int3|debug registers|waiting for gdb|client|gdb detached)", line)]
    assert len(lines) == len(MALFORMED), "one --verbose line per refused packet:\n" + "\n".join(lines)


def test_more_breakpoints_than_debug_registers(stub):
    vmm, client = stub()
    for n in range(4):
        assert client.ask(b"Z1,%x,1" % (0x300000 + n)) == b"OK"
    assert client.ask(b"Z1,300010,1") == E_NO_SPACE
    assert client.ask(b"Z1,300000,1") == b"OK", "inserting what is inserted is harmless"
    for n in range(4):
        assert client.ask(b"z1,%x,1" % (0x300000 + n)) == b"OK"
    assert client.ask(b"Z1,300010,1") == b"OK", "a freed register is free again"
    assert client.ask(b"z1,300010,1") == b"OK"
    stderr = detach_and_check(vmm, client)
    assert "needs 1 debug register(s): 0 free of 4" in stderr, stderr


def test_read_watchpoints_where_debug_registers_miss_data(stub):
    """This host's debug registers never trigger on data (probe.py): write watchpoints are
    stepped, read and access watchpoints refused, each said with --verbose."""
    vmm, client = stub()
    write, read = client.ask(b"Z2,180000,4"), client.ask(b"Z3,180000,4")
    stderr_so_far = "".join(vmm.stderr_lines)
    if "data breakpoints never trigger" in stderr_so_far:
        assert (write, read) == (b"OK", E_INVALID)
    else:
        assert (write, read) == (b"OK", b"OK")
    stderr = detach_and_check(vmm, client)
    assert re.search(r"data breakpoints (never )?trigger", stderr), stderr


@pytest.mark.parametrize("name, mode", [("hello_long", "long"), ("hello_real", "real")])
def test_a_fifth_breakpoint_is_int3_where_the_host_hands_int3_to_the_vmm(stub, name, mode):
    vmm, client = stub(name, "--mode", mode)
    for n in range(4):
        assert client.ask(b"Z1,%x,1" % (0x300000 + n)) == b"OK"
    fifth = client.ask(b"Z0,%x,1" % (0x100010 if mode == "long" else 0x7C10))
    said = "".join(vmm.stderr_lines)
    unusable = re.search(r"int3 does not reach the VMM in ([a-z, ]+) mode", said)
    if "int3 never reaches the VMM" in said or (unusable and mode in unusable.group(1)):
        assert fifth == E_NO_SPACE
    else:
        assert fifth == b"OK"
    stderr = detach_and_check(vmm, client, name, "--mode", mode)
    assert "vmm: gdb: this host: int3 reaches the VMM by long: " in stderr, stderr
    if fifth == E_NO_SPACE:
        assert "the four debug registers are taken and this host does not hand int3 to the VMM" in stderr
    else:
        assert re.search(r"breakpoint at 0x[0-9a-f]+ \(1\): int3", stderr), stderr


# -- memory -------------------------------------------------------------------------

def test_memory_that_does_not_translate(stub):
    vmm, client = stub("hello_long", "--mem", "8M")
    assert client.ask(b"mffff800000000000,4") == E_FAULT, "not mapped by the page tables"
    assert client.ask(b"m800000,4") == E_FAULT, "mapped by the page tables but not RAM"
    assert client.ask(b"m7ffffe,4") == b"0000", "a short read up to the end of RAM"
    assert client.ask(b"M7ffffe,4:01020304") == E_FAULT, "a write is all or nothing"
    assert client.ask(b"m7ffffe,2") == b"0000"
    assert client.ask(b"X800000,1:a") == E_FAULT
    assert client.ask(b"m100000,0") == b""
    stderr = detach_and_check(vmm, client, "hello_long", "--mem", "8M")
    assert "vmm: gdb: read at 0xffff800000000000: 0xffff800000000000 is not mapped to guest RAM" in stderr, stderr


def test_memory_across_a_page_boundary(stub):
    vmm, client = stub()
    image_bytes = open(image("hello_long"), "rb").read()
    assert client.ask(b"m100000,%x" % len(image_bytes)) == image_bytes.hex().encode()
    escaped = b"}]}\x03}\x04}\x0a"   # } # $ *
    assert client.ask(b"X500ffe,5:" + escaped) == E_INVALID, "5 bytes announced, 4 sent"
    assert client.ask(b"X500ffe,4:" + escaped) == b"OK"
    assert client.ask(b"m500ffe,4") == b"7d23242a"
    assert client.ask(b"M500ffe,4:00000000") == b"OK"
    assert client.ask(b"m500ffc,8") == b"0000000000000000"
    detach_and_check(vmm, client)


# -- while the guest runs, and clients that misbehave ---------------------------------

def test_packets_while_the_guest_runs_are_refused_and_ctrl_c_stops_it(stub):
    vmm, client = stub("forever", "--timeout", "30")
    client.send_raw(framed(b"vCont;c"))
    assert client.read_byte() == b"+"
    time.sleep(0.3)
    assert client.ask(b"g") == E_BUSY
    assert client.ask(b"m100000,4") == E_BUSY
    client.send_raw(b"\x03")
    reply = client.stop_reply()
    assert reply.startswith(b"T02thread:1;"), reply
    client.send_raw(framed(b"k"))
    assert client.read_byte() == b"+"
    stdout, status, stderr = vmm.finish()
    assert status == EXIT_GDB_KILL, stderr
    assert "while the guest runs: refused" in stderr, stderr


def test_a_client_vanishing_mid_packet_lets_the_guest_run_on(stub):
    vmm, client = stub()
    client.send_raw(b"$m100000,")
    client.close()
    stderr = assert_same_as_without_gdb(vmm, "hello_long")
    assert "left without detaching: the guest runs on" in stderr, stderr


def test_a_client_vanishing_while_the_guest_runs(stub):
    vmm, client = stub("forever", "--timeout", "3")
    client.send_raw(framed(b"Z1,100020,1") + framed(b"vCont;c"))
    time.sleep(0.5)
    client.close()
    stdout, status, stderr = vmm.finish()
    assert (stdout, status) == (b"spinning forever\n", 124), stderr
    assert "left without detaching" in stderr, stderr


def test_one_client_at_a_time(stub):
    vmm, client = stub()
    second = socket.create_connection(("127.0.0.1", vmm.port), timeout=10)
    assert second.recv(100) == b"", "a second client is turned away"
    second.close()
    assert client.ask(b"?") == b"T05thread:1;"
    stderr = detach_and_check(vmm, client)
    assert "one gdb client at a time" in stderr, stderr


def test_a_client_reconnecting_after_detach(stub):
    vmm, client = stub("forever", "--timeout", "10")
    assert client.ask(b"D") == b"OK"
    client.close()
    again = Client(vmm.port)
    assert again.ask(b"?").startswith(b"T05thread:1;")
    again.send_raw(framed(b"vKill;1"))
    assert again.read_byte() == b"+" and again.read_packet() == b"OK"
    again.close()
    assert vmm.finish()[1] == EXIT_GDB_KILL


# -- the command line -------------------------------------------------------------------

@pytest.mark.parametrize("args, text", [
    (["--gdb", "tcp:127.0.0.1:notaport"], "expected tcp:[HOST:]PORT or unix:PATH"),
    (["--gdb", "udp:1234"], "expected tcp:[HOST:]PORT or unix:PATH"),
    (["--gdb", "unix:"], "expected tcp:[HOST:]PORT or unix:PATH"),
    (["--gdb", "tcp::70000"], "expected tcp:[HOST:]PORT or unix:PATH"),
    (["--gdb-wait"], "--gdb-wait and --gdb-on-event need --gdb"),
    (["--gdb-on-event"], "--gdb-wait and --gdb-on-event need --gdb"),
    (["--gdb", f"unix:{ROOT / 'README.md'}"], "exists and is not a socket"),
    (["--gdb", "tcp:192.0.2.1:1"], "cannot listen"),
])
def test_bad_gdb_options(args, text):
    result = subprocess.run([sys.executable, "-m", "vmm", "run", image("hello_long"), *args], cwd=ROOT,
                            capture_output=True, timeout=60)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("vmm: ") and text in stderr, stderr


def test_a_port_in_use():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        result = subprocess.run([sys.executable, "-m", "vmm", "run", image("hello_long"), "--gdb",
                                 f"tcp::{taken.getsockname()[1]}"], cwd=ROOT, capture_output=True, timeout=60)
    finally:
        taken.close()
    assert result.returncode == 2 and b"cannot listen" in result.stderr, result.stderr
