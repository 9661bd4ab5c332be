"""The GDB remote serial protocol's framing: packets, checksums, acknowledgements, escapes.

A packet is `$payload#cc`, cc the two hex digits of the sum of the payload bytes modulo 256.
The receiver acknowledges each packet with `+` (or asks for it again with `-`) until the two
sides agree on QStartNoAckMode. A lone 0x03 outside a packet is an interrupt (Ctrl-C). In
binary data (`X` packets, qXfer replies) `}` escapes the next byte, XORed with 0x20.
Everything gdb sends is untrusted: PacketReader bounds every packet and reports what it drops.
"""
from dataclasses import dataclass

# The PacketSize this stub advertises: the longest payload it accepts, and the longest it sends.
MAX_PAYLOAD = 0x4000

INTERRUPT = 0x03
_ESCAPE = ord("}")
_MUST_ESCAPE = frozenset(b"#$}*")


class ProtocolError(Exception):
    """A packet whose contents break the protocol; the stub replies with an error."""


@dataclass(slots=True, frozen=True)
class Packet:
    payload: bytes


@dataclass(slots=True, frozen=True)
class Ack:
    positive: bool


@dataclass(slots=True, frozen=True)
class Interrupt:
    pass


@dataclass(slots=True, frozen=True)
class Dropped:
    """Bytes that were not a valid packet (a NAK is due in acknowledged mode)."""

    why: str


def checksum(payload):
    return sum(payload) & 0xFF


def frame(payload):
    """The bytes of a packet carrying `payload` (bytes; '$', '#' and '}' already escaped)."""
    return b"$" + payload + b"#" + b"%02x" % checksum(payload)


def escape(data):
    """Binary data as a packet may carry it."""
    out = bytearray()
    for byte in data:
        if byte in _MUST_ESCAPE:
            out += bytes((_ESCAPE, byte ^ 0x20))
        else:
            out.append(byte)
    return bytes(out)


def unescape(data):
    out = bytearray()
    escaped = False
    for byte in data:
        if escaped:
            out.append(byte ^ 0x20)
            escaped = False
        elif byte == _ESCAPE:
            escaped = True
        else:
            out.append(byte)
    if escaped:
        raise ProtocolError("binary data ends with an escape byte")
    return bytes(out)


_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def hex_bytes(text):
    """Hex digits (bytes) -> bytes."""
    if len(text) % 2 or not _HEX_DIGITS.issuperset(text):
        raise ProtocolError(f"malformed hex data {text[:32]!r}")
    return bytes.fromhex(text.decode("ascii"))


def hex_number(text, limit=1 << 64):
    """A hex number (bytes), below `limit`."""
    if not text or len(text) > 16 or not _HEX_DIGITS.issuperset(text):
        raise ProtocolError(f"malformed number {text[:32]!r}")
    value = int(text, 16)
    if value >= limit:
        raise ProtocolError(f"number {value:#x} out of range")
    return value


class PacketReader:
    """Splits the byte stream from gdb into Packet, Ack, Interrupt and Dropped events."""

    def __init__(self, max_payload=MAX_PAYLOAD):
        self._max = max_payload
        self._state = "idle"
        self._payload = bytearray()
        self._checksum = bytearray()
        self._oversized = False

    def feed(self, data):
        events = []
        for byte in data:
            event = self._byte(byte)
            if event is not None:
                events.append(event)
        return events

    def _byte(self, byte):
        state = self._state
        if state == "idle":
            if byte == 0x24:   # $
                self._start()
            elif byte == 0x2B:  # +
                return Ack(True)
            elif byte == 0x2D:  # -
                return Ack(False)
            elif byte == INTERRUPT:
                return Interrupt()
            return None        # noise between packets is ignored, as gdb's own stubs do
        if state == "payload":
            if byte == 0x23:   # #
                self._state = "checksum"
            elif byte == 0x24:
                self._start()
                return Dropped("a packet started inside another (the first is dropped)")
            elif len(self._payload) >= self._max:
                self._oversized = True
            else:
                self._payload.append(byte)
            return None
        self._checksum.append(byte)
        if len(self._checksum) < 2:
            return None
        self._state = "idle"
        if self._oversized:
            return Dropped(f"a packet longer than {self._max} bytes")
        if not _HEX_DIGITS.issuperset(self._checksum):
            return Dropped(f"a malformed checksum {bytes(self._checksum)!r}")
        expected = checksum(self._payload)
        if int(self._checksum, 16) != expected:
            return Dropped(f"a bad checksum ({bytes(self._checksum).decode()}, expected {expected:02x})")
        return Packet(bytes(self._payload))

    def _start(self):
        self._state = "payload"
        self._payload.clear()
        self._checksum.clear()
        self._oversized = False
