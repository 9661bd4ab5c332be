"""`monitor` commands (qRcmd): the VMM's view of the selected vCPU, and V2E from the gdb prompt."""
from ..errors import VmmError
from ..v2e.watch import parse_watch
from ..x86 import paging
from ..x86.registers import (CONTROL_REGISTERS, DESCRIPTOR_TABLES, GENERAL_REGISTERS, SEGMENT_FIELDS,
                             SEGMENT_REGISTERS, SYSTEM_SEGMENTS, special_registers_as_dict)
from .breakpoints import KINDS

HELP = """\
monitor info registers    every register of the selected thread's vCPU: general, segments with
                          their descriptors, descriptor tables, control registers, and the
                          guest's own debug registers
monitor pa ADDR           where linear address ADDR lands in guest-physical memory
monitor breakpoints       where each breakpoint lives: a debug register, int3, a watched page,
                          or single-stepping (stepped watchpoints)
monitor v2e watch RANGE   start V2E on guest-physical pages: GPA, GPA-END or GPA+LEN
monitor v2e unwatch       stop V2E (its trace file, if any, gets its summary)
monitor v2e status        what V2E watches and has traced
"""


class Monitor:
    def __init__(self, controller, watching):
        self._controller = controller
        self._watching = watching

    def run(self, command, connection):
        """The text a command prints (errors included: gdb shows monitor output as is)."""
        words = command.split()
        try:
            if words == ["info", "registers"]:
                return self._registers(connection.general_thread)
            if len(words) == 2 and words[0] == "pa":
                return self._physical(connection.general_thread, words[1])
            if words == ["breakpoints"]:
                return self._breakpoints()
            if len(words) == 3 and words[:2] == ["v2e", "watch"]:
                start, end = parse_watch(words[2])
                self._watching.watch(start, end)
                return self._after_watch_change(connection, self._watching.status())
            if words == ["v2e", "unwatch"]:
                self._watching.unwatch(busy=self._controller.in_v2e_callback)
                return self._after_watch_change(connection, "V2E stopped")
            if words == ["v2e", "status"]:
                return self._watching.status() + "\n"
        except VmmError as error:
            return f"vmm: {error}\n"
        return HELP if words in ([], ["help"]) else f"vmm: unknown monitor command {command!r}\n{HELP}"

    def _after_watch_change(self, connection, text):
        """Breakpoints move in or out of the pages now watched."""
        lines = [text] + self._controller.replace_breakpoints(connection.general_thread)
        return "\n".join(lines) + "\n"

    def _registers(self, vcpu_id):
        vcpu = self._controller.machine.vcpus[vcpu_id]
        regs, sregs, debugregs = vcpu.get_regs(), vcpu.get_sregs(), vcpu.get_debugregs()
        lines = [f"vCPU {vcpu_id}"]
        values = [(name, getattr(regs, name)) for name in GENERAL_REGISTERS]
        for row in range(0, len(values), 3):
            lines.append("  ".join(f"{name:<6} {value:#018x}" for name, value in values[row:row + 3]))
        special = special_registers_as_dict(sregs)
        for name in SEGMENT_REGISTERS + SYSTEM_SEGMENTS:
            segment = special[name]
            fields = " ".join(f"{field}={segment[field]:#x}" for field in SEGMENT_FIELDS if field != "selector")
            lines.append(f"{name:<4} {segment['selector']:#06x}  {fields}")
        for name in DESCRIPTOR_TABLES:
            lines.append(f"{name:<4} base={special[name]['base']:#x} limit={special[name]['limit']:#x}")
        lines.append("  ".join(f"{name} {special[name]:#x}" for name in CONTROL_REGISTERS))
        lines.append("guest's own: " + "  ".join(f"dr{index} {debugregs.db[index]:#x}" for index in range(4))
                     + f"  dr6 {debugregs.dr6:#x}  dr7 {debugregs.dr7:#x}")
        return "\n".join(lines) + "\n"

    def _physical(self, vcpu_id, text):
        try:
            address = int(text, 0)
        except ValueError:
            return f"vmm: pa: {text!r} is not an address\n"
        if not 0 <= address < 1 << 64:
            return f"vmm: pa: {text!r} is out of range\n"
        machine = self._controller.machine
        translation = paging.walk(machine.memory, machine.vcpus[vcpu_id].get_sregs(), address)
        if translation is None:
            return f"{address:#x}: not mapped\n"
        rights = ", ".join(right for right, allowed in (("writable", translation.writable),
                                                        ("user", translation.user),
                                                        ("executable", translation.executable)) if allowed)
        ram = "" if machine.memory.contains(translation.physical) else ", not RAM"
        return (f"{address:#x} -> physical {translation.physical:#x} ({translation.page_size >> 10} KiB page"
                f"{', ' + rights if rights else ''}{ram})\n")

    def _breakpoints(self):
        entries = self._controller.table.entries()
        if not entries:
            return "no breakpoints inserted (gdb inserts them when the guest resumes)\n"
        lines = []
        for entry in entries:
            where = {"dr": lambda: "debug register " + ", ".join(f"DR{slot}" for slot in entry.slots),
                     "int3": lambda: f"int3 at physical {entry.gpa:#x}",
                     "watched": lambda: "a page V2E watches: checked at each traced instruction",
                     "stepped": lambda: f"single-stepping, comparing physical {entry.gpa:#x}+{entry.length}"}
            lines.append(f"{KINDS[entry.kind]} at {entry.address:#x} ({entry.length}): {where[entry.placement]()}")
        return "\n".join(lines) + "\n"
