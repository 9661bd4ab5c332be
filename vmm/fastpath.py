"""The C helper for the hot loops (vmm/fastpath.c, compiled at install through cffi's API
mode by ffibuild.py), or None: when it was not built, or VMM_FASTPATH=0 asks for the pure
Python path (which the tests compare it with), every caller does the same work in Python.

    from vmm import fastpath
    if fastpath.lib is not None:
        ...
"""
import os


def _load():
    if os.environ.get("VMM_FASTPATH") == "0":
        return None, None
    try:
        from . import _fastpath
    except ImportError:
        return None, None
    return _fastpath.ffi, _fastpath.lib


ffi, lib = _load()


class PortPlan:
    """What vmm_run_ports may serve (struct vmm_port_plan) and the buffer its stream fills;
    PortBus.plan() fills it before each call, from what the devices allow at that moment."""

    STREAM_CAPACITY = 4096
    MAX_CONSTANT_PORTS = 8

    def __init__(self):
        self.struct = ffi.new("struct vmm_port_plan *")
        self._stream = ffi.new("uint8_t[]", self.STREAM_CAPACITY)
        self.struct.stream = self._stream
        self.stream_device = self.stream_offset = None
        self.clear()

    def clear(self):
        plan = self.struct
        plan.stream_port = plan.stream_stop = -1
        plan.stream_room = plan.stream_length = plan.constants = 0
        self.stream_device = self.stream_offset = None

    def set_stream(self, port, device, offset, room, stop):
        """1-byte writes to port gather here, at most room bytes (up to the buffer's size), until
        the byte stop (-1: none); device.stream(offset, data) then takes them."""
        plan = self.struct
        plan.stream_port, plan.stream_stop = port, stop
        plan.stream_room = min(room, self.STREAM_CAPACITY)
        self.stream_device, self.stream_offset = device, offset

    def add_constant(self, port, value):
        """1-byte reads of port give value (False when the plan is full)."""
        plan = self.struct
        if plan.constants == self.MAX_CONSTANT_PORTS:
            return False
        plan.constant_ports[plan.constants] = port
        plan.constant_values[plan.constants] = value
        plan.constants += 1
        return True

    def drain(self):
        """Hand the gathered bytes to their device."""
        length = self.struct.stream_length
        if length:
            self.struct.stream_length = 0
            self.stream_device.stream(self.stream_offset, ffi.buffer(self._stream, length)[:])

    @property
    def handled(self):
        """Exits vmm_run_ports served with this plan."""
        return self.struct.handled
