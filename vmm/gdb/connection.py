"""One gdb client: the remote protocol's commands on top of the Controller.

Thread ids are vCPU ids + 1 (gdb reserves 0 and -1). Every packet is untrusted: a malformed
one gets an error reply (and a line for --verbose), an unknown one the empty reply the
protocol asks for. While the guest runs, gdb (all-stop) sends only Ctrl-C; any other packet
then gets an error reply rather than touching a running vCPU.
"""
import kvm_abi as abi

from ..errors import VmmError
from ..x86.mode import cpu_mode
from . import memory as virtual
from .breakpoints import KINDS, BreakpointError, NoDebugRegister
from .control import SIGINT, Stop
from .protocol import (MAX_PAYLOAD, Ack, Dropped, Interrupt, Packet, ProtocolError, escape, frame, hex_bytes,
                       hex_number, unescape)
from .registers import RegisterFile
from .tdesc import layout_for_bits, target_xml

# Error replies: the numbers are errno values, as gdbserver sends them.
E_INVALID = b"E16"      # EINVAL
E_FAULT = b"E0e"        # EFAULT: memory that does not translate
E_NO_THREAD = b"E03"    # ESRCH
E_NO_SPACE = b"E1c"     # ENOSPC: no debug register left
E_BUSY = b"E10"         # EBUSY: the guest is running

_FEATURES = (f"PacketSize={MAX_PAYLOAD:x};qXfer:features:read+;QStartNoAckMode+;swbreak+;hwbreak+;"
             f"vContSupported+").encode()
# The O packets a monitor command's output is sent in: hex doubles each byte.
_OUTPUT_CHUNK = (MAX_PAYLOAD - 1) // 2


class Connection:
    """The protocol state of one connection; send(bytes) writes to the client."""

    def __init__(self, controller, send, log, monitor, image_bits=None):
        self.controller = controller
        self._image_bits = image_bits   # 64 for an ELF64 image: gdb, given the file, takes no other
        self._send = send
        self.log = log
        self.monitor = monitor
        self.machine = controller.machine
        self.no_ack = False
        self.running = False
        self.ended = False              # detached or killed: the connection closes
        self.layout = None              # the description gdb read (fixed for the connection)
        self.last_stop = None
        self.general_thread = self.continue_thread = 0   # vCPU ids (Hg, Hc)
        self._registers = {}            # vCPU id -> RegisterFile, for this stop
        self._last_sent = None
        self._handlers = {
            "?": self._query_stop, "g": self._read_registers, "G": self._write_registers,
            "p": self._read_register, "P": self._write_register, "m": self._read_memory,
            "M": self._write_memory, "X": self._write_binary, "Z": self._insert, "z": self._remove,
            "c": self._continue, "s": self._step, "C": self._continue_signal, "S": self._step_signal,
            "H": self._set_thread, "T": self._thread_alive, "D": self._detach, "k": self._kill,
            "q": self._query, "Q": self._set, "v": self._v_packet,
        }

    # -- input -----------------------------------------------------------------

    def feed(self, events):
        for event in events:
            if self.ended:
                return
            if isinstance(event, Packet):
                if not self.no_ack:
                    self._send(b"+")
                self._packet(event.payload)
            elif isinstance(event, Dropped):
                self.log(f"dropped {event.why}")
                if not self.no_ack:
                    self._send(b"-")
            elif isinstance(event, Ack):
                if not event.positive and self._last_sent is not None and not self.no_ack:
                    self._send(self._last_sent)
            elif isinstance(event, Interrupt):
                self._interrupt()

    def _packet(self, payload):
        try:
            text = payload.decode("latin-1")
            handler = self._handlers.get(text[:1])
            if self.running:
                self.log(f"packet {text[:40]!r} while the guest runs: refused")
                self.reply(E_BUSY)
            elif handler is None:
                self.reply(b"")
            else:
                handler(payload)
        except ProtocolError as error:
            self.log(f"malformed packet {payload[:40]!r}: {error}")
            self.reply(E_INVALID)
        except VmmError as error:   # a KVM ioctl refused what gdb asked (e.g. a control register value)
            self.log(f"packet {payload[:40]!r}: {error}")
            self._registers.clear()
            self.reply(E_INVALID)

    def reply(self, payload):
        packet = frame(payload)
        self._last_sent = packet
        self._send(packet)

    def output(self, text):
        """Console output for the user (O packets)."""
        data = text.encode("utf-8", "replace")
        for start in range(0, len(data), _OUTPUT_CHUNK):
            self._send(frame(b"O" + data[start:start + _OUTPUT_CHUNK].hex().encode()))

    # -- stops -----------------------------------------------------------------

    def stopped(self, stop, tell=True):
        """The guest stopped: reply to the resume (or remember it for `?`)."""
        self.running = False
        self._registers.clear()
        self.last_stop = stop
        self.general_thread = self.continue_thread = stop.vcpu_id
        if not tell:
            return
        if stop.message:
            self.output(stop.message)
        self._warn_if_mode_changed(stop.vcpu_id)
        self.reply(self._stop_reply(stop))

    def _stop_reply(self, stop):
        reply = b"T%02xthread:%x;" % (stop.signal, stop.vcpu_id + 1)
        if stop.reason in ("watch", "rwatch", "awatch"):
            reply += b"%s:%x;" % (stop.reason.encode(), stop.address)
        elif stop.reason:
            reply += stop.reason.encode() + b":;"
        return reply

    def _warn_if_mode_changed(self, vcpu_id):
        if self.layout is None or self._image_bits:
            return
        bits = cpu_mode(self.machine.vcpus[vcpu_id].get_sregs())[1]
        if layout_for_bits(bits) is not self.layout:
            file = " and without a 32-bit ELF file" if bits == 64 else ""
            self.output(f"vmm: vCPU {vcpu_id} now runs {bits}-bit code; gdb read the {self.layout.name}-bit "
                        f"description when it connected and sees these registers through it: connect "
                        f"gdb again while the vCPU runs {bits}-bit code{file} to see them whole\n")

    def exited(self, outcome):
        """The run ended while gdb waited for a stop."""
        self.reply(b"W%02x" % (outcome.exit_status & 0xFF))
        self.running = False
        self.ended = True

    def _interrupt(self):
        if not self.running:
            return
        if not self.controller.interrupt():
            return   # the run ended: the server says so
        thread = self.last_stop.vcpu_id if self.continue_thread is None else self.continue_thread
        stop = self.controller.take_stop() or Stop(thread, SIGINT)
        self.stopped(stop)

    def _query_stop(self, payload):
        self.reply(self._stop_reply(self.last_stop))

    # -- threads ---------------------------------------------------------------

    def _thread(self, text, allow_all=False):
        """A vCPU id from a thread id (hex; 0: any, -1: all when allowed -> None)."""
        if text == b"-1":
            if not allow_all:
                raise ProtocolError("thread -1 where one thread is meant")
            return None
        value = hex_number(text)
        if value == 0:
            return self.last_stop.vcpu_id
        if value > len(self.machine.vcpus):
            self.log(f"no thread {value:x}: threads are 1-{len(self.machine.vcpus):x}, one per vCPU")
            raise _NoThread()
        return value - 1

    def _set_thread(self, payload):
        which, thread = payload[1:2], payload[2:]
        if which not in (b"g", b"c"):
            raise ProtocolError("H needs g or c")
        try:
            vcpu_id = self._thread(thread, allow_all=True)
        except _NoThread:
            self.reply(E_NO_THREAD)
            return
        if which == b"g":
            self.general_thread = self.last_stop.vcpu_id if vcpu_id is None else vcpu_id
        else:
            self.continue_thread = vcpu_id
        self.reply(b"OK")

    def _thread_alive(self, payload):
        try:
            self._thread(payload[1:])
        except _NoThread:
            self.reply(E_NO_THREAD)
            return
        self.reply(b"OK")

    def _thread_description(self, vcpu_id):
        vcpu = self.machine.vcpus[vcpu_id]
        mode, bits = cpu_mode(vcpu.get_sregs())
        state = vcpu.get_mp_state()
        waiting = {abi.KVM_MP_STATE_UNINITIALIZED: ", waiting for INIT", abi.KVM_MP_STATE_INIT_RECEIVED:
                   ", waiting for SIPI", abi.KVM_MP_STATE_HALTED: ", halted"}.get(state, "")
        traced = ", traced by V2E" if self.machine.loops[vcpu_id].driver is not None else ""
        return f"vCPU {vcpu_id}: {mode} mode, {bits}-bit code{waiting}{traced}"

    # -- registers -------------------------------------------------------------

    def _layout(self):
        if self.layout is None:
            bits = self._image_bits or cpu_mode(self.machine.vcpus[self.general_thread].get_sregs())[1]
            self.layout = layout_for_bits(bits)
        return self.layout

    def _register_file(self, vcpu_id):
        registers = self._registers.get(vcpu_id)
        if registers is None:
            registers = self._registers[vcpu_id] = RegisterFile(self.machine.vcpus[vcpu_id], self._layout())
        return registers

    def _read_registers(self, payload):
        self.reply(self._register_file(self.general_thread).encode_all().hex().encode())

    def _read_register(self, payload):
        number = hex_number(payload[1:])
        if number >= len(self._layout().registers):
            raise ProtocolError(f"no register {number:#x} in the {self._layout().name}-bit description")
        self.reply(self._register_file(self.general_thread).encode(number).hex().encode())

    def _write_registers(self, payload):
        data = hex_bytes(payload[1:])
        layout = self._layout()
        if len(data) != layout.g_size:
            raise ProtocolError(f"G with {len(data)} bytes; the {layout.name}-bit registers take {layout.g_size}")
        registers = self._register_file(self.general_thread)
        offset = 0
        values = []
        for register in layout.registers:
            size = register.bits // 8
            values.append(int.from_bytes(data[offset:offset + size], "little"))
            offset += size
        self._set_registers(registers, list(enumerate(values)))

    def _write_register(self, payload):
        number_text, separator, value_text = payload[1:].partition(b"=")
        number = hex_number(number_text)
        layout = self._layout()
        if not separator or number >= len(layout.registers):
            raise ProtocolError("P needs N=VALUE with a register of the description")
        data = hex_bytes(value_text)
        if len(data) != layout.registers[number].bits // 8:
            raise ProtocolError(f"register {layout.registers[number].name} takes "
                                f"{layout.registers[number].bits // 8} bytes, got {len(data)}")
        self._set_registers(self._register_file(self.general_thread), [(number, int.from_bytes(data, "little"))])

    def _set_registers(self, registers, changes):
        rip = registers.layout.index("rip" if registers.layout.name == "64" else "eip")
        traced = self.machine.loops[self.general_thread].driver is not None
        for number, value in changes:
            if number == rip and traced and value != registers.value(number):
                self.log(f"vCPU {self.general_thread} is inside a V2E trace: its instruction pointer stays")
                self.reply(E_BUSY)
                return
        for number, value in changes:
            registers.set(number, value)
        registers.flush()
        self.reply(b"OK")

    # -- memory ----------------------------------------------------------------

    def _address_length(self, text):
        address_text, separator, length_text = text.partition(b",")
        if not separator:
            raise ProtocolError("expected ADDR,LENGTH")
        return hex_number(address_text), hex_number(length_text, limit=1 << 32)

    def _sregs(self):
        return self.machine.vcpus[self.general_thread].get_sregs()

    def _read_memory(self, payload):
        address, length = self._address_length(payload[1:])
        length = min(length, MAX_PAYLOAD // 2)   # a short read is allowed; gdb asks for the rest
        if length == 0:
            self.reply(b"")
            return
        try:
            data = virtual.read(self.machine.memory, self._sregs(), address, length, self.controller.table.software)
        except virtual.Unmapped as error:
            self.log(f"read at {address:#x}: {error}")
            self.reply(E_FAULT)
            return
        self.reply(data.hex().encode())

    def _write(self, address, data):
        try:
            virtual.write(self.machine.memory, self._sregs(), address, data, self.controller.table.software)
        except virtual.Unmapped as error:
            self.log(f"write at {address:#x}: {error}")
            self.reply(E_FAULT)
            return
        self.reply(b"OK")

    def _write_memory(self, payload):
        header, separator, data_text = payload[1:].partition(b":")
        address, length = self._address_length(header)
        data = hex_bytes(data_text)
        if not separator or len(data) != length:
            raise ProtocolError(f"M announces {length} bytes and carries {len(data)}")
        self._write(address, data)

    def _write_binary(self, payload):
        header, separator, binary = payload[1:].partition(b":")
        address, length = self._address_length(header)
        data = unescape(binary)
        if not separator or len(data) != length:
            raise ProtocolError(f"X announces {length} bytes and carries {len(data)}")
        self._write(address, data)

    # -- breakpoints -----------------------------------------------------------

    def _breakpoint(self, payload):
        fields = payload[1:].split(b";", 1)[0].split(b",")
        if len(fields) != 3:
            raise ProtocolError("expected TYPE,ADDR,KIND")
        kind = hex_number(fields[0])
        if kind >= len(KINDS):
            raise ProtocolError(f"no breakpoint type {kind}")
        return kind, hex_number(fields[1]), hex_number(fields[2], limit=1 << 32)

    def _insert(self, payload):
        kind, address, length = self._breakpoint(payload)
        placing = self.controller.placing(self.general_thread, address)
        try:
            entry = self.controller.table.insert(kind, address, length, placing)
        except BreakpointError as error:
            self.log(f"cannot insert a {KINDS[kind]} at {address:#x}: {error}")
            self.reply(E_NO_SPACE if isinstance(error, NoDebugRegister) else E_INVALID)
            return
        self.log(f"{KINDS[kind]} at {address:#x} ({length}): {entry.placement}")
        for moved in self.controller.table.moved:
            self.log(f"{KINDS[moved.kind]} at {moved.address:#x} moved to int3 (physical {moved.gpa:#x})")
        self.reply(b"OK")

    def _remove(self, payload):
        kind, address, length = self._breakpoint(payload)
        if not self.controller.table.remove(kind, address, length):
            self.log(f"no {KINDS[kind]} at {address:#x} to remove")
            self.reply(E_INVALID)
            return
        self.reply(b"OK")

    # -- resuming --------------------------------------------------------------

    def _resume(self, actions, address=None):
        if address is not None:
            registers = self._register_file(self.continue_thread if self.continue_thread is not None
                                            else self.last_stop.vcpu_id)
            rip = registers.layout.index("rip" if registers.layout.name == "64" else "eip")
            registers.set(rip, address)
            registers.flush()
        self.running = True
        self._registers.clear()
        self.controller.resume(actions)

    def _legacy_address(self, text):
        return hex_number(text) if text else None

    def _continue(self, payload):
        address = self._legacy_address(payload[1:])
        self._resume({vcpu.id: "continue" for vcpu in self.machine.vcpus}, address)

    def _step(self, payload):
        address = self._legacy_address(payload[1:])
        thread = self.last_stop.vcpu_id if self.continue_thread is None else self.continue_thread
        self._resume({thread: "step"}, address)

    def _signal_and_address(self, payload):
        signal_text, _, address_text = payload[1:].partition(b";")
        signal = hex_number(signal_text, limit=256)
        if signal:
            self.log(f"signal {signal} is not delivered to the guest")
        return self._legacy_address(address_text)

    def _continue_signal(self, payload):
        self._resume({vcpu.id: "continue" for vcpu in self.machine.vcpus}, self._signal_and_address(payload))

    def _step_signal(self, payload):
        address = self._signal_and_address(payload)
        thread = self.last_stop.vcpu_id if self.continue_thread is None else self.continue_thread
        self._resume({thread: "step"}, address)

    def _v_cont(self, arguments):
        if arguments == b"?":
            self.reply(b"vCont;c;C;s;S")
            return
        if not arguments.startswith(b";"):
            raise ProtocolError("vCont needs ;ACTION[:THREAD]...")
        actions = {}
        for part in arguments[1:].split(b";"):
            action, _, thread = part.partition(b":")
            verb = action[:1]
            if verb not in (b"c", b"C", b"s", b"S") or (verb in (b"c", b"s") and len(action) != 1):
                raise ProtocolError(f"vCont action {action[:16]!r}")
            if verb in (b"C", b"S") and hex_number(action[1:], limit=256):
                self.log(f"vCont {action.decode()}: signals are not delivered to the guest")
            what = "step" if verb in (b"s", b"S") else "continue"
            try:
                vcpu_id = self._thread(thread, allow_all=True) if thread else None
            except _NoThread:
                self.reply(E_NO_THREAD)
                return
            everyone = [vcpu.id for vcpu in self.machine.vcpus]
            for vcpu_id in everyone if vcpu_id is None else [vcpu_id]:
                actions.setdefault(vcpu_id, what)   # the leftmost action for a thread applies
        self._resume(actions)

    def _v_packet(self, payload):
        name, _, arguments = payload[1:].partition(b";")
        if name == b"Cont?":
            self._v_cont(b"?")
        elif name == b"Cont":
            self._v_cont(b";" + arguments)
        elif name == b"Kill":
            self.reply(b"OK")
            self._kill(payload)
        else:
            self.reply(b"")   # vMustReplyEmpty and what this stub does not support

    def _detach(self, payload):
        self.reply(b"OK")
        self.log("gdb detached: the guest runs on")
        self.controller.detach()
        self.ended = True

    def _kill(self, payload):
        self.log("gdb killed the guest")
        self.controller.kill()
        self.ended = True

    # -- queries ---------------------------------------------------------------

    def _query(self, payload):
        name, separator, arguments = payload[1:].partition(b":")
        if name == b"Supported":
            self.reply(_FEATURES)
        elif name == b"Xfer" and arguments.startswith(b"features:read:"):
            self._features(arguments[len(b"features:read:"):])
        elif name == b"Attached":
            self.reply(b"1")
        elif name == b"C":
            self.reply(b"QC%x" % (self.last_stop.vcpu_id + 1))
        elif name == b"fThreadInfo":
            self.reply(b"m" + b",".join(b"%x" % (vcpu.id + 1) for vcpu in self.machine.vcpus))
        elif name == b"sThreadInfo":
            self.reply(b"l")
        elif name.startswith(b"ThreadExtraInfo,"):
            try:
                vcpu_id = self._thread(name[len(b"ThreadExtraInfo,"):])
            except _NoThread:
                self.reply(E_NO_THREAD)
                return
            self.reply(self._thread_description(vcpu_id).encode().hex().encode())
        elif name.startswith(b"Rcmd,"):
            command = hex_bytes(name[len(b"Rcmd,"):]).decode("utf-8", "replace")
            self.output(self.monitor.run(command, self))
            self.reply(b"OK")
        elif name == b"Symbol":
            self.reply(b"OK")
        else:
            self.reply(b"")

    def _features(self, arguments):
        annex, _, window = arguments.partition(b":")
        if annex != b"target.xml":
            raise ProtocolError(f"no feature document {annex[:40]!r}: there is target.xml")
        offset, length = self._address_length(window)
        document = target_xml(self._layout())
        chunk = document[offset:offset + min(length, MAX_PAYLOAD // 2)]
        last = offset + len(chunk) >= len(document)
        self.reply((b"l" if last else b"m") + escape(chunk))

    def _set(self, payload):
        if payload == b"QStartNoAckMode":
            self.reply(b"OK")
            self.no_ack = True
        else:
            self.reply(b"")


class _NoThread(Exception):
    """A thread id naming no vCPU."""
