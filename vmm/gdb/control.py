"""Stopping and resuming the guest for a debugger: gdb's all-stop mode, threads = vCPUs.

The guest is stopped while the stub holds at least one Machine.pause(): every vCPU is then
parked between two KVM_RUNs (or parked in place inside a V2E callback) and the stub's thread
may read and write their state. A stop comes
- from a vCPU's own thread, in an exit handler (a breakpoint, a watchpoint, a finished step,
  int3) or a V2E callback: it asks for a pause holding every vCPU, itself included
  (_stop_here), queues the stop, and parks;
- from the stub's thread (Ctrl-C, or gdb connecting to a running guest): interrupt().
resume() releases the pauses after giving each vCPU its debug state; when gdb resumes one vCPU
alone (stepping over a breakpoint), a pause exempting that vCPU keeps the others parked.

A vCPU that stopped while another stop was being taken parks inside its own request and
queues its stop only after the next resume, when it may no longer hold: each stop is checked
again then (the breakpoint still inserted, the step asked in the current resume) and dropped
if not, and the vCPU runs on.
"""
import threading
from collections import deque
from dataclasses import dataclass

import kvm_abi as abi

from ..errors import EXIT_GDB_KILL
from ..kvm import NO_DEBUGGER, DebuggerState, exits
from ..machine.outcome import Outcome
from ..x86 import decoder, paging
from ..x86.idt import BP_VECTOR
from ..x86.mode import code_segment, cpu_mode, linear_rip
from ..x86.registers import RIP
from .breakpoints import (ACCESS, DR6_SINGLE_STEP, HARDWARE, KINDS, READ, SOFTWARE, WRITE, BreakpointError,
                          BreakpointTable, Placing)

SIGINT, SIGTRAP = 2, 5
_WATCH_REASONS = {WRITE: "watch", READ: "rwatch", ACCESS: "awatch"}


@dataclass(slots=True)
class Stop:
    """Why the guest stopped, as a stop reply tells gdb."""

    vcpu_id: int
    signal: int = SIGTRAP
    reason: str = ""              # swbreak, hwbreak, watch, rwatch, awatch; "" for a step or an interrupt
    address: int | None = None    # a watchpoint's address
    message: str = ""             # said to the user first


def gdb_kill():
    return Outcome("gdb-kill", EXIT_GDB_KILL, "killed from gdb")


class Controller:
    """Execution control of one machine for a debugger (one client at a time)."""

    def __init__(self, machine, host, log):
        self.machine = machine
        self.host = host
        self.table = BreakpointTable(machine.memory)
        self.log = log
        self.notify = lambda: None      # called on a vCPU thread when a stop is queued
        self.attached = False
        self.watched = lambda gpa: False
        self._bare = machine.machine_type == "bare"
        self._lock = threading.Lock()
        self._stops = deque()           # (Stop, Pause) queued by vCPUs
        self._pauses = []               # what the stub holds; resume() releases them
        self._epoch = 0                 # resumes so far
        self._stepping = {}             # vCPU id -> the epoch gdb asked it to step in
        self._step_from = {}            # vCPU id -> linear address of the instruction it steps
        self._step_interceptions = []   # I/O and MMIO exits of the vCPUs gdb steps
        self._late_trap = {}            # vCPU id -> where a step ended at an I/O exit
        self._hold_for_client = False
        self.in_v2e_callback = set()    # vCPUs stopped inside a V2E callback
        self._interceptions = []
        for loop in machine.loops:
            self._interceptions.append(self._intercept(loop, abi.KVM_EXIT_DEBUG, self._on_debug))
            self._interceptions.append(self._intercept(loop, abi.KVM_EXIT_INTERNAL_ERROR, self._on_internal_error))

    @staticmethod
    def _intercept(loop, reason, handler):
        interception = loop.intercept(reason, lambda exit: handler(loop, interception, exit))
        return interception

    # -- the stub's side (its own thread) -----------------------------------

    def hold_at_start(self):
        """Stop before vCPU 0's first instruction (its first KVM_RUN returns at once), until a
        client connects and resumes."""
        loop = self.machine.loops[0]

        def first_exit(exit):
            interception.restore()
            self._stop_here(loop.vcpu, lambda: Stop(0) if self._epoch == 0 else None)

        interception = loop.intercept(abi.KVM_EXIT_INTR, first_exit)
        self._hold_for_client = True
        loop.vcpu.kick()

    def attach(self):
        self.attached = True

    def take_stop(self):
        """The next stop a vCPU queued (its pause now held by the stub), or None."""
        with self._lock:
            if not self._stops:
                return None
            stop, pause = self._stops.popleft()
            if pause is not None:
                self._pauses.append(pause)
            return stop

    @property
    def stopped(self):
        return bool(self._pauses)

    def interrupt(self):
        """Stop every vCPU; False when the machine ended first."""
        pause = self.machine.pause()
        if pause is None:
            return False
        with self._lock:
            self._pauses.append(pause)
        return True

    def placing(self, vcpu_id, address):
        """What the breakpoint table needs to know about linear `address` as vCPU vcpu_id sees it."""
        sregs = self.machine.vcpus[vcpu_id].get_sregs()
        gpa = paging.translate(self.machine.memory, sregs, address)
        return Placing(gpa, gpa is not None and self.watched(gpa), self.host.int3_usable(cpu_mode(sregs)[0]),
                       self.host.data_breakpoints)

    def replace_breakpoints(self, vcpu_id):
        """Place every breakpoint again (the watched pages changed); what cannot be placed any
        more is dropped, and said in the returned lines."""
        entries = self.table.entries()
        self.table.clear()
        dropped = []
        for entry in entries:
            try:
                self.table.insert(entry.kind, entry.address, entry.length, self.placing(vcpu_id, entry.address))
            except BreakpointError as error:
                dropped.append(f"{KINDS[entry.kind]} at {entry.address:#x} dropped: {error}")
        return dropped

    def resume(self, actions):
        """Run again: actions maps vCPU ids to "step" or "continue". With one vCPU named of
        several, the others stay parked; with more, every vCPU runs."""
        vcpus = self.machine.vcpus
        stepped_watch = bool(self.table.stepped)
        addresses, dr7 = self.table.debug_registers()
        with self._lock:
            self._epoch += 1
            self._stepping = {vcpu_id: self._epoch for vcpu_id, action in actions.items() if action == "step"}
        self._restore_step_interceptions()
        for vcpu in vcpus:
            step = vcpu.id in self._stepping
            if step or (self._bare and stepped_watch):
                self._step_from[vcpu.id] = self._linear_rip(vcpu)
            if step:
                loop = self.machine.loops[vcpu.id]
                self._step_interceptions += [self._intercept(loop, reason, self._on_step_access)
                                             for reason in (abi.KVM_EXIT_IO, abi.KVM_EXIT_MMIO)]
            vcpu.set_debugger(DebuggerState(step or stepped_watch, step and self.host.block_irq,
                                            self.table.uses_int3, addresses, dr7))
        keep = None
        if len(actions) == 1 and len(vcpus) > 1:
            (alone,) = actions
            keep = self.machine.pause(exempt=alone)   # the others are parked already: at once
        with self._lock:
            pauses, self._pauses = self._pauses, [keep] if keep is not None else []
        for pause in pauses:
            pause.resume()

    def _restore_step_interceptions(self):
        for interception in self._step_interceptions:
            interception.restore()
        self._step_interceptions = []

    def detach(self):
        """Take every breakpoint out and let the guest run on without a debugger."""
        if not self._pauses and not self.interrupt():
            return   # the run has ended
        self.table.clear()
        self._restore_step_interceptions()
        with self._lock:
            self.attached = self._hold_for_client = False
            self._stepping = {}
            pauses = self._pauses + [pause for _, pause in self._stops if pause is not None]
            self._pauses, self._stops = [], deque()
        for vcpu in self.machine.vcpus:
            vcpu.set_debugger(NO_DEBUGGER)
        for pause in pauses:
            pause.resume()

    def kill(self):
        self.machine.stop(gdb_kill())

    def close(self):
        self._restore_step_interceptions()
        for interception in self._interceptions:
            interception.restore()
        self._interceptions = []

    # -- vCPU threads ----------------------------------------------------------

    def _stop_here(self, vcpu, validate):
        """On vcpu's thread: stop every vCPU with the stop validate() gives once the others are
        parked (None: it no longer holds). True when queued: vcpu then parks at its next turn."""
        pause = self.machine.pause()
        if pause is None:
            return False
        with self._lock:
            stop = validate() if self.attached or self._hold_for_client else None
            if stop is None:
                pause.resume()
                return False
            self._stops.append((stop, pause))
        self.notify()
        return True

    def _stop_in_place(self, vcpu, validate):
        """_stop_here from inside a V2E callback, which must not return before the resume."""
        if self._stop_here(vcpu, validate):
            self.in_v2e_callback.add(vcpu.id)
            try:
                self.machine.pause_gate.park(vcpu.id)
            finally:
                self.in_v2e_callback.discard(vcpu.id)

    def _linear_rip(self, vcpu):
        return linear_rip(vcpu.get_regs().rip, vcpu.get_sregs())

    def _on_debug(self, loop, interception, exit):
        vcpu = loop.vcpu
        epoch = self._epoch
        if exit.exception == BP_VECTOR:
            if self._stop_for_int3(vcpu, exit.pc):
                return
        else:
            entry, piece = self.table.slot_hit(exit.dr6)
            if entry is not None:
                self._stop_here(vcpu, lambda: self._slot_stop(vcpu.id, entry, piece))
                return
            if exit.dr6 & DR6_SINGLE_STEP:
                if self._late_trap and self._late_trap.pop(vcpu.id, None) == exit.pc:
                    return   # the trap of an access that ended the step at its exit (see _on_step_access)
                if vcpu.id in self._stepping or self.table.stepped:
                    self._after_step(loop, exit.pc, epoch)
                return       # a trap reported after single-stepping ended: nothing to do
        interception.pass_on(exit)   # not the debugger's: the run loop reports it

    def _slot_stop(self, vcpu_id, entry, piece):
        if entry not in self.table.entries():
            return None
        if entry.kind in (SOFTWARE, HARDWARE):
            return Stop(vcpu_id, reason="swbreak" if entry.kind == SOFTWARE else "hwbreak")
        return Stop(vcpu_id, reason=_WATCH_REASONS[entry.kind], address=piece)

    def _stop_for_int3(self, vcpu, linear):
        """An int3 at linear: the stop, when one of the table's is planted there."""
        gpa = paging.translate(self.machine.memory, vcpu.get_sregs(), linear)
        if gpa is None or not self.table.software.planted(gpa):
            return False

        def validate():
            return Stop(vcpu.id, reason="swbreak") if self.table.software.planted(gpa) else None

        self._stop_here(vcpu, validate)   # dropped: the original byte is back, the vCPU runs it
        return True

    def _on_internal_error(self, loop, interception, exit):
        """Hosts that fail to emulate int3 exit here, RIP at the int3: one of ours is a hit."""
        if (exit.suberror != abi.KVM_INTERNAL_ERROR_EMULATION or not self.table.uses_int3
                or not self._stop_for_int3(loop.vcpu, self._linear_rip(loop.vcpu))):
            interception.pass_on(exit)

    def _on_step_access(self, loop, interception, exit):
        """An I/O or MMIO exit of a vCPU gdb steps. Some hosts advance RIP past an OUT (or an
        MMIO write) before this exit and report no single-step trap for it (the next trap comes
        after the following instruction); others report the trap too, at the next entry."""
        interception.pass_on(exit)
        vcpu, epoch = loop.vcpu, self._epoch
        if self.machine.outcome is not None or self._stepping.get(vcpu.id) != epoch:
            return
        rip = self._linear_rip(vcpu)
        if rip == self._step_from.get(vcpu.id):
            return   # the access completes at the next entry, and its trap comes then
        self._late_trap[vcpu.id] = rip
        self._stop_here(vcpu, lambda: Stop(vcpu.id) if self._stepping.get(vcpu.id) == epoch else None)

    def _after_step(self, loop, linear, epoch):
        """A single-step trap at linear address `linear`: gdb's step ended, or a stepped
        watchpoint is due a look."""
        vcpu = loop.vcpu
        if self._bare and self._stepped_over_hlt(vcpu, linear):
            # HLT ends the run on a bare machine; single-stepped, KVM goes past it instead.
            loop.dispatch(exits.Hlt(abi.KVM_EXIT_HLT))
            return
        changed = self.table.stepped_change() if self.table.stepped else None
        if changed is not None:
            self._stop_here(vcpu, lambda: Stop(vcpu.id, reason="watch", address=changed.address)
                            if changed in self.table.entries() else None)
        elif self._stepping.get(vcpu.id) == epoch:
            self._stop_here(vcpu, lambda: Stop(vcpu.id) if self._stepping.get(vcpu.id) == epoch else None)

    def _stepped_over_hlt(self, vcpu, linear):
        """Whether the instruction just single-stepped, ending at `linear`, was HLT (one byte,
        0xF4: a prefix on HLT means nothing); remember where the next one starts."""
        started = self._step_from.get(vcpu.id)
        self._step_from[vcpu.id] = linear
        if started is None or linear != started + 1:
            return False
        memory = self.machine.memory
        sregs = vcpu.get_sregs()
        gpa = paging.translate(memory, sregs, started)
        if gpa is None or not memory.contains(gpa):
            return False
        instruction = decoder.decode(memory.read(gpa, 1), cpu_mode(sregs)[1], self.machine.cpu_vendor)
        return instruction is not None and instruction.flow is decoder.Flow.HLT

    # -- V2E callbacks (the tracing vCPU's thread; V2E has paused the others) --

    def on_event(self, event, stop_on_events):
        """An entry into watched pages: a stop with --gdb-on-event or at a breakpoint there."""
        if not self.attached:
            return
        vcpu = self.machine.vcpus[event.vcpu_id]
        segment = code_segment(vcpu.get_sregs())
        breakpoint = self.table.execution_at(segment.linear(event.rip))
        if not stop_on_events and breakpoint is None:
            return
        message = (f"vmm: V2E event {event.index}: vCPU {event.vcpu_id} entered watched gpa {event.gpa:#x} "
                   f"at rip {event.rip:#x} ({event.backend} backend, {event.mode} mode)\n")
        reason = "" if breakpoint is None else "swbreak" if breakpoint.kind == SOFTWARE else "hwbreak"
        self._stop_in_place(vcpu, lambda: Stop(vcpu.id, reason=reason, message=message))

    def on_layer(self, vcpu, record, stop_on_events):
        """An unpacking layer (written code about to run on vcpu): a stop with --gdb-on-event or
        at a breakpoint on its first instruction."""
        if not self.attached:
            return
        breakpoint = self.table.execution_at(code_segment(vcpu.get_sregs()).linear(int(record["entry"]["rip"], 16)))
        if not stop_on_events and breakpoint is None:
            return
        entry, region = record["entry"], record["region"]
        message = (f"vmm: unpack layer {record['layer']}: vCPU {vcpu.id} runs written code at rip {entry['rip']} "
                   f"(gpa {entry['gpa']}), {region['size'] // 4096} page(s) from {region['gpa']} dumped to "
                   f"{region['file']}\n")
        reason = "" if breakpoint is None else "swbreak" if breakpoint.kind == SOFTWARE else "hwbreak"
        self._stop_in_place(vcpu, lambda: Stop(vcpu.id, reason=reason, message=message))

    def on_step(self, vcpu_id, values):
        """Any instruction a V2E stepper ran (every vCPU is stepped while V2E's trap is off):
        a watched value changed, gdb's own step ends there, or a breakpoint in watched code is
        next (debug registers and int3 are off while V2E steps)."""
        if not self.attached:
            return
        epoch = self._epoch
        vcpu = self.machine.vcpus[vcpu_id]
        changed = self.table.stepped_change() if self.table.stepped else None
        if changed is not None:
            self._stop_in_place(vcpu, lambda: Stop(vcpu_id, reason="watch", address=changed.address))
            return
        if self._stepping.get(vcpu_id) == epoch:
            self._stop_in_place(vcpu, lambda: Stop(vcpu_id) if self._stepping.get(vcpu_id) == epoch else None)
            return
        if self.table.any_watched:
            breakpoint = self.table.execution_at(code_segment(vcpu.get_sregs()).linear(values[RIP]), watched_only=True)
            if breakpoint is not None:
                reason = "swbreak" if breakpoint.kind == SOFTWARE else "hwbreak"
                self._stop_in_place(vcpu, lambda: Stop(vcpu_id, reason=reason)
                                    if breakpoint in self.table.entries() else None)
