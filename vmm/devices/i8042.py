"""The PS/2 controller (i8042): data port 0x60, status and command port 0x64, with no
keyboard or mouse attached.

Enough of it for a kernel to probe it (self-test, interface tests, the command byte,
the output port) and to reset the machine: command 0xFE (pulse the reset line) or a write
of the output port with its reset bit clear, as PC kernels do to reboot.
"""
import collections
import threading

DATA_PORT = 0x60
COMMAND_PORT = 0x64
COMMAND_OFFSET = COMMAND_PORT - DATA_PORT
PORT_COUNT = 5            # 0x60-0x64; the in-kernel PIT serves 0x61 before it gets here

STATUS_OUTPUT_FULL, STATUS_SYSTEM, STATUS_COMMAND = 0x01, 0x04, 0x08
COMMAND_BYTE_DEFAULT = 0x30          # both ports disabled, no interrupts, translation off
OUTPUT_PORT_DEFAULT = 0x01           # reset line high (bit 0), A20 (bit 1) off
OUTPUT_PORT_RESET = 0x01

READ_COMMAND_BYTE, WRITE_COMMAND_BYTE = 0x20, 0x60
DISABLE_AUX, ENABLE_AUX, TEST_AUX = 0xA7, 0xA8, 0xA9
SELF_TEST, TEST_KEYBOARD = 0xAA, 0xAB
DISABLE_KEYBOARD, ENABLE_KEYBOARD = 0xAD, 0xAE
READ_OUTPUT_PORT, WRITE_OUTPUT_PORT = 0xD0, 0xD1
WRITE_KEYBOARD_OUTPUT, WRITE_AUX_OUTPUT, WRITE_AUX = 0xD2, 0xD3, 0xD4
PULSE_FIRST = 0xF0                   # 0xF0-0xFF pulse output lines; bit 0 clear pulses reset
SELF_TEST_PASSED, INTERFACE_OK = 0x55, 0x00
COMMAND_BYTE_AUX_DISABLED, COMMAND_BYTE_KEYBOARD_DISABLED = 0x20, 0x10


class I8042:
    def __init__(self, on_reset):
        self._on_reset = on_reset          # called when the guest resets the machine
        self._lock = threading.Lock()
        self._output = collections.deque(maxlen=16)
        self.command_byte = COMMAND_BYTE_DEFAULT
        self.output_port = OUTPUT_PORT_DEFAULT
        self._pending = None               # a command waiting for its data byte
        self._last_was_command = False

    def read(self, offset, size):
        with self._lock:
            if offset == COMMAND_OFFSET:
                return (STATUS_SYSTEM | (STATUS_OUTPUT_FULL if self._output else 0)
                        | (STATUS_COMMAND if self._last_was_command else 0))
            if offset == 0:
                return self._output.popleft() if self._output else 0
            return 0xFF

    def write(self, offset, size, value):
        value &= 0xFF
        reset = False
        with self._lock:
            if offset == COMMAND_OFFSET:
                self._last_was_command = True
                reset = self._command(value)
            elif offset == 0:
                self._last_was_command = False
                reset = self._data(value)
        if reset:
            self._on_reset()

    def _command(self, command):
        """Returns True when the command resets the machine."""
        self._pending = None
        if command == READ_COMMAND_BYTE:
            self._output.append(self.command_byte)
        elif command in (WRITE_COMMAND_BYTE, WRITE_OUTPUT_PORT, WRITE_KEYBOARD_OUTPUT, WRITE_AUX_OUTPUT,
                         WRITE_AUX):
            self._pending = command
        elif command == SELF_TEST:
            self._output.append(SELF_TEST_PASSED)
        elif command in (TEST_AUX, TEST_KEYBOARD):
            self._output.append(INTERFACE_OK)
        elif command == DISABLE_AUX:
            self.command_byte |= COMMAND_BYTE_AUX_DISABLED
        elif command == ENABLE_AUX:
            self.command_byte &= ~COMMAND_BYTE_AUX_DISABLED
        elif command == DISABLE_KEYBOARD:
            self.command_byte |= COMMAND_BYTE_KEYBOARD_DISABLED
        elif command == ENABLE_KEYBOARD:
            self.command_byte &= ~COMMAND_BYTE_KEYBOARD_DISABLED
        elif command == READ_OUTPUT_PORT:
            self._output.append(self.output_port)
        elif command >= PULSE_FIRST:
            return not command & OUTPUT_PORT_RESET
        return False

    def _data(self, value):
        """A data byte: the argument of a pending command, else for the (absent) keyboard."""
        command, self._pending = self._pending, None
        if command == WRITE_COMMAND_BYTE:
            self.command_byte = value
        elif command == WRITE_OUTPUT_PORT:
            self.output_port = value
            return not value & OUTPUT_PORT_RESET
        elif command in (WRITE_KEYBOARD_OUTPUT, WRITE_AUX_OUTPUT):
            self._output.append(value)    # as if the device had sent it
        return False
