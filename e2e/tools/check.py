#!/usr/bin/env python3
"""Check the serial logs of the emulated-CPU runs and print the summary table.

  check.py [--patched yes|no|auto] [--host-ref FILE] RUN...

RUN is LABEL:LOG:KERNEL:CPU, one per emulated machine. The guest's /init
prints machine-readable lines (see rootfs/e2e/lib.sh and guest/kvmtest.c):

  E2E-CASE-BEGIN name=N set=patched|stock vendor=intel|amd params=...
  E2E-MODULES set=... ept=Y|N ... / npt=Y|N ...
  E2E <test> key=value ... verdict=PASS|FAIL
  E2E-EVENT EMULATE flags=.. gpa=.. gva=.. rip=..
  E2E-VMM <name> key=value ...   (the harness run inside, see plan files)
  E2E-PROBE <check> <mode> PASS|FAIL|SKIP: detail   (rootfs/e2e/probes.py)
  E2E-PROBES passed=N failed=N skipped=N
  E2E-CASE-END name=N rc=0|skip|...
  E2E-DONE rc=...

Each case is checked against what it must show (EXPECT below). Exit status is
non-zero on any mismatch, and the tail of the offending serial log is shown.
"""
import argparse
import json
import os
import re
import sys

TRAP_GPA = 0x30010   # guest/kvmtest.c: TRAP_GPA + TRAP_OFF
TRAP_RIP = 0x10010   # TRAP_GVA + TRAP_OFF
HARNESS = False      # set when the image holds the harness (--harness)


def kv(text):
    return dict(re.findall(r"(\w+)=(\S+)", text))


def parse(path):
    cases, cur = [], None
    done = None
    boot = None
    if not os.path.exists(path):
        return cases, done, boot, []
    lines = open(path, errors="replace").read().splitlines()
    for ln in lines:
        # the console may interleave kernel messages: find our marker anywhere
        m = re.search(r"(E2E(?:-[A-Z-]+)?) ?(.*)$", ln)
        if not m or not ln.lstrip().startswith("E2E"):
            continue
        tag, rest = m.group(1), m.group(2)
        if tag == "E2E-BOOT":
            boot = kv(rest)
        elif tag == "E2E-CASE-BEGIN":
            cur = dict(begin=kv(rest), modules={}, tests={}, events=[], errors=[],
                       skip=False, end=None, vmm={}, rips=None, notes=[], probes=[], probe_summary=None)
            cases.append(cur)
        elif cur is None:
            if tag == "E2E-DONE":
                done = kv(rest)
            continue
        elif tag == "E2E-MODULES":
            cur["modules"] = kv(rest)
        elif tag == "E2E":
            name, _, fields = rest.partition(" ")
            cur["tests"][name] = kv(fields)
        elif tag == "E2E-EVENT":
            cur["events"].append(kv(rest))
        elif tag == "E2E-VMM":
            name, _, fields = rest.partition(" ")
            cur["vmm"][name] = kv(fields)
        elif tag == "E2E-VMM-RIPS":
            cur["rips"] = kv(rest).get("rips", "")
        elif tag == "E2E-PROBE":
            check, mode, verdict_detail = (rest.split(" ", 2) + ["", ""])[:3]
            verdict, _, detail = verdict_detail.partition(": ")
            cur["probes"].append((check, mode, verdict, detail))
        elif tag == "E2E-PROBES":
            cur["probe_summary"] = kv(rest)
        elif tag in ("E2E-NOTE", "E2E-VMM-REFUSED"):
            cur["notes"].append(rest)
        elif tag == "E2E-ERROR":
            cur["errors"].append(rest)
        elif tag == "E2E-SKIP":
            cur["skip"] = True
        elif tag == "E2E-CASE-END":
            cur["end"] = kv(rest)
            cur = None
        elif tag == "E2E-DONE":
            done = kv(rest)
    return cases, done, boot, lines


def paging(case):
    mods = case["modules"]
    for p in ("ept", "npt"):
        if p in mods:
            return f"{p}={mods[p]}"
    params = case["begin"].get("params", "")
    return params or "-"


def want_paging(case):
    """params ept=1/npt=1 on insmod must be visible in /sys/module."""
    m = re.match(r"(ept|npt)=(\d)", case["begin"].get("params", ""))
    if not m:
        return None
    return m.group(1), {"1": ("Y", "1"), "0": ("N", "0")}[m.group(2)]


def check_case(case, host_ref):
    """Return (verdict, events, traced, kvm-tests verdict, harness verdict, problems)."""
    problems = []
    if case["skip"]:
        return "SKIP", "-", "-", "-", "-", ["modules not available"]
    if case["end"] is None:
        problems.append("case did not finish (timeout, panic or crash)")
    wp = want_paging(case)
    if wp:
        got = case["modules"].get(wp[0])
        if got not in wp[1]:
            problems.append(f"{wp[0]} is {got!r}, wanted {wp[1][0]}")
    patched = case["begin"].get("set") == "patched"
    tests = case["tests"]
    for tname, t in tests.items():
        if t.get("verdict") != "PASS":
            problems.append(f"{tname}: verdict {t.get('verdict')}")
    key = "trap-patched" if patched else "trap-stock"
    t = tests.get(key)
    if t is None:
        problems.append(f"no {key} result")
    elif patched:
        if t.get("cap") != "1":
            problems.append(f"capability not detected (cap={t.get('cap')})")
        if t.get("emulate") != "1":
            problems.append(f"EMULATE events {t.get('emulate')}, wanted exactly 1")
        if int(t.get("gpa", "-1"), 0) != TRAP_GPA or int(t.get("rip", "-1"), 0) != TRAP_RIP:
            problems.append(f"EMULATE at gpa={t.get('gpa')} rip={t.get('rip')}, wanted "
                            f"gpa={TRAP_GPA:#x} rip={TRAP_RIP:#x}")
    else:
        if t.get("cap") not in ("0", "-1"):
            problems.append(f"stock module reports the capability (cap={t.get('cap')})")
        if t.get("emulate") != "0":
            problems.append("EMULATE exit under the stock module")
    if "smoke" in tests and tests["smoke"].get("verdict") != "PASS":
        problems.append("smoke test failed")
    problems += [e for e in case["errors"] if not e.startswith("vmm ")]
    hproblems = []
    events = str(len(case["events"]))
    traced = "-"
    for vname, v in case["vmm"].items():
        hproblems += check_vmm(vname, v, patched, host_ref, case.get("rips"))
        if "traced" in v:
            traced = v["traced"]
        if vname == "packed":
            events += f"+{v.get('emulate_exits', '?')}"
        elif vname == "packed-negative":
            events += f"+{v.get('emulate_exits', '?')}"
    if patched and "packed" not in case["vmm"] and HARNESS:
        hproblems.append("no harness (vmm run) result")
    if not patched and "packed-negative" not in case["vmm"] and HARNESS:
        hproblems.append("no harness negative-control result")
    if "smp" not in case["vmm"] and HARNESS:
        hproblems.append("no harness SMP result")
    hproblems += [e for e in case["errors"] if e.startswith("vmm ")]
    # The probes run with the patched module (rootfs/e2e/lib.sh): each check watched must
    # print what it prints unwatched.
    if patched and HARNESS and case["probe_summary"] is None:
        hproblems.append("no probe results (E2E-PROBES)")
    hproblems += [f"probe {check} ({mode}): {detail}" for check, mode, verdict, detail in case["probes"]
                  if verdict == "FAIL"]
    skipped = [f"{check} ({mode})" for check, mode, verdict, _ in case["probes"] if verdict == "SKIP"]
    if skipped:
        case["notes"].append(f"probes skipped (the unwatched run printed no line): {', '.join(skipped)}")
    kv_ = "PASS" if not problems else "FAIL"
    hv = ("PASS" if not hproblems else "FAIL") if (case["vmm"] or HARNESS) else "-"
    problems += hproblems
    return ("PASS" if not problems else "FAIL"), events, traced, kv_, hv, problems


def rip_diff(guest, host):
    """Where the guest's traced RIP sequence (offsets in the page) leaves the host's."""
    g, h = guest.split(","), host.split(",")
    i = next((k for k in range(min(len(g), len(h))) if g[k] != h[k]), min(len(g), len(h)))
    return (f"traced RIPs (offsets from the page) diverge at step {i + 1}: "
            f"guest ...{','.join(g[max(0, i - 3):i + 6])}... host ...{','.join(h[max(0, i - 3):i + 6])}...")


def check_vmm(name, v, patched, host_ref, rips=None):
    """E2E-VMM lines written by rootfs/e2e/vmmcheck.py."""
    problems = []
    if v.get("verdict") not in (None, "PASS"):
        problems.append(f"vmm {name}: verdict {v.get('verdict')}")
    ref = (host_ref or {}).get(name)
    if name == "packed" and not ref:
        problems.append("no host stock-backend reference (logs/host-ref.json) to compare with")
    if ref:
        for k in ("traced", "status", "output_sha256"):
            if k in ref and k in v and str(ref[k]) != v[k]:
                problems.append(f"vmm {name}: {k} {v[k]} != host stock run {ref[k]}")
        if rips is not None and ref.get("rips") and rips != ref["rips"]:
            problems.append(rip_diff(rips, ref["rips"]))
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patched", default="auto", choices=("yes", "no", "auto", "prebuilt"))
    ap.add_argument("--host-ref")
    ap.add_argument("--tail", type=int, default=60)
    ap.add_argument("--harness", action="store_true", help="the image holds vmm/: its results are required")
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    global HARNESS
    HARNESS = a.harness
    host_ref = json.load(open(a.host_ref)) if a.host_ref and os.path.exists(a.host_ref) else None

    rows, failed_logs, all_notes = [], [], []
    for run in a.runs:
        label, log, kernel, cpu = run.split(":", 3)
        cases, done, boot, lines = parse(log)
        bad = False
        if not cases:
            rows.append((label, kernel, cpu, "-", "-", "-", "-", "-", "FAIL", "no cases in log"))
            bad = True
        for c in cases:
            verdict, events, traced, kverdict, hverdict, problems = check_case(c, host_ref)
            if verdict == "SKIP" and a.patched in ("yes", "prebuilt"):
                verdict = "FAIL"
            if verdict == "SKIP" and a.patched == "no" and c["begin"].get("set") == "patched":
                problems = ["patched modules disabled (PATCHED=no)"]
            bad |= verdict == "FAIL"
            all_notes += [(f"{label}/{c['begin'].get('name', '?')}", n) for n in c["notes"]]
            rows.append((c["begin"].get("name", "?"), kernel, cpu, paging(c), events, traced,
                         kverdict, hverdict, verdict, "; ".join(problems)))
        if done is None:
            rows.append((label, kernel, cpu, "-", "-", "-", "-", "-", "FAIL",
                         "run did not finish (no E2E-DONE): timeout, panic or crash"))
            bad = True
        if bad:
            failed_logs.append((log, lines))

    hdr = ("case", "kernel", "CPU model", "ept/npt", "events", "traced", "kvm tests", "harness", "verdict")
    w = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    fmt = "  ".join("%%-%ds" % x for x in w)
    print(fmt % hdr)
    print(fmt % tuple("-" * x for x in w))
    for r in rows:
        print(fmt % r[:9] + (f"  ({r[9]})" if r[9] and r[8] != "PASS" else ""))
    grouped = {}
    for c, n in all_notes:
        grouped.setdefault(n, []).append(c)
    if grouped:
        print()
        for n, cs in grouped.items():
            print(f"note [{', '.join(cs)}]: {n}")
    for log, lines in failed_logs:
        print(f"\n==== {log} (last {a.tail} lines) ====")
        print("\n".join(lines[-a.tail:]))
    if failed_logs:
        print("\ne2e: FAILED", file=sys.stderr)
        sys.exit(1)
    print("\ne2e: all checks passed" + ("" if all(r[8] == "PASS" for r in rows)
                                        else " (some cases skipped)"))


if __name__ == "__main__":
    main()
