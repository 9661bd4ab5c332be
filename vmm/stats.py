"""Exit statistics, like kvm_stat or Firecracker's metrics: exits per reason and per
I/O port, and the time each vCPU spent inside KVM_RUN versus in the VMM.

Collection wraps a run loop's KVM_RUN call and its I/O handler, so a run
without --stats pays nothing. Each vCPU thread writes only its own record.
"""
import json
import time
from collections import Counter

import kvm_abi

from .exits import exit_name


class VcpuStats:
    __slots__ = ("vcpu_id", "exits", "ports", "kvm_ns", "first_ns", "last_ns")

    def __init__(self, vcpu_id):
        self.vcpu_id = vcpu_id
        self.exits = Counter()   # exit reason -> count
        self.ports = Counter()   # (port, "in" | "out") -> count of exits
        self.kvm_ns = 0
        self.first_ns = self.last_ns = None

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
        clock = time.perf_counter_ns
        run, exits, ports = loop.vcpu.run, record.exits, record.ports

        def timed_run():
            start = clock()
            try:
                exit = run()
            finally:
                end = clock()
                record.kvm_ns += end - start
                if record.first_ns is None:
                    record.first_ns = start
                record.last_ns = end
            exits[exit.reason] += 1
            return exit

        handle_io = loop.handlers[kvm_abi.KVM_EXIT_IO]

        def counted_io(exit):
            ports[exit.port, "out" if exit.is_write else "in"] += 1
            handle_io(exit)

        loop.vcpu.run = timed_run
        loop.handlers[kvm_abi.KVM_EXIT_IO] = counted_io

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
