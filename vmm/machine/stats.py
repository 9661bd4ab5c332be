"""Exit statistics, like kvm_stat or Firecracker's metrics: exits per reason and per
I/O port, and the time each vCPU spent inside KVM_RUN versus in the VMM.

Collection observes each run loop (RunLoop.observe), so a run without --stats pays
nothing. Each vCPU thread writes only its own record.
"""
import json
from collections import Counter
from dataclasses import dataclass, field

import kvm_abi

from ..kvm.exits import exit_name

_KVM_EXIT_IO = kvm_abi.KVM_EXIT_IO


@dataclass(slots=True)
class VcpuStats:
    vcpu_id: int
    exits: Counter = field(default_factory=Counter)   # exit reason -> count
    ports: Counter = field(default_factory=Counter)   # (port, "in" | "out") -> count of exits
    kvm_ns: int = 0
    first_ns: int | None = None
    last_ns: int | None = None

    def observe(self, exit, start_ns, end_ns):
        """A RunLoop observer: one KVM_RUN that took [start_ns, end_ns) and returned `exit`."""
        self.kvm_ns += end_ns - start_ns
        if self.first_ns is None:
            self.first_ns = start_ns
        self.last_ns = end_ns
        self.exits[exit.reason] += 1
        if exit.reason == _KVM_EXIT_IO:
            self.ports[exit.port, "out" if exit.is_write else "in"] += 1

    @property
    def vmm_ns(self):
        """Time on the vCPU thread outside KVM_RUN, from its first entry to its last return."""
        if self.first_ns is None:
            return 0
        return max(0, self.last_ns - self.first_ns - self.kvm_ns)


class ExitStats:
    def __init__(self):
        self.vcpus = []

    def attach(self, loop):
        """Count every exit of this run loop's vCPU and time its KVM_RUN calls."""
        record = VcpuStats(loop.vcpu.id)
        self.vcpus.append(record)
        loop.observe(record.observe)

    def summary(self):
        """Everything collected, as a JSON-ready dict."""
        exits, ports = Counter(), Counter()
        for record in self.vcpus:
            exits.update(record.exits)
            ports.update(record.ports)
        kvm_ns = sum(record.kvm_ns for record in self.vcpus)
        vmm_ns = sum(record.vmm_ns for record in self.vcpus)
        return {
            "total_exits": sum(exits.values()),
            "exits": {exit_name(reason): count for reason, count in exits.most_common()},
            "io_ports": [{"port": f"{port:#x}", "direction": direction, "count": count}
                         for (port, direction), count in sorted(ports.items())],
            "kvm_run_seconds": kvm_ns / 1e9,
            "vmm_seconds": vmm_ns / 1e9,
            "vcpus": [{"id": record.vcpu_id,
                       "exits": {exit_name(reason): count for reason, count in record.exits.most_common()},
                       "kvm_run_seconds": record.kvm_ns / 1e9,
                       "vmm_seconds": record.vmm_ns / 1e9} for record in self.vcpus],
        }

    def table(self):
        data = self.summary()
        lines = ["exit statistics", f"  {'exit reason':<24}{'count':>10}"]
        lines += [f"  {name:<24}{count:>10}" for name, count in data["exits"].items()]
        lines.append(f"  {'total':<24}{data['total_exits']:>10}")
        if data["io_ports"]:
            lines.append(f"  {'I/O port':<12}{'direction':<12}{'count':>10}")
            lines += [f"  {row['port']:<12}{row['direction']:<12}{row['count']:>10}" for row in data["io_ports"]]
        total = data["kvm_run_seconds"] + data["vmm_seconds"]
        for label, seconds in (("time in KVM_RUN", data["kvm_run_seconds"]), ("time in the VMM", data["vmm_seconds"])):
            share = f"{100 * seconds / total:5.1f}%" if total else "    -"
            lines.append(f"  {label:<24}{seconds:>10.6f} s {share}")
        return "\n".join(lines)

    def write_json(self, out):
        json.dump(self.summary(), out, indent=2)
        out.write("\n")
