"""A 16550A UART (COM1 at 0x3f8) with its 16-byte receive FIFO and interrupts, enough for
polled drivers and for Linux's 8250 driver (which probes the FIFO).

Output goes to a binary sink (stdout or a file), flushed at each newline and
whenever the buffer fills, so a crash or timeout loses nothing already sent; a
transmitted byte leaves at once, so the transmitter is always empty. Input comes
from a file (read as the guest asks) or from stdin (read by a helper thread, so the
guest never blocks the vCPU; its arrival raises the receive interrupt). The line sends
only what the receive FIFO has room for, and only to a receiver that is ready: a guest
that never enables the receive interrupt (a polling driver) gets input at once; one that
does gets it from its first interrupt identification (IIR read) with the receive
interrupt enabled, or RX_READY_DELAY after enabling it if it reads no IIR before its
first interrupt. Linux's 8250 driver reads the receiver to empty it when it probes the
port and twice while a program opens it, before that first identification: input that
came before waits instead of being thrown away, and none is overrun.
"""
import collections
import os
import stat
import threading

COM1_BASE = 0x3F8
COM1_IRQ = 4
PORT_COUNT = 8
FIFO_SIZE = 16

# Register offsets.
RBR_THR_DLL, IER_DLM, IIR_FCR, LCR, MCR, LSR, MSR, SCR = range(8)

LCR_DLAB = 0x80
MCR_LOOP = 0x10
LSR_DR, LSR_THRE, LSR_TEMT = 0x01, 0x20, 0x40
IER_RDI, IER_THRI = 0x01, 0x02
IIR_NO_INT, IIR_THRI, IIR_RDI, IIR_RX_TIMEOUT, IIR_FIFO_ENABLED = 0x01, 0x02, 0x04, 0x0C, 0xC0
FCR_FIFO_ENABLE, FCR_CLEAR_RX, FCR_CLEAR_TX = 0x01, 0x02, 0x04
FCR_TRIGGER_SHIFT = 6
RX_TRIGGER_LEVELS = (1, 4, 8, 14)
MSR_CTS, MSR_DSR, MSR_DCD = 0x10, 0x20, 0x80

RX_READY_DELAY = 0.05   # seconds
FLUSH_THRESHOLD = 4096
STDIN_QUEUE_LIMIT = 1 << 16


class SerialInput:
    """Bytes for the UART's receiver, from a regular file or from a stream read by a thread."""

    def __init__(self, fileobj):
        self._file = fileobj
        self._pending = collections.deque()
        self._lock = threading.Lock()
        try:
            regular = stat.S_ISREG(os.fstat(fileobj.fileno()).st_mode)
        except (AttributeError, OSError, ValueError):
            regular = True  # an in-memory file: read it directly
        self._thread = None
        self.listener = None   # called (on the reading thread) when input arrives
        if not regular:
            self._thread = threading.Thread(target=self._pump, name="serial-input", daemon=True)
            self._thread.start()

    def _pump(self):
        read = getattr(self._file, "read1", self._file.read)
        while True:
            try:
                chunk = read(4096)
            except (OSError, ValueError):
                return
            if not chunk:
                return
            with self._lock:
                if len(self._pending) < STDIN_QUEUE_LIMIT:
                    self._pending.extend(chunk)
            listener = self.listener
            if listener is not None:
                listener()

    def available(self):
        if self._thread is None and not self._pending:
            self._pending.extend(self._file.read(4096) or b"")
        return bool(self._pending)

    def waiting(self, limit):
        """How many bytes are ready to be read, counting at most `limit`."""
        return min(len(self._pending), limit) if self.available() else 0

    def pop(self):
        with self._lock:
            return self._pending.popleft() if self.available() else None


class Uart16550:
    # Served in batches by a vCPU (see vmm.devices.bus): transmitted bytes; LSR and MSR reads.
    FAST_OFFSETS = ((RBR_THR_DLL,), (LSR, MSR))

    def __init__(self, output=None, input=None, irq_line=None):
        self._output = output            # binary file object or None
        self._input = input              # SerialInput or None
        self._irq_line = irq_line        # callable(level) or None
        self._irq_lock = threading.Lock()
        self._out_buffer = bytearray()
        self._loopback = collections.deque(maxlen=FIFO_SIZE)
        self.bytes_written = 0
        self.ier = self.lcr = self.mcr = self.scr = 0
        self.fcr = 0
        self.dll, self.dlm = 0x0C, 0x00  # 9600 baud
        self._thr_interrupt = False
        self._irq_level = 0
        self._rx_interrupt_used = False   # the guest enabled the receive interrupt once
        self._rx_ready = False            # ... and then read IIR with it enabled (or waited)
        self._rx_ready_timer = None
        if input is not None and irq_line is not None:
            input.listener = self._update_irq

    # -- guest side ----------------------------------------------------------

    def read(self, offset, size):
        if offset == RBR_THR_DLL:
            if self.lcr & LCR_DLAB:
                return self.dll
            value = self._receive()
            self._update_irq()
            return value
        if offset == IER_DLM:
            return self.dlm if self.lcr & LCR_DLAB else self.ier
        if offset == IIR_FCR:
            if self.ier & IER_RDI and not self._rx_ready:
                self._receiver_ready()
            iir = self._pending_interrupt()
            if iir == IIR_THRI:
                self._thr_interrupt = False
                self._update_irq()
            return iir | (IIR_FIFO_ENABLED if self.fcr & FCR_FIFO_ENABLE else 0)
        if offset == LCR:
            return self.lcr
        if offset == MCR:
            return self.mcr
        if offset == LSR:
            return LSR_THRE | LSR_TEMT | (LSR_DR if self._input_waiting() else 0)
        if offset == MSR:
            if self.mcr & MCR_LOOP:  # DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD
                return ((self.mcr & 0x01) << 5 | (self.mcr & 0x02) << 3
                        | (self.mcr & 0x04) << 4 | (self.mcr & 0x08) << 4)
            return MSR_DCD | MSR_DSR | MSR_CTS
        return self.scr

    def write(self, offset, size, value):
        value &= 0xFF
        if offset == RBR_THR_DLL:
            if self.lcr & LCR_DLAB:
                self.dll = value
                return
            if self.mcr & MCR_LOOP:
                self._loopback.append(value)
            else:   # transmit
                self.bytes_written += 1
                if self._output is not None:
                    self._out_buffer.append(value)
                    if value == 0x0A or len(self._out_buffer) >= FLUSH_THRESHOLD:
                        self.flush()
            self._thr_interrupt = True
        elif offset == IER_DLM:
            if self.lcr & LCR_DLAB:
                self.dlm = value
                return
            if value & IER_THRI and not self.ier & IER_THRI:
                self._thr_interrupt = True
            if value & IER_RDI and not self.ier & IER_RDI:
                self._rx_interrupt_used = True
                self._start_rx_ready_timer()
            self.ier = value & 0x0F
        elif offset == IIR_FCR:
            if (value ^ self.fcr) & FCR_FIFO_ENABLE or value & FCR_CLEAR_RX:
                self._loopback.clear()
            self.fcr = value & ~(FCR_CLEAR_RX | FCR_CLEAR_TX)
        elif offset == LCR:
            self.lcr = value
        elif offset == MCR:
            self.mcr = value & 0x1F
        elif offset == SCR:
            self.scr = value
        if self._irq_line is not None:   # skip the call on a machine without interrupts
            self._update_irq()

    # -- batched access (PortBus.plan) ---------------------------------------

    def stream_room(self, offset):
        """Transmit-register writes may gather while each would only transmit (no divisor
        latch, no loopback, no interrupt enabled on a line): up to the next flush."""
        if (offset != RBR_THR_DLL or self.lcr & LCR_DLAB or self.mcr & MCR_LOOP
                or self._irq_line is not None and self.ier & (IER_THRI | IER_RDI)):
            return 0, -1
        if self._output is None:
            return 1 << 30, -1
        return FLUSH_THRESHOLD - len(self._out_buffer), 0x0A

    def stream(self, offset, data):
        """The bytes of that many transmit-register writes (stream_room allowed them)."""
        self.bytes_written += len(data)
        self._thr_interrupt = True
        if self._output is not None:
            self._out_buffer += data
            if data[-1] == 0x0A or len(self._out_buffer) >= FLUSH_THRESHOLD:
                self.flush()

    def constant_read(self, offset):
        """LSR without input, MSR without loopback: what read() would give."""
        if self.mcr & MCR_LOOP or offset == LSR and self._input is not None:
            return None
        if offset == LSR:
            return LSR_THRE | LSR_TEMT
        if offset == MSR:
            return MSR_DCD | MSR_DSR | MSR_CTS
        return None

    # -- internals -----------------------------------------------------------

    def _rx_level(self):
        """Bytes in the receive FIFO (one byte of holding register without FIFO mode)."""
        if self.mcr & MCR_LOOP:
            return len(self._loopback)
        if not self._line_sends():
            return 0
        return self._input.waiting(FIFO_SIZE if self.fcr & FCR_FIFO_ENABLE else 1)

    def _receive(self):
        if self.mcr & MCR_LOOP:
            return self._loopback.popleft() if self._loopback else 0
        value = self._input.pop() if self._line_sends() else None
        return 0 if value is None else value

    def _input_waiting(self):
        """Whether a byte is received (safe on any thread)."""
        if self.mcr & MCR_LOOP:
            return bool(self._loopback)
        return self._line_sends() and self._input.available()

    def _receiver_ready(self):
        """From now on the line sends (see the module's doc)."""
        self._rx_ready = True
        self._update_irq()

    def _start_rx_ready_timer(self):
        if self._rx_ready or self._input is None or self._irq_line is None or self._rx_ready_timer is not None:
            return
        self._rx_ready_timer = threading.Timer(RX_READY_DELAY, self._rx_ready_timeout)
        self._rx_ready_timer.daemon = True
        self._rx_ready_timer.start()

    def _rx_ready_timeout(self):
        """The receive interrupt stayed enabled without an identification: the guest waits for
        its first interrupt. (A probe that enabled it and turned it off again does not.)"""
        self._rx_ready_timer = None
        if self.ier & IER_RDI and not self._rx_ready:
            self._receiver_ready()

    def _line_sends(self):
        """Whether the line may send: there is input and the receiver is ready for it."""
        return self._input is not None and (self._rx_ready or not self._rx_interrupt_used)

    def _pending_interrupt(self):
        if self.ier & IER_RDI:
            received = self._rx_level()
            if received:
                if not self.fcr & FCR_FIFO_ENABLE:
                    return IIR_RDI
                trigger = RX_TRIGGER_LEVELS[self.fcr >> FCR_TRIGGER_SHIFT & 3]
                # Below the trigger level a real FIFO interrupts after a character timeout;
                # input here arrives all at once, so the timeout has passed.
                return IIR_RDI if received >= trigger else IIR_RX_TIMEOUT
        if self.ier & IER_THRI and self._thr_interrupt:
            return IIR_THRI
        return IIR_NO_INT

    def _update_irq(self):
        """Set the interrupt line to whether an enabled interrupt is pending; called by the
        vCPU after each access and by the input thread when input arrives."""
        if self._irq_line is None:
            return
        with self._irq_lock:
            level = int(bool(self.ier & IER_RDI and self._input_waiting()
                             or self.ier & IER_THRI and self._thr_interrupt))
            if level != self._irq_level:
                self._irq_level = level
                self._irq_line(level)

    def close(self):
        """Stop the receiver's timer (the interrupt line goes away with the VM)."""
        timer, self._rx_ready_timer = self._rx_ready_timer, None
        self._irq_line = None
        if timer is not None:
            timer.cancel()

    def flush(self):
        if self._out_buffer and self._output is not None:
            self._output.write(self._out_buffer)
            self._output.flush()
            self._out_buffer.clear()
