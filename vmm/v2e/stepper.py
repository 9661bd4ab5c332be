"""Driving a vCPU through watched code one instruction at a time.

A Stepper takes over its vCPU's run loop (RunLoop.drive) for one event: single-step is on,
each DEBUG exit is one executed instruction, with the registers KVM copies into kvm_run
(KVM_CAP_SYNC_REGS); every other exit (I/O, MMIO, HLT, a kick) goes back to the run loop's
handlers. It keeps the CPU state the trace needs between steps (the instruction about to
execute, the code page and its RAM, the special registers) and hands each executed
instruction to its sink; when RIP leaves the watched pages it gives the vCPU back.
"""
import kvm_abi as abi

from ..kvm import exits
from ..x86 import insn, paging
from ..x86.mode import code_segment, cpu_mode
from ..x86.paging import PAGE_MASK, PAGE_SIZE
from ..x86.registers import RIP

# Decoded instructions are memoised by their bytes, and page translations by (CR3, linear
# page); a guest that generates code or aliases pages without end only makes a table start over.
MAX_MEMOISED_INSTRUCTIONS = 1 << 14
MAX_CACHED_PAGES = 1 << 12
HLT_OPCODE = 0xF4
# Instructions after which CS, the control registers or EFER may differ: the stepper
# re-reads the special registers after them (and after any unexpected jump of RIP, e.g.
# an exception), and otherwise keeps the ones it has.
_MODE_CHANGERS = frozenset((0x9A, 0xCA, 0xCB, 0xCC, 0xCD, 0xCE, 0xCF, 0xEA, 0xF1, 0xFF,
                            0x0F00, 0x0F01, 0x0F05, 0x0F06, 0x0F07, 0x0F22, 0x0F30, 0x0F34, 0x0F35, 0x0FAA))
_NEAR_BRANCHES = frozenset((*range(0x70, 0x80), 0xC2, 0xC3, 0xE0, 0xE1, 0xE2, 0xE3, 0xE8, 0xE9, 0xEB,
                            *range(0x0F80, 0x0F90)))
# What the stepper does after an instruction, by kind: nothing special (RIP moved to a new
# place unexpectedly: an exception, so re-read the special registers), nothing for a near
# branch, re-read the special registers after a mode changer (or an undecodable
# instruction), halt after HLT.
_ORDINARY, _NEAR_BRANCH, _MODE_CHANGE, _HLT = range(4)
_DEBUG, _IO, _MMIO = abi.KVM_EXIT_DEBUG, abi.KVM_EXIT_IO, abi.KVM_EXIT_MMIO


def new_instruction_memo():
    """bits -> {15 code bytes: decoded instruction}, shared by the steppers of one engine."""
    return {16: {}, 32: {}, 64: {}}


class Stepper:
    """One event's single-stepping of one vCPU (a RunLoop driver).

    The sink gets instruction(stepper, values) for each executed instruction while `record`
    is on or the budget matters (values: the registers after it; False ends the trace), and
    left(stepper, rip, reason) once the vCPU is given back.
    """

    def __init__(self, loop, memory, watched_pages, memo, sink, event, record, synced, max_steps):
        self.loop = loop
        self.event = event
        self.record = record              # instructions are recorded (else only stepped)
        self.steps = self.traced = 0
        self._vcpu = loop.vcpu
        self._memory = memory
        self._watched = watched_pages
        self._memo = memo
        self._sink = sink
        self._records = sink.records_steps
        self._max_steps = max_steps
        self._synced = synced
        self._read_regs = self._vcpu.register_reader(synced)
        # The instruction at rip: its bytes, where it goes when it does not branch, its kind,
        # and whether it is a branch to itself (which makes no progress yet executes).
        self.rip = self.gpa = self.code = None
        self._next_rip = self._kind = self._self_branch = None
        # (CR3, linear page) -> physical page. A stale entry after the guest edits its page
        # tables only ends or prolongs the trace; the trap catches the next real fetch.
        self._pages = {}
        # The watched page RIP is in: its linear and physical address and a view of its RAM.
        self._linear_page = self._page_gpa = self._page_view = None
        self._sregs = self._bits = self._cs_base = self._cs_mask = self._decoded = None

    # -- start and end -------------------------------------------------------

    def start(self, rip, sregs, gpa):
        """Take over the vCPU at the instruction at rip, fetched from gpa."""
        self._load_sregs(sregs)
        linear = (self._cs_base + rip) & self._cs_mask
        self._linear_page, self._page_gpa = linear & PAGE_MASK, gpa & PAGE_MASK
        self._page_view = self._memory.view(self._page_gpa, PAGE_SIZE)
        self._next_instruction(rip, linear)
        if self._synced:
            self._vcpu.sync_regs(True)
        self._vcpu.set_guest_debug(single_step=True)
        self.loop.drive(self)

    def _end(self, rip, reason):
        """Give the vCPU back: single-step off, then tell the sink."""
        self._vcpu.set_guest_debug()
        self._vcpu.sync_regs(False)
        self._page_view = None
        self.loop.release()
        self._sink.left(self, rip, reason)

    def abandon(self):
        """The run ended while stepping (no vCPU thread runs): drop the vCPU's state."""
        self._vcpu.sync_regs(False)
        self._page_view = None
        self.loop.release()

    # -- each exit -----------------------------------------------------------

    def on_exit(self, exit):
        """One KVM_RUN's exit while stepping. The common step (recorded, an ordinary
        instruction or a near branch, the same code page) stays in this method."""
        reason = exit.reason
        if reason == _DEBUG:
            values = self._read_regs()
            rip = values[RIP]
            if rip == self.rip and not self._self_branch:
                # No progress: a rep-string iteration, or a trap KVM reports again or late
                # (VMX repeats it after port I/O; an OUT may already be counted at its exit).
                return
        else:
            self.loop.dispatch(exit)
            # KVM may advance RIP past an OUT (or an MMIO write) before exiting and then
            # report no single-step trap for it: count it here.
            if (reason != _IO and reason != _MMIO) or self.loop.machine.outcome is not None:
                return
            values = self._read_regs()
            rip = values[RIP]
            if rip == self.rip:
                return
        # The instruction at self.rip executed.
        self.steps += 1
        if self.record:
            self.traced += 1
            if (self._records or self.traced >= self._max_steps) and not self._sink.instruction(self, values):
                return
        kind = self._kind
        if kind >= _MODE_CHANGE or (kind == _ORDINARY and rip != self._next_rip):
            if kind == _HLT:
                # With single-step on, KVM reports HLT as a DEBUG exit and goes past it.
                self._end(rip, "hlt")
                self.loop.dispatch(exits.Hlt(abi.KVM_EXIT_HLT))
                return
            self._load_sregs(self._vcpu.get_sregs())
        linear = (self._cs_base + rip) & self._cs_mask
        if linear & PAGE_MASK != self._linear_page and not self._enter_page(linear & PAGE_MASK):
            self._end(rip, "left the watched pages")
            return
        self._next_instruction(rip, linear)

    def stop(self, rip, reason):
        """End the trace from the sink (the analysis stopped it)."""
        self._end(rip, reason)

    # -- CPU state -----------------------------------------------------------

    def _load_sregs(self, sregs):
        """Take new special registers: CPU mode, CS base, paging; forget the code page."""
        self._sregs = sregs
        self._bits = cpu_mode(sregs)[1]
        segment = code_segment(sregs)
        self._cs_base, self._cs_mask = segment.base, segment.mask
        self._decoded = self._memo[self._bits]
        self._linear_page = self._page_view = None

    def _next_instruction(self, rip, linear):
        """Remember the instruction at RIP (linear, in the code page) before it executes."""
        offset = linear & ~PAGE_MASK
        self.rip, self.gpa = rip, self._page_gpa | offset
        if offset <= PAGE_SIZE - insn.MAX_LENGTH:
            code = self._page_view[offset:offset + insn.MAX_LENGTH].tobytes()
        else:
            code = self._code_across_pages(linear)
        decoded = self._decoded.get(code) or self._decode(code)
        self.code, length, self._kind, self._self_branch = decoded
        self._next_rip = rip + length

    def _decode(self, code):
        """(instruction bytes, length, kind, branches to itself) of the code at RIP, memoised
        by the 15 bytes read there, so a loop is decoded once and rewritten code again."""
        length_and_opcode = insn.decode(code, self._bits)
        if length_and_opcode is None:
            decoded = (code, len(code), _MODE_CHANGE, False)
        else:
            length, opcode = length_and_opcode
            kind = (_HLT if opcode == HLT_OPCODE else _MODE_CHANGE if opcode in _MODE_CHANGERS
                    else _NEAR_BRANCH if opcode in _NEAR_BRANCHES else _ORDINARY)
            decoded = (code[:length], length, kind, insn.branches_to_itself(code[:length], opcode, self._bits))
        if len(self._decoded) >= MAX_MEMOISED_INSTRUCTIONS:
            self._decoded.clear()
        self._decoded[code] = decoded
        return decoded

    def _code_across_pages(self, linear):
        """Up to 15 bytes at linear, whose page ends within 15 bytes: the rest comes from the
        next linear page, wherever that is mapped."""
        code = self._page_view[linear & ~PAGE_MASK:].tobytes()
        rest = insn.MAX_LENGTH - len(code)
        next_gpa = paging.translate(self._memory, self._sregs, (linear | ~PAGE_MASK) + 1)
        if next_gpa is not None and self._memory.contains(next_gpa, rest):
            code += self._memory.read(next_gpa, rest)
        return code

    def _enter_page(self, linear_page):
        """Make linear_page the code page; False when it is not a watched page."""
        key = (self._sregs.cr3, linear_page)
        page = self._pages.get(key)
        if page is None:
            page = paging.translate(self._memory, self._sregs, linear_page)
            if page is None:
                return False
            if len(self._pages) >= MAX_CACHED_PAGES:
                self._pages.clear()
            self._pages[key] = page
        if page not in self._watched:
            return False
        self._linear_page, self._page_gpa = linear_page, page
        self._page_view = self._memory.view(page, PAGE_SIZE)
        return True
