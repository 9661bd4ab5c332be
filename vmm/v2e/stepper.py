"""Driving a vCPU one instruction at a time, invisibly.

While any vCPU traces watched code the trap is disarmed for the whole VM, so every vCPU is
single-stepped by a Stepper (a RunLoop driver): each DEBUG exit is one executed instruction,
with the registers KVM copies into kvm_run (KVM_CAP_SYNC_REGS); every other exit (I/O, MMIO,
a kick) goes back to the run loop's handlers. A Stepper is either watching (the vCPU runs
unwatched code: nothing is recorded, but the moment an instruction touches a watched page an
event starts) or tracing an event (each executed instruction goes to the engine).

The guest must not see the stepping, so the Stepper keeps the guest's own view of what
single-stepping changes:
- RFLAGS.TF: KVM hides its own TF from KVM_GET_REGS, so the guest's TF is tracked here (set
  and cleared by popf, iret, sysret; cleared by event delivery). pushf and the RFLAGS image an
  exception or interrupt pushes get the guest's TF written back. A guest that sets TF gets its
  #DB (DR6.BS) after the right instruction; after MOV SS / POP SS the trap waits one more
  instruction, as on the CPU.
- the guest's own DR0-DR3 breakpoints reach the VMM as DEBUG exits too: they are delivered
  to the guest as #DB with their DR6 bits.
- time: rdtsc and rdtscp in traced code read a virtual TSC that advances by tsc_per_step per
  traced instruction; when the event ends the vCPU's TSC offset takes the hidden time out.
- HLT: KVM steps over it; on a machine with an in-kernel LAPIC the vCPU is put in the halted
  state instead, as the instruction would have done.
An exception or interrupt delivered during a step is recognised by the frame the CPU pushed
(the return address and CS it saved) and by the IDT gate of the handler the vCPU is in.
"""
import kvm_abi as abi

from ..kvm import exits
from ..x86 import decoder, idt, paging
from ..x86.decoder import Flow
from ..x86.mode import code_segment, cpu_mode
from ..x86.paging import PAGE_MASK, PAGE_SIZE
from ..x86.registers import (DR6_B0_B3, DR6_BS, DR7_CONDITION, DR7_ENABLE, MSR_CSTAR, MSR_IA32_TSC, MSR_LSTAR,
                             MSR_TSC_AUX, R11, RAX, RCX, RDX, RFLAGS, RFLAGS_RF, RFLAGS_TF, RIP, RSP)

# Decoded instructions are memoised by their bytes, and page translations by (CR3, linear
# page); a guest that generates code or aliases pages without end only makes a table start over.
MAX_MEMOISED_INSTRUCTIONS = 1 << 14
MAX_CACHED_PAGES = 1 << 12

# How an instruction transfers control: not at all (the next RIP must follow it), a near
# branch (its direct target or the next instruction, or for ret the return address), a far
# transfer or mode change (anything; the special registers are re-read), HLT.
_ORDINARY, _NEAR_BRANCH, _MODE_CHANGE, _HLT = range(4)
_KINDS = {Flow.ORDINARY: _ORDINARY, Flow.NEAR_BRANCH: _NEAR_BRANCH, Flow.FAR_OR_MODE_CHANGE: _MODE_CHANGE,
          Flow.HLT: _HLT}
_RETURNS = frozenset((0xC2, 0xC3))
# Instructions that always deliver an exception or a software interrupt: int3, int n, into,
# int1, ud0, ud1, ud2 (and bytes the decoder does not know: #UD).
_DELIVERING = frozenset((0xCC, 0xCD, 0xCE, 0xF1, 0x0FFF, 0x0FB9, 0x0F0B))
# Instructions the stepper looks at more closely (see the module docstring).
_PLAIN, _PUSHF, _POPF, _IRET, _SS_LOAD, _SYSRET, _RDTSC, _RDTSCP = range(8)
_POPS_FLAGS = (_POPF, _IRET, _SYSRET)
_SYSCALL = 0x0F05
# What KVM intercepts and may emulate or skip without a memory operand: in/out, hlt, pause
# (and nop: the same opcode), invd, wbinvd, mov to/from CR and DR, wrmsr, rdmsr, rdpmc, cpuid
# and the 0f 01 group (xsetbv, monitor, mwait, vmcall...).
_INTERCEPTED = frozenset((0xE4, 0xE5, 0xE6, 0xE7, 0xEC, 0xED, 0xEE, 0xEF, 0xF4, 0x90, 0x0F08, 0x0F09,
                          0x0F20, 0x0F21, 0x0F22, 0x0F23, 0x0F30, 0x0F32, 0x0F33, 0x0FA2, 0x0F01))
_ICEBP = 0xF1
# int n: its immediate; ud0-ud2 and unknown: #UD
_VECTORS = {0xCC: idt.BP_VECTOR, 0xCE: 4, _ICEBP: idt.DB_VECTOR}
_SPECIAL = {0x9C: _PUSHF, 0x9D: _POPF, 0xCF: _IRET, 0x17: _SS_LOAD, 0x0F07: _SYSRET, 0x0F31: _RDTSC}
_DEBUG, _IO, _MMIO = abi.KVM_EXIT_DEBUG, abi.KVM_EXIT_IO, abi.KVM_EXIT_MMIO
_BP_VECTOR = idt.BP_VECTOR
_STACK_WORD = {16: 2, 32: 4, 64: 8}
# Where around the stack pointer the stepper looks for an exception frame, in stack words:
# above it an error code and what a handler's first instruction may already have pushed,
# below it what that instruction popped (an error code it dropped).
_FRAME_SEARCH_SLOTS = range(-2, 4)
_HANDLER_ENTRY_REACH = 15   # a handler's first instruction may have run before the step ended
# Instructions a vCPU steps outside watched code before the engine may re-arm the trap: code
# that leaves the watched pages and soon comes back (a call out, an interrupt handler, a loop
# calling watched code) then costs no trap, and a timer faster than a trap's round trip cannot
# keep the guest from making progress.
REARM_AFTER_STEPS = 1000


def new_instruction_memo():
    """bits -> {15 code bytes: decoded instruction}, shared by the steppers of one engine."""
    return {16: {}, 32: {}, 64: {}}


def _special(instruction, code):
    if instruction.opcode == 0x8E:   # mov to a segment register: ModRM.reg 2 is SS
        return _SS_LOAD if instruction.reg == 2 else _PLAIN
    if instruction.opcode == 0x0F01 and instruction.reg == 7 and code[instruction.length - 1] == 0xF9:
        return _RDTSCP
    return _SPECIAL.get(instruction.opcode, _PLAIN)


class Stepper:
    """One vCPU's single-stepping (a RunLoop driver) for as long as the machine steps.

    The engine gets event_starts(stepper) when the instruction about to execute touches a
    watched page while the stepper watches (it calls begin() to trace, or leaves it
    watching), instruction(stepper, values) for each executed instruction of an event that
    is recorded (values: the registers after it; False ends the trace), and
    event_ends(stepper, event, rip, reason, detail) when tracing stops, and idle(stepper) once
    it has stepped rearm_after_steps instructions outside watched code.
    """

    def __init__(self, engine, loop, memory, watched_pages, memo, synced, tsc_per_step, halt_in_kernel, vendor,
                 rearm_after_steps=REARM_AFTER_STEPS, on_step=None):
        self.loop = loop
        self.vcpu = loop.vcpu
        self.event = None                 # the event being traced, or None while watching
        self.needs_prepare = False        # the run loop calls prepare() before the next KVM_RUN
        self.exit_while_stepping = False  # the exit being dispatched came from a step
        self.record = False               # the event's instructions are recorded
        self.steps = self.traced = 0      # of the current event
        # The instruction about to execute: RIP, its physical address and bytes, the
        # registers before it, and the watched page it touches (or None).
        self.rip = self.gpa = self.code = self.values = self.watched_page = None
        self._engine = engine
        self._memory = memory
        self._watched = watched_pages
        self._memo = memo
        self._synced = synced
        self._tsc_per_step = tsc_per_step
        self._halt_in_kernel = halt_in_kernel
        self._vendor = vendor
        self._rearm_after = rearm_after_steps
        self._on_step = on_step
        self._read_regs = self.vcpu.register_reader(synced)
        self._guest_tf = False            # the guest's own RFLAGS.TF
        self._tf_traps = False            # its TF was set when the instruction about to execute began
        self._delivering = False          # a #DB this stepper queued is being delivered
        self._handler_breakpoint = None   # the #DB handler's entry, while that delivery runs
        self._idle = 0                    # steps since the last event ended
        self._iret_target = None          # where the last iret returned to
        self._pending_db = 0              # DR6 bits of a guest breakpoint to deliver after this step
        self._tsc_start = self._tsc_offset = None
        self._forced_tf = None            # (linear address or None for R11, value) of a popped TF set
        self._attached = False
        self._length = self._kind = self._special = self._displacement = self._self_branch = None
        self._opcode = self._next_rip = self._delivers = self._operand_bits = self._accesses = None
        self._anchored = False            # single-step was set again at this instruction (_anchor)
        self._cs_selector_before = self._cs_base_before = None   # CS when the instruction began
        # (CR3, linear page) -> (physical page, the walk's entries as (view, bytes)): a cached
        # translation is used only while the page-table entries it was read from are unchanged.
        self._pages = {}
        self._sregs = self._bits = self._cs_base = self._cs_mask = self._ip_mask = self._decoded = None
        self._linear_page = self._page_gpa = self._page_view = self._page_entries = None

    # -- taking the vCPU and giving it back ----------------------------------

    def attach(self):
        """Start single-stepping the vCPU (it is parked, or this is its own thread). An event at
        the instruction it is about to execute starts on its own thread, before it runs
        (prepare): the analysis's callback may take its time, with no other vCPU held."""
        values = self.vcpu.register_reader(False)()   # TF as the guest has it: not stepped yet
        self._guest_tf = bool(values[RFLAGS] & RFLAGS_TF)
        self._load_sregs(self.vcpu.get_sregs())
        if self._synced:
            self.vcpu.sync_regs(True)
        self.vcpu.set_guest_debug(single_step=True)
        self._attached = True
        self.loop.drive(self)
        self._position(values, start_events=False)

    def prepare(self):
        """The run loop's call before KVM_RUN when needs_prepare is set: start the event at
        the instruction about to execute."""
        self.needs_prepare = False
        self._position(self.vcpu.register_reader(False)())

    def detach(self):
        """Stop single-stepping (the vCPU is parked, or this is its own thread). KVM drops the
        guest's own TF with its single-step: it is put back."""
        if not self._attached:
            return
        self._release_tf()
        self._handler_breakpoint = None
        self._attached = False
        self.vcpu.set_guest_debug()
        if self._guest_tf:
            regs = self.vcpu.get_regs()
            regs.rflags |= RFLAGS_TF
            self.vcpu.set_regs(regs)
        self.vcpu.sync_regs(False)
        self._page_view = None
        self.loop.release()

    def reposition(self):
        """Look again at the instruction about to execute (the watched pages changed)."""
        self._position(self.vcpu.register_reader(False)())

    def abandon(self):
        """The run ended while stepping (no vCPU thread runs): drop the vCPU's state."""
        self._release_tf()
        self._attached = False
        self.vcpu.sync_regs(False)
        self._page_view = None
        self.loop.release()

    # -- events --------------------------------------------------------------

    def begin(self, event, record):
        """Trace from the instruction about to execute."""
        self.event, self.record = event, record
        self.steps = self.traced = 0
        self._tsc_start = self.vcpu.get_msr(MSR_IA32_TSC)
        self._tsc_offset = self._engine.tsc_offset(self.vcpu)

    def end(self, rip, reason, detail=None):
        """Stop tracing: the hidden time leaves the guest's TSC, then the engine hears of it."""
        event, self.event = self.event, None
        if self._tsc_offset is not None:
            hidden = self.vcpu.get_msr(MSR_IA32_TSC) - self._tsc_start - self.steps * self._tsc_per_step
            if hidden > 0:
                self._engine.set_tsc_offset(self.vcpu, self._tsc_offset - hidden)
        self._tsc_start = self._tsc_offset = None
        self._idle = 0
        self._engine.event_ends(self, event, rip, reason, detail)
        if self._rearm_after == 0:
            self._engine.idle(self)

    # -- each exit -----------------------------------------------------------

    def on_exit(self, exit):
        reason = exit.reason
        if reason == _DEBUG:
            if exit.exception == _BP_VECTOR:
                self._deliver_int3()
                return
            values = self._read_regs()
            breakpoints = exit.dr6 & DR6_B0_B3 & _enabled(exit.dr7)
            if self._handler_breakpoint is not None:
                # The delivery of the #DB this stepper queued stopped at its handler's entry
                # (in DR0: the guest's breakpoints were not in the hardware meanwhile).
                self._handler_breakpoint = None
                breakpoints &= ~1
                self.vcpu.set_guest_debug(single_step=True)
            if breakpoints and values[RFLAGS] & RFLAGS_RF:
                # A step's #DB also sets B0-B3 of an execution breakpoint matching the next
                # RIP (QEMU does); with RF set (an iret from the guest's #DB handler) it is no hit.
                breakpoints &= ~_execution_breakpoints(exit.dr7)
            if breakpoints:
                self._guest_breakpoint(values, breakpoints)
                return
            if values[RIP] == self.rip and not self._self_branch and not self._delivering:
                # No progress: a rep-string iteration, or a trap KVM reports again or late
                # (VMX repeats it after port I/O; an OUT may already be counted at its exit).
                if self._opcode == _ICEBP:   # its #DB, reported with the step's BS
                    self._deliver_icebp()
                elif not self._anchored and (self._accesses or self._opcode in _INTERCEPTED):
                    self._anchor()   # KVM's emulator may have run this iteration (MMIO)
                return
        else:
            self.exit_while_stepping = True
            try:
                self.loop.dispatch(exit)
            finally:
                self.exit_while_stepping = False
            # KVM may advance RIP past an OUT (or an MMIO write) before exiting and then
            # report no single-step trap for it: count it here.
            if (reason != _IO and reason != _MMIO) or self.loop.machine.outcome is not None:
                return
            values = self._read_regs()
            if values[RIP] == self.rip:
                if not self._anchored:
                    self._anchor()   # KVM finishes the access in its emulator at the next KVM_RUN
                return
        self._stepped(self._release_tf(values), trapped=reason == _DEBUG)

    def _stepped(self, values, trapped=True):
        """RIP moved on from self.rip: what happened, then on to the next instruction.
        trapped: a step's #DB ended the step (not another exit)."""
        rip = values[RIP]
        special = self._special
        if self._delivering or not self._expected(rip):
            if special == _SS_LOAD and self._after_ss_load(values, trapped):
                return
            self._unexpected(values, trapped)
            return
        traps = self._tf_traps
        if self._delivers:
            # int n, int3, ud2...: the vCPU is in a handler now; the frame tells whether the
            # instruction completed (a trap) or not (a fault).
            self._unexpected(values, trapped)
            return
        if special != _PLAIN:
            self._emulate_flags(special, values)
        # Some hosts report the step after iret one instruction late: the one at the return
        # address ran too (or an interrupt came before it).
        late = special == _IRET and self._iret_target is not None and rip != self._iret_target
        if self.event is not None and not self._executed(_at(values, self._iret_target) if late else values):
            return
        if self._kind >= _MODE_CHANGE:
            if self._kind == _HLT:
                self._halted(values)
                return
            self._load_sregs(self.vcpu.get_sregs())
            if late:
                self._step_from(self._iret_target, values)
                return
        bits = (DR6_BS if traps else 0) | self._pending_db
        self._pending_db = 0
        if self._attached:
            if bits:
                self._inject_db(bits)
            elif special not in _POPS_FLAGS and (self._accesses or self._opcode in _INTERCEPTED):
                # An instruction KVM emulated (an MMIO access, or one it intercepts, which SVM
                # without next-RIP skips through the emulator) reports its step but leaves
                # RFLAGS without KVM's TF: single-step is set again after such instructions.
                self.vcpu.set_guest_debug(single_step=True)
        if self._on_step is not None:
            self._on_step(self.vcpu.id, values)
        self._position(values)

    def _anchor(self):
        """Set single-step again at the instruction about to execute, which KVM's emulator may run
        (an MMIO access, a string instruction's iteration): its writeback keeps KVM's TF only at
        the RIP single-step was set at, so a string instruction it resumes would stop trapping."""
        self.vcpu.set_guest_debug(single_step=True, breakpoint=self._handler_breakpoint)
        self._anchored = True

    def _expected(self, rip):
        """Whether RIP is where the instruction about to execute goes."""
        kind = self._kind
        if kind == _ORDINARY:
            return rip == self._next_rip
        if kind != _NEAR_BRANCH:
            return True
        if self._displacement is not None:
            return rip in (self._next_rip, (self._next_rip + self._displacement) & self._ip_mask)
        if self._opcode in _RETURNS:
            returns_to = self._read_stack(self.values[RSP], self._operand_bytes())
            return returns_to is None or rip == returns_to
        return True

    def _executed(self, values):
        """Count (and hand to the engine) the instruction at self.rip, which ran; False when
        the trace has ended."""
        self.steps += 1
        if self.record:
            self.traced += 1
            return self._engine.instruction(self, values, self._memory_accesses() if self._accesses else ())
        return True

    def _memory_accesses(self):
        """(linear address, size, the bytes there now or None) of each memory operand of the
        instruction that ran, its address from the registers before it. A rep string
        instruction's are its first iteration's."""
        sregs = self._sregs
        accesses = []
        for operand in self._accesses:
            linear = decoder.linear_address(operand, self.values, self._next_rip,
                                            lambda name: getattr(sregs, name).base)
            accesses.append((linear, operand.size, self._read_linear(linear, operand.size)))
        return accesses

    # -- flags, traps and events the guest must see as if nothing watched it -

    def _emulate_flags(self, special, values):
        """After pushf, popf, iret, sysret: keep the guest's TF (and the image pushf wrote).
        A popped TF of 0 also cleared KVM's, so single-step is set again."""
        before = self.values
        if special == _PUSHF:
            self._write_tf(self._stack_linear(values[RSP]), self._guest_tf)
            return
        if special == _POPF:
            image = self._read_stack(before[RSP], self._operand_bytes())
        elif special == _IRET:
            size = self._operand_bytes()
            image = self._read_stack(before[RSP] + 2 * size, size)
            self._iret_target = self._read_stack(before[RSP], size)
        elif special == _SYSRET:
            image = before[R11]
        else:
            return
        self._guest_tf = bool(image is not None and image & RFLAGS_TF)
        self.vcpu.set_guest_debug(single_step=True)

    def _force_tf(self, values):
        """popf, iret and sysret load RFLAGS; one that clears TF (the guest's own copy has it
        clear: KVM's TF is not in it) ends the single-step on CPUs and emulators that take the
        step trap from the new TF. The image it loads gets TF until the step has run."""
        self._release_tf()
        if self._special == _SYSRET:
            if not values[R11] & RFLAGS_TF:
                regs = self.vcpu.get_regs()
                regs.r11 = values[R11] | RFLAGS_TF
                self.vcpu.set_regs(regs)
                self._forced_tf = (None, values[R11])
            return
        size = self._operand_bytes()
        rsp = values[RSP] + (2 * size if self._special == _IRET else 0)
        image = self._read_stack(rsp, size)
        if image is not None and not image & RFLAGS_TF:
            linear = self._stack_linear(rsp)
            self._write_tf(linear, True)
            self._forced_tf = (linear, image)

    def _stop_where_it_goes(self):
        """The instruction about to execute raises an event (int n, int3, ud2...) or is
        syscall: the CPU goes on with TF clear (delivery clears it; Linux's syscall mask does),
        so on VT-x and SVM no step would be reported after it. The step also stops at the
        handler's entry (or syscall's), in DR0."""
        opcode = self._opcode
        if opcode == _SYSCALL:
            target = self.vcpu.get_msr(MSR_LSTAR if self._bits == 64 else MSR_CSTAR)
        else:
            vector = _VECTORS.get(opcode, idt.UD_VECTOR)
            if opcode == 0xCD:
                vector = self.code[self._length - 1]
            target = idt.handlers(self._read_linear, self._sregs).get(vector)
        if target is None or target == (self._cs_base + self.rip) & self._cs_mask:
            return
        self.vcpu.set_guest_debug(single_step=True, breakpoint=target)
        self._handler_breakpoint = target

    def _release_tf(self, values=None):
        """Put back the image _force_tf changed; returns `values` (the registers after the
        step) with the guest's own R11."""
        forced, self._forced_tf = self._forced_tf, None
        if forced is None:
            return values
        linear, original = forced
        if linear is not None:
            self._write_tf(linear, False)
            return values
        regs = self.vcpu.get_regs()
        regs.r11 = original
        self.vcpu.set_regs(regs)
        return None if values is None else values[:R11] + (original,) + values[R11 + 1:]

    def _after_ss_load(self, values, trapped):
        """MOV SS / POP SS hold debug traps for one instruction, so one step ran two; True when
        that explains where RIP is."""
        following = self._decode_at(self._next_rip)
        if following is None:
            return False
        first_values = self.values
        if self.event is not None and not self._executed(values):
            return True
        self.rip, self.values = self._next_rip, first_values
        self.gpa = self._translate((self._cs_base + self.rip) & self._cs_mask)
        self._set_instruction(self.rip, following)
        self._stepped(values, trapped)
        return True

    def _unexpected(self, values, trapped):
        """RIP is not where the instruction goes: an exception or interrupt was delivered
        (its frame is on the stack), or a far transfer happened; or, when no step trapped,
        the vCPU ran on unstepped until another exit."""
        delivering, self._delivering = self._delivering, False
        cs_selector, cs_base = self._cs_selector_before, self._cs_base_before
        self._load_sregs(self.vcpu.get_sregs())
        vector, entry = self._handler_of(values[RIP])
        # Below the stack pointer a frame is only looked for at a handler's entry: elsewhere the
        # words there are what the guest popped since (a frame its handler returned from).
        frame = self._find_frame(values, cs_selector, cs_base, below=entry is not None)
        if frame is None:
            if not trapped:
                # The trap flag was dropped on the way (KVM delivering a fault by emulation, as
                # in real mode without unrestricted guest, or a handler stop the CPU ignored):
                # what ran is unknown, but not with TF set, or a step would have trapped.
                if self.event is not None:
                    self.end(values[RIP], "untraced", f"no step was reported after rip {self.rip:#x}")
                self._handler_breakpoint = None
                self._guest_tf = False
                self.vcpu.set_guest_debug(single_step=True)
                self._position(values)
                return
            if self.event is not None and not delivering and not self._executed(values):
                return
            self._position(values)
            return
        returns_to, flags_linear = frame
        # The CPU pushed RFLAGS with KVM's TF; the guest's own belongs there. Delivery clears TF.
        self._write_tf(flags_linear, self._guest_tf)
        self._guest_tf = False
        self.vcpu.set_guest_debug(single_step=True)
        completed = returns_to != self.rip   # a trap (int n, a step) rather than a fault
        late = entry is not None and entry != values[RIP]   # the handler's first instruction ran too
        if (completed and not delivering and self.event is not None
                and not self._executed(_at(values, entry) if late else values)):
            return
        if self.event is not None:
            # A delivery ends the event, even into a watched handler (that is a new entry):
            # each event's instructions follow one another.
            self.end(values[RIP] if entry is None else entry,
                     "interrupt" if vector is None or vector >= 32 else "fault",
                     None if vector is None else idt.vector_name(vector))
        if late:
            self._step_from(entry, values)
            return
        self._position(values)

    def _step_from(self, rip, values):
        """The step went on at rip (a handler's first instruction, the one an iret returned
        to) before it ended with the registers `values`: make the instruction at rip the one
        about to execute, then account for the step from there."""
        self._position(_at(values, rip), run_rdtsc=False)
        if self._attached:
            self._stepped(values)

    def _find_frame(self, values, cs_selector, cs_base, below=True):
        """(return address, linear address of the pushed RFLAGS) of an exception or interrupt
        frame at the top of the stack, or None: the return address is the instruction that
        was about to execute or the one after it, followed by the CS it ran in. below: look
        under the stack pointer too."""
        size = _STACK_WORD[self._bits]
        candidates = {self.rip, self._next_rip}
        if self._displacement is not None:
            candidates.add((self._next_rip + self._displacement) & self._ip_mask)
        for slot in _FRAME_SEARCH_SLOTS if below else range(0, _FRAME_SEARCH_SLOTS.stop):
            linear = self._stack_linear(values[RSP] + slot * size)
            words = self._read_linear(linear, 3 * size)
            if words is None:
                continue
            returns_to = int.from_bytes(words[:size], "little")
            saved_cs = int.from_bytes(words[size:2 * size], "little") & 0xFFFF
            if returns_to in candidates and saved_cs == cs_selector:
                return returns_to, linear + 2 * size
        return None

    def _handler_of(self, rip):
        """(vector, handler entry) of the IDT gate whose handler RIP is at, or just past
        (within one instruction), or (None, None)."""
        linear = (self._cs_base + rip) & self._cs_mask
        best = (None, None)
        for vector, handler in idt.handlers(self._read_linear, self._sregs).items():
            offset = handler - (self._cs_base if self._bits != 64 else 0)
            if 0 <= linear - handler <= _HANDLER_ENTRY_REACH and (best[1] is None or offset > best[1]):
                best = (vector, offset)
        return best

    def _guest_breakpoint(self, values, breakpoints):
        """The guest's own DR0-DR3 breakpoint fired: its #DB is delivered (with the single-step
        bit when its own TF also traps there). A data breakpoint, or an instruction breakpoint
        reported with the step before it, comes after an executed instruction."""
        if values[RIP] != self.rip and not self._delivering:
            self._pending_db = breakpoints
            self._stepped(self._release_tf(values))
            if self._pending_db:   # not delivered with the step's own trap
                self._pending_db = 0
                self._inject_db(breakpoints, single_step=self._attached)
            return
        self._inject_db(breakpoints, single_step=self._attached)

    def _deliver_icebp(self):
        """VT-x reports the #DB of icebp (int1) to the debugging VMM instead of delivering it,
        RIP still at the instruction: deliver it as the CPU would, a trap after it."""
        regs = self.vcpu.get_regs()
        regs.rip = self._next_rip
        self.vcpu.set_regs(regs)
        self._inject_db(0)

    def _deliver_int3(self):
        """Where KVM intercepts #BP while a VMM debugs (VT-x running real mode in vm86, without
        unrestricted guest), it hands the guest's int3 to the VMM, RIP at the int3: deliver it
        as the CPU would (KVM injects a soft exception past the instruction it saw exit)."""
        events = self.vcpu.get_vcpu_events()
        exception = events.exception
        exception.injected, exception.nr, exception.has_error_code, exception.pending = 1, idt.BP_VECTOR, 0, 0
        self.vcpu.set_vcpu_events(events)

    def _inject_db(self, dr6_bits, single_step=True):
        """Queue a #DB for the guest with these DR6 bits; the next KVM_RUN delivers it."""
        debugregs = self.vcpu.get_debugregs()
        debugregs.dr6 |= dr6_bits
        self.vcpu.set_debugregs(debugregs)
        # The CPU clears TF as it delivers the #DB: on VT-x and SVM no step is reported after
        # it, and the handler would run unstepped, so the step also stops at its entry.
        handler = idt.handlers(self._read_linear, self._sregs).get(idt.DB_VECTOR) if single_step else None
        self.vcpu.set_guest_debug(single_step=single_step, inject_db=True, breakpoint=handler)
        self._handler_breakpoint = handler
        self._tf_traps = False
        self._delivering = single_step

    def _halted(self, values):
        """HLT ran (KVM steps over it)."""
        if self._halt_in_kernel:
            self.vcpu.set_mp_state(abi.KVM_MP_STATE_HALTED)   # wait for an interrupt, as HLT does
            self._position(values)
            return
        if self.event is not None:
            self.end(values[RIP], "halt")
        self.loop.dispatch(exits.Hlt(abi.KVM_EXIT_HLT))

    # -- the instruction about to execute ------------------------------------

    def _position(self, values, run_rdtsc=True, start_events=True):
        """The vCPU is about to execute the instruction at values[RIP]: decode it, find the
        watched page it touches, start or end an event, and run rdtsc for the guest when
        tracing."""
        while self._attached:
            rip = values[RIP]
            self.values, self.rip = values, rip
            self._cs_selector_before, self._cs_base_before = self._sregs.cs.selector, self._cs_base
            linear = (self._cs_base + rip) & self._cs_mask
            if not self._code_page(linear & PAGE_MASK):
                self._unmapped(rip)
                return
            self._read_instruction(rip, linear)
            self._tf_traps = self._guest_tf
            if self._special in _POPS_FLAGS:
                self._force_tf(values)
            elif self._delivers or self._opcode == _SYSCALL:
                self._stop_where_it_goes()
            if self.event is None:
                if self.watched_page is not None:
                    if not start_events:
                        self.needs_prepare = True
                        return
                    self._engine.event_starts(self)
                if self.event is None:
                    self._idle += 1
                    if self._idle == self._rearm_after:
                        self._engine.idle(self)
                    return
                self._idle = 0
            elif self.watched_page is None:
                self.end(rip, "branch-out")
                return
            if not run_rdtsc or self._special not in (_RDTSC, _RDTSCP):
                return
            values = self._rdtsc(values)
            if values is None:
                return

    def _unmapped(self, rip):
        """RIP's page does not translate: the next fetch faults; nothing watched runs."""
        self.code, self.gpa, self.watched_page = b"", None, None
        self._set_instruction(rip, (b"", 0, _MODE_CHANGE, False, _PLAIN, None, None, False, self._bits, ()))
        if self.event is not None:
            self.end(rip, "branch-out")

    def _rdtsc(self, values):
        """Run rdtsc/rdtscp for the guest: the TSC it reads advances by tsc_per_step per
        traced instruction. Returns the registers after it, or None when the trace ended."""
        tsc = self._tsc_start + (self.steps + 1) * self._tsc_per_step
        updated = list(values)
        updated[RAX], updated[RDX] = tsc & 0xFFFFFFFF, (tsc >> 32) & 0xFFFFFFFF
        if self._special == _RDTSCP:
            updated[RCX] = self.vcpu.get_msr(MSR_TSC_AUX) & 0xFFFFFFFF
        updated[RIP] = self._next_rip
        regs = self.vcpu.get_regs()
        regs.rax, regs.rdx, regs.rcx, regs.rip = updated[RAX], updated[RDX], updated[RCX], updated[RIP]
        self.vcpu.set_regs(regs)
        updated = tuple(updated)
        traps = self._tf_traps
        if not self._executed(updated):
            return None
        if traps:
            self._inject_db(DR6_BS)
        elif self._attached:
            self.vcpu.set_guest_debug(single_step=True)   # KVM_SET_REGS moved RIP: its TF is gone
        return updated

    def _read_instruction(self, rip, linear):
        offset = linear & ~PAGE_MASK
        self.gpa = self._page_gpa | offset
        next_page = None
        if offset <= PAGE_SIZE - decoder.MAX_LENGTH:
            code = self._page_view[offset:offset + decoder.MAX_LENGTH].tobytes()
        else:
            code, next_page = self._code_across_pages(linear)
        self._set_instruction(rip, self._decoded.get(code) or self._decode(code))
        if self._page_gpa in self._watched:
            self.watched_page = self._page_gpa
        elif next_page is not None and offset + self._length > PAGE_SIZE and next_page in self._watched:
            self.watched_page = next_page   # it starts before a watched page and runs into it
        else:
            self.watched_page = None

    def _set_instruction(self, rip, decoded):
        (self.code, self._length, self._kind, self._self_branch, self._special, self._displacement,
         self._opcode, self._delivers, self._operand_bits, self._accesses) = decoded
        self._next_rip = (rip + self._length) & self._ip_mask
        self._anchored = False

    def _decode_at(self, rip):
        code = self._read_linear((self._cs_base + rip) & self._cs_mask, decoder.MAX_LENGTH)
        return None if code is None else (self._decoded.get(code) or self._decode(code))

    def _decode(self, code):
        """(instruction bytes, length, kind, branches to itself, special kind, direct branch
        displacement, opcode, delivers an event, operand size, the memory operands it
        accesses) of the code at RIP, memoised by the 15 bytes read there, so a loop is
        decoded once and rewritten code again."""
        instruction = decoder.decode(code, self._bits, self._vendor)
        if instruction is None:
            decoded = (code, len(code), _MODE_CHANGE, False, _PLAIN, None, None, True, self._bits, ())
        else:
            # Operands with a size the encoding fixes (not lea's, prefetch's, VSIB's).
            accesses = tuple(operand for operand in instruction.memory
                             if operand.access is not None and operand.size and not operand.vsib)
            decoded = (code[:instruction.length], instruction.length, _KINDS[instruction.flow],
                       instruction.branches_to_itself, _special(instruction, code), instruction.relative,
                       instruction.opcode, instruction.opcode in _DELIVERING or not instruction.known,
                       instruction.operand_bits, accesses)
        if len(self._decoded) >= MAX_MEMOISED_INSTRUCTIONS:
            self._decoded.clear()
        self._decoded[code] = decoded
        return decoded

    def _code_across_pages(self, linear):
        """Up to 15 bytes at linear, whose page ends within 15 bytes: the rest comes from the
        next linear page, wherever that is mapped; and that page's gpa (or None)."""
        code = self._page_view[linear & ~PAGE_MASK:].tobytes()
        rest = decoder.MAX_LENGTH - len(code)
        next_gpa = self._translate((linear | ~PAGE_MASK) + 1)
        if next_gpa is not None and self._memory.contains(next_gpa, rest):
            code += self._memory.read(next_gpa, rest)
        return code, next_gpa

    # -- CPU state and memory ------------------------------------------------

    def _load_sregs(self, sregs):
        """Take new special registers: CPU mode, CS base, paging; forget the code page."""
        self._sregs = sregs
        self._bits = cpu_mode(sregs)[1]
        segment = code_segment(sregs)
        self._cs_base, self._cs_mask = segment.base, segment.mask
        self._ip_mask = (1 << self._bits) - 1
        self._decoded = self._memo[self._bits]
        self._linear_page = self._page_view = None

    def _code_page(self, linear_page):
        """Make linear_page the code page (its translation checked against the page tables
        it came from); False when it does not translate."""
        if linear_page == self._linear_page and _unchanged(self._page_entries):
            return True
        page, entries = self._translation(linear_page)
        if page is None:
            self._linear_page = None
            return False
        self._linear_page, self._page_gpa, self._page_entries = linear_page, page, entries
        self._page_view = self._memory.view(page, PAGE_SIZE)
        return True

    def _translation(self, linear_page):
        key = (self._sregs.cr3, linear_page)
        cached = self._pages.get(key)
        if cached is not None and _unchanged(cached[1]):
            return cached
        translation = paging.walk(self._memory, self._sregs, linear_page)
        if translation is None or not self._memory.contains(translation.physical & PAGE_MASK, PAGE_SIZE):
            return None, ()
        entries = tuple((self._memory.view(gpa, size), self._memory.read(gpa, size))
                        for gpa, size in translation.entries)
        if len(self._pages) >= MAX_CACHED_PAGES:
            self._pages.clear()
        self._pages[key] = cached = (translation.physical & PAGE_MASK, entries)
        return cached

    def _translate(self, linear):
        page, _ = self._translation(linear & PAGE_MASK)
        return None if page is None else page | (linear & ~PAGE_MASK)

    def _read_linear(self, linear, size):
        """`size` bytes at a linear address (across a page boundary), or None."""
        data = b""
        while size:
            gpa = self._translate(linear)
            chunk = min(size, PAGE_SIZE - (linear & ~PAGE_MASK))
            if gpa is None or not self._memory.contains(gpa, chunk):
                return None
            data += self._memory.read(gpa, chunk)
            linear, size = linear + chunk, size - chunk
        return data

    def _operand_bytes(self):
        """pushf/popf/iret/ret operand size, as the decoder found it (64-bit code: 8 unless 66)."""
        return self._operand_bits // 8

    def _stack_linear(self, rsp):
        if self._bits == 64:
            return rsp
        return (self._sregs.ss.base + (rsp & (0xFFFF if not self._sregs.ss.db else 0xFFFFFFFF))) & 0xFFFFFFFF

    def _read_stack(self, rsp, size):
        data = self._read_linear(self._stack_linear(rsp), size)
        return None if data is None else int.from_bytes(data, "little")

    def _write_tf(self, linear, tf):
        """Set the TF bit (bit 8: bit 0 of the image's second byte) of an RFLAGS image."""
        gpa = self._translate(linear + 1)
        if gpa is None or not self._memory.contains(gpa, 1):
            return
        byte = self._memory.view(gpa, 1)
        byte[0] = (byte[0] | 1) if tf else (byte[0] & ~1)


def _at(values, rip):
    """The registers `values` with RIP at rip: the state at an instruction boundary a late
    step report went past (the other registers are as the next instruction left them)."""
    return values[:RIP] + (rip,) + values[RIP + 1:]


def _unchanged(entries):
    return all(view == value for view, value in entries)


def _execution_breakpoints(dr7):
    """DR6 B0-B3 bits of the breakpoints DR7 makes execution breakpoints."""
    return sum(1 << index for index, mask in enumerate(DR7_CONDITION) if not dr7 & mask)


def _enabled(dr7):
    """DR6 B0-B3 bits of the breakpoints DR7 enables."""
    return sum(1 << index for index, mask in enumerate(DR7_ENABLE) if dr7 & mask)
