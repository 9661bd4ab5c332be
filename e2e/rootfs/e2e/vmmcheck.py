"""Run the harness (`vmm doctor`, `vmm run --watch`) and report E2E-VMM lines.

Inside the emulated machine (after a case loaded the KVM modules):
    python3 vmmcheck.py patched|stock
On the host, to record the stock-backend reference the guest runs must match:
    python3 vmmcheck.py --host-ref OUT.json

The sample is the packed guest (guest_images/packed_long.bin): a loader that
decrypts a payload into page 0x200000 and calls it once. Watching that page
must give exactly one event at gpa=rip=0x200000; its output and exit status
must equal the unwatched run's.

The SMP check runs guest_images/smp.elf on two vCPUs, both calling the watched
`shared_code` at once (25 times each): every call must be one event traced in
full (9 instructions), and the output and exit status must equal the unwatched
run's. The barrier check runs smp_barrier.elf, whose watched code waits for the
other vCPU; the transparency check compares v2e_transparency.bin's probes watched
and unwatched (differences are NOTE lines); the rep-mmio check traces watched code
through string copies to MMIO (v2e_rep_mmio.bin); the unpack check runs the unpacking
samples with the module's backend.
"""
import hashlib
import json
import os
import re
import tempfile
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.environ.get("V2E_TOP", "/opt/v2e")
IMAGE = "guest_images/packed_long.bin"
WATCH = 0x200000
MODE = "long"


def vmm(*args):
    """Run `vmm ARGS...` in this process (the interpreter and cffi start once:
    under emulation that is most of the cost), capturing fds 1 and 2."""
    if TOP not in sys.path:
        sys.path.insert(0, TOP)
    os.chdir(TOP)
    from vmm.cli import main as vmm_main
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    try:
        try:
            status = vmm_main(list(args))
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else 1
        except BaseException as e:  # report, do not die: the other checks still run
            status = f"exception:{type(e).__name__}"
            sys.stderr.write(f"vmmcheck: {e!r}\n")
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
    out.seek(0)
    err.seek(0)
    return status, out.read(), err.read().decode(errors="replace")


def run_sample(backend=None, tag="x"):
    args = ["run", IMAGE, "--mode", MODE]
    info = {}
    if backend:
        trace, stats = f"/tmp/{tag}.trace.jsonl", f"/tmp/{tag}.stats.json"
        for f in (trace, stats):
            if os.path.exists(f):
                os.unlink(f)
        args += ["--watch", hex(WATCH), "--backend", backend, "--trace", trace, "--stats-json", stats]
    status, out, err = vmm(*args)
    info.update(status=status, output_sha256=hashlib.sha256(out).hexdigest()[:16], stderr=err)
    if backend:
        m = re.search(r"(\d+) events?, (\d+) instructions? traced \((\w+) backend\)", err)
        if m:
            info.update(events=int(m.group(1)), traced=int(m.group(2)), used=m.group(3))
        evs, rips = [], []
        if os.path.exists(trace):
            for line in open(trace):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("type") == "event":
                    evs.append((rec.get("gpa"), rec.get("rip")))
                elif rec.get("type") == "insn" and rec.get("event") == 1:
                    rips.append(int(rec["rip"], 16))
        info["trace_events"] = evs
        info["rips"] = rips
        try:
            exits = json.load(open(stats)).get("exits", {})
        except (OSError, ValueError):
            exits = None
        if exits is not None:
            info["emulate_exits"] = sum(v for k, v in exits.items() if "EMULATE" in str(k) or str(k) == "4096")
            info["exits"] = exits
    return info


def emit(name, fields, problems):
    for p in problems:
        print(f"E2E-ERROR vmm {name}: {p}")
    kv = " ".join(f"{k}={v}" for k, v in fields.items())
    print(f"E2E-VMM {name} {kv} verdict={'FAIL' if problems else 'PASS'}", flush=True)
    return not problems


def doctor(expect):
    status, out, err = vmm("doctor", "--json")
    problems = []
    try:
        checks = {c["name"]: c for c in json.loads(out)["checks"]}
    except (ValueError, KeyError):
        checks = {}
        problems.append(f"doctor output is not JSON (status {status}): {err.strip()[-200:]}")
    patch = checks.get("v2e-patch", {}).get("status", "?")
    if expect == "patched" and patch != "PASS":
        problems.append(f"doctor does not detect the patch: {checks.get('v2e-patch')}")
    if expect == "stock" and patch == "PASS":
        problems.append("doctor reports the patch under the stock module")
    fails = [n for n, c in checks.items() if c.get("status") == "FAIL"]
    if fails:
        problems.append("doctor checks failed: " + ",".join(fails))
    return emit("doctor", {"v2e_patch": patch, "status": status}, problems)


def rips_text(rips):
    return ",".join("%x" % (r - WATCH) for r in rips)


def sample(expect):
    problems = []
    # the unwatched run does not depend on the module: once per boot
    cache = "/tmp/vmmcheck-plain.json"
    if os.path.exists(cache):
        plain = json.load(open(cache))
    else:
        plain = run_sample(None, "plain")
        json.dump(plain, open(cache, "w"))
    fields = {}
    if expect == "patched":
        w = run_sample("patched", "patched")
    else:
        # negative control: --backend patched must be refused with a clear message
        r = run_sample("patched", "refused")
        refused = r["status"] != 0 and re.search(r"exec-trap|KVM_CAP_EXEC_TRAP", r["stderr"])
        fields["refused"] = "yes" if refused else "no"
        if not refused:
            problems.append(f"--backend patched not refused (status {r['status']}): {r['stderr'].strip()[-200:]}")
        else:
            msg = [l for l in r["stderr"].splitlines() if "exec-trap" in l or "KVM_CAP_EXEC_TRAP" in l]
            print("E2E-VMM-REFUSED " + (msg[0] if msg else ""))
        # The stock backend on this real kvm_intel/kvm_amd module: it must give the
        # guest the same result and trace one event.
        w = run_sample("stock", "stock")
        fields.update(stock_backend_status=w["status"], stock_backend_events=w.get("events", "?"),
                      stock_backend_traced=w.get("traced", "?"))
        if w["status"] != plain["status"] or w["output_sha256"] != plain["output_sha256"] \
                or w.get("events") != 1:
            problems.append("stock backend inside the guest: status %s (unwatched %s), %s events: %s" % (
                w["status"], plain["status"], w.get("events", "?"),
                w["stderr"].strip().replace("\n", " | ")[-300:]))
        fields.update(unwatched_status=plain["status"], emulate_exits=w.get("emulate_exits", "?"))
        if w.get("emulate_exits") not in (None, 0):
            problems.append(f"{w['emulate_exits']} KVM_EXIT_EMULATE exits under the stock module")
        return emit("packed-negative", fields, problems)
    fields.update(backend=w.get("used", "?"), status=w["status"], unwatched_status=plain["status"],
                  output_sha256=w["output_sha256"], events=w.get("events", "?"),
                  traced=w.get("traced", "?"), emulate_exits=w.get("emulate_exits", "?"),
                  exits=",".join(f"{k}:{v}" for k, v in sorted((w.get("exits") or {}).items())) or "?")
    if w.get("trace_events"):
        fields["gpa"], fields["rip"] = w["trace_events"][0]
    if w["status"] != plain["status"] or w["output_sha256"] != plain["output_sha256"]:
        problems.append("watched run differs from the unwatched run (status %s vs %s, output %s vs %s)" % (
            w["status"], plain["status"], w["output_sha256"], plain["output_sha256"]))
    if w.get("events") != 1 or len(w.get("trace_events", [])) != 1:
        problems.append(f"expected exactly 1 event, got {w.get('events')} ({w.get('trace_events')})")
    elif tuple(int(v, 16) for v in w["trace_events"][0]) != (WATCH, WATCH):
        problems.append(f"event at gpa/rip {w['trace_events'][0]}, wanted {WATCH:#x}/{WATCH:#x}")
    if w.get("used") != "patched":
        problems.append(f"{w.get('used')} backend used: {w['stderr'].strip()[-200:]}")
    if w.get("emulate_exits") != 1:
        problems.append(f"{w.get('emulate_exits')} KVM_EXIT_EMULATE exits, wanted 1 ({w.get('exits')})")
    if w["status"] != plain["status"]:
        print("E2E-NOTE vmm stderr: " + w["stderr"].strip().replace("\n", " | ")[-300:])
    print(f"E2E-VMM-RIPS packed n={len(w.get('rips', []))} rips={rips_text(w.get('rips', []))}")
    return emit("packed", fields, problems)


SMP_IMAGE = "guest_images/smp.elf"
SMP_CPUS, SMP_CALLS, SMP_INSTRUCTIONS = 2, 25, 9


def smp(expect):
    """Every vCPU calls the watched code at once, with this module's backend."""
    backend = "patched" if expect == "patched" else "stock"
    base = ["run", SMP_IMAGE, "--smp", str(SMP_CPUS), "--timeout", "120"]
    p_status, p_out, _ = vmm(*base)
    trace = "/tmp/smp.trace.jsonl"
    status, out, err = vmm(*base, "--watch-symbol", "shared_code", "--backend", backend, "--trace", trace)
    problems, records = [], []
    try:
        records = [json.loads(line) for line in open(trace)]
    except (OSError, ValueError) as e:
        problems.append(f"trace unreadable: {e}")
    events = [r for r in records if r.get("type") == "event"]
    per_vcpu = sorted({(v, sum(1 for e in events if e.get("vcpu") == v)) for v in range(SMP_CPUS)})
    # Trace format 2: a header first, the watched page's contents once (after the first event
    # that refers to them), the summary last.
    one_event = ["event"] + ["insn"] * SMP_INSTRUCTIONS + ["leave"]
    fields = {"backend": backend, "status": status, "unwatched_status": p_status,
              "events": len(events), "per_vcpu": ",".join(str(n) for _, n in per_vcpu)}
    if (status, out) != (p_status, p_out):
        problems.append(f"watched run differs from the unwatched one (status {status} vs {p_status}): "
                        + err.strip().replace("\n", " | ")[-200:])
    if per_vcpu != [(v, SMP_CALLS) for v in range(SMP_CPUS)]:
        problems.append(f"events per vCPU {per_vcpu}, wanted {SMP_CALLS} each")
    else:
        # Every vCPU single-steps while the trap is disarmed, so events of different vCPUs may
        # interleave: each event's own records must be complete and in order.
        by_event, pages = {}, 0
        for record in records[1:-1]:
            if record.get("type") == "page":
                pages += 1
            else:
                by_event.setdefault(record.get("event"), []).append(record.get("type"))
        incomplete = [index for index, types in by_event.items() if types != one_event]
        if incomplete:
            problems.append(f"events {incomplete[:5]} are not complete (event, {SMP_INSTRUCTIONS} insn, leave)")
        if pages != 1 or records[0].get("type") != "header" or records[-1].get("type") != "summary":
            problems.append(f"wanted a header, the watched page once and a summary: {pages} page records, "
                            f"first {records[0].get('type')}, last {records[-1].get('type')}")
    return emit("smp", fields, problems)


def barrier(expect):
    """Watched code that spins until the other vCPU arrives must finish (no vCPU waits for
    the tracer), with this module's backend."""
    backend = "patched" if expect == "patched" else "stock"
    base = ["run", "guest_images/smp_barrier.elf", "--smp", "2", "--timeout", "120"]
    p_status, p_out, _ = vmm(*base)
    status, out, err = vmm(*base, "--watch-symbol", "shared_code", "--backend", backend)
    problems = []
    if (status, out) != (p_status, p_out) or status != 33:
        problems.append(f"status {status} (unwatched {p_status}), output differs: {(out != p_out)}: "
                        + err.strip().replace("\n", " | ")[-200:])
    return emit("barrier", {"backend": backend, "status": status, "unwatched_status": p_status}, problems)


TRANSPARENCY_PROBES = {1: "pushf-tf", 2: "guest-tf-db", 3: "movss-pushf", 5: "debug-registers",
                       6: "dr0-breakpoint", 7: "de-handler", 8: "ud-handler", 9: "pf-handler"}


def transparency(expect):
    """guest_images/v2e_transparency.bin's probes read the same watched as unwatched; each
    difference is reported with its values (a NOTE: what this CPU's KVM shows of single-step),
    and rdtsc in the watched code must read 205 x 20 cycles."""
    if TOP not in sys.path:
        sys.path.insert(0, TOP)
    import io
    from vmm.machine import Machine
    from vmm.v2e import V2E
    backend = "patched" if expect == "patched" else "stock"
    reports = []
    for watched in (False, True):
        with Machine(mem_size=16 << 20, serial_output=io.BytesIO()) as machine:
            machine.load(open(os.path.join(TOP, "guest_images/v2e_transparency.bin"), "rb").read(), mode="long")
            if watched:
                with V2E(machine, [(0x101000, 0x102000)], backend=backend) as engine:
                    outcome = machine.run(timeout=60)
                    engine.finish(outcome)
            else:
                outcome = machine.run(timeout=60)
            reports.append({call.args[0]: call.args[1:] for call in machine.ucalls.reports})
    plain, watched = reports
    differing = [f"{name}: {plain.get(number)} -> {watched.get(number)}" for number, name in TRANSPARENCY_PROBES.items()
                 if plain.get(number) != watched.get(number)]
    for difference in differing:
        print(f"E2E-NOTE transparency ({backend}) differs: {difference}")
    problems = []
    if watched.get(4, (None,))[0] != 205 * 20:
        problems.append(f"rdtsc probe read {watched.get(4)}, wanted {205 * 20} cycles")
    return emit("transparency", {"backend": backend, "probes": len(TRANSPARENCY_PROBES),
                                 "differing": len(differing)}, problems)


# guest_images/v2e_rep_mmio.s: the watched code's instructions (rep movsb to MMIO and back).
REP_MMIO_RIPS = [0x101000, 0x101001, 0x101008, 0x10100d, 0x101012, 0x101014, 0x101019, 0x10101e, 0x101023,
                 0x101025, 0x10102d, 0x101033, 0x10103a, 0x10103f]


def rep_mmio(expect):
    """Watched code that copies to MMIO with rep movsb, which KVM emulates and finishes at
    the next KVM_RUN, is traced to its end: its step must survive the emulator."""
    backend = "patched" if expect == "patched" else "stock"
    trace = "/tmp/rep-mmio.trace.jsonl"
    status, out, err = vmm("run", "guest_images/v2e_rep_mmio.bin", "--mem", "16M", "--watch", "0x101000+0x1000",
                           "--backend", backend, "--trace", trace, "--timeout", "60")
    problems, records = [], []
    try:
        records = [json.loads(line) for line in open(trace)]
    except (OSError, ValueError) as e:
        problems.append(f"trace unreadable: {e}")
    rips = [int(r["rip"], 16) for r in records if r.get("type") == "insn"]
    leaves = [(r.get("reason"), r.get("rip")) for r in records if r.get("type") == "leave"]
    if status != 0:
        problems.append(f"status {status}: " + err.strip().replace("\n", " | ")[-200:])
    if rips != REP_MMIO_RIPS or leaves != [("branch-out", "0x102000")]:
        problems.append(f"traced {[hex(rip) for rip in rips]}, left {leaves}; wanted the "
                        f"{len(REP_MMIO_RIPS)} instructions of the watched code, then branch-out at 0x102000")
    return emit("rep-mmio", {"backend": backend, "status": status, "traced": len(rips)}, problems)


def unpack(expect):
    """Unpacking with this module's backend: the three-layer sample gives exactly two layers
    and its own output; one vCPU writing what another runs is one layer."""
    backend = "patched" if expect == "patched" else "stock"
    problems = []
    plain_status, plain_out, _ = vmm("run", "guest_images/unpack_three_long.bin", "--timeout", "60")
    status, out, err = vmm("run", "guest_images/unpack_three_long.bin", "--unpack", "--dump-dir", "/tmp/unpack3",
                           "--backend", backend, "--timeout", "60")
    m = re.search(r"unpack: (\d+) layer\(s\) \((\w+) backend\)", err)
    layers, used = (int(m.group(1)), m.group(2)) if m else (None, None)
    if (status, out) != (plain_status, plain_out) or layers != 2 or used != backend:
        problems.append(f"three layers: status {status} (unwatched {plain_status}), {layers} layers with the {used} "
                        f"backend: " + err.strip().replace("\n", " | ")[-200:])
    base = ["run", "guest_images/unpack_smp.elf", "--smp", "2", "--timeout", "120"]
    p_status, p_out, _ = vmm(*base)
    status2, out2, err2 = vmm(*base, "--unpack", "0x300000+0x1000", "--dump-dir", "/tmp/unpacksmp", "--backend", backend)
    m = re.search(r"unpack: (\d+) layer\(s\)", err2)
    if (status2, out2) != (p_status, p_out) or not m or int(m.group(1)) != 1:
        problems.append(f"two vCPUs: status {status2} (unwatched {p_status}): " + err2.strip().replace("\n", " | ")[-200:])
    return emit("unpack", {"backend": backend, "layers": layers, "status": status}, problems)


def host_ref(path):
    plain = run_sample(None, "host-plain")
    w = run_sample("stock", "host-stock")
    ref = {"packed": {"status": w["status"], "output_sha256": w["output_sha256"],
                      "rips": rips_text(w.get("rips", [])),
                      "events": w.get("events"), "traced": w.get("traced"),
                      "unwatched_status": plain["status"],
                      "unwatched_output_sha256": plain["output_sha256"]}}
    with open(path, "w") as f:
        json.dump(ref, f, indent=1)
    print(f"host stock-backend reference: {ref['packed']}")
    ok = (w.get("events") == 1 and w["status"] == plain["status"]
          and w["output_sha256"] == plain["output_sha256"])
    return ok


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--host-ref":
        return 0 if host_ref(sys.argv[2]) else 1
    expect = sys.argv[1] if len(sys.argv) > 1 else "patched"
    ok = doctor(expect)
    ok = sample(expect) and ok
    ok = smp(expect) and ok
    ok = barrier(expect) and ok
    ok = transparency(expect) and ok
    ok = rep_mmio(expect) and ok
    ok = unpack(expect) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
