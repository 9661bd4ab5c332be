#!/usr/bin/env python3
"""Check the serial logs of the emulated-CPU runs and print the summary table.

  check.py [--patched yes|no|auto] [--host-ref FILE] RUN...

RUN is LABEL:LOG:KERNEL:CPU, one per emulated machine. The guest's /init
prints machine-readable lines (see rootfs/e2e/lib.sh and guest/kvmtest.c):

  E2E-CASE-BEGIN name=N set=patched|stock|install vendor=intel|amd params=P,P...
  E2E-MODULES set=... ept=Y|N ... / npt=Y|N ... tdp_mmu=Y|N ...
  E2E <test> key=value ... verdict=PASS|FAIL
  E2E-EVENT EMULATE flags=.. gpa=.. size=.. gva=.. rip=..
  E2E-SELFTEST-OUT <a line of exec_trap_test's TAP output>
  E2E-SELFTEST rc=N ...
  E2E-INSTALL step=busy|install|uninstall key=value ... verdict=PASS|FAIL
  E2E-VMM <name> key=value ...   (the harness run inside, see plan files)
  E2E-PROBE <check> <mode> PASS|FAIL|KNOWN|SKIP: detail   (rootfs/e2e/probes.py)
  E2E-PROBES passed=N failed=N known=N skipped=N
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

TRAP_GPA = 0x30000   # guest/kvmtest.c: TRAP_GPA, the marked page
TRAP_RIP = 0x10010   # TRAP_GVA + TRAP_OFF
KVM_EXEC_TRAP_FEATURE_NX = 1 << 1
HARNESS = False      # set when the image holds the harness (--harness)
# exec_trap_test's subtests that may be skipped here: no VM type with private
# memory or protected state exists in the emulated machines.
SELFTEST_MAY_SKIP = {"protected VM refused"}
INSTALL_STEPS = ("busy", "install", "uninstall")


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
                       skip=False, end=None, vmm={}, rips=None, notes=[], probes=[], probe_summary=None,
                       selftest=None, selftest_out=[], install={})
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
        elif tag == "E2E-SELFTEST-OUT":
            cur["selftest_out"].append(rest)
        elif tag == "E2E-SELFTEST":
            cur["selftest"] = selftest_results(cur["selftest_out"], kv(rest))
        elif tag == "E2E-INSTALL":
            fields = kv(rest)
            cur["install"][fields.get("step", "?")] = fields
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


def selftest_results(lines, summary):
    """exec_trap_test's TAP output: plan, {number: (result, name, reason)}, rc."""
    plan, results, reason = None, {}, ""
    for line in lines:
        m = re.match(r"1\.\.(\d+)$", line)
        if m:
            plan = int(m.group(1))
        m = re.match(r"# SKIP (.*)$", line)
        if m:
            reason = m.group(1)
        m = re.match(r"(not ok|ok) (\d+) (# SKIP )?(.*)$", line)
        if m:
            result = "FAIL" if m.group(1) == "not ok" else "skip" if m.group(3) else "ok"
            results[int(m.group(2))] = (result, m.group(4).strip(), reason if result == "skip" else "")
            reason = ""
    return {"plan": plan, "results": results, "rc": summary.get("rc"), "time": summary.get("time"),
            "lines": lines}


def params(case):
    return [p for p in case["begin"].get("params", "").split(",") if p]


def paging(case):
    mods = case["modules"]
    shown = [f"{p}={mods[p]}" for p in ("ept", "npt") if p in mods]
    if mods.get("tdp_mmu") in ("N", "0"):
        shown.append("tdp_mmu=N")
    return " ".join(shown) or ",".join(params(case)) or "-"


# Module parameters asked for on insmod/modprobe that /sys/module must show:
# name in the case's params -> key in E2E-MODULES.
PARAM_KEYS = {"ept": "ept", "npt": "npt", "kvm.tdp_mmu": "tdp_mmu",
              "kvm.force_emulation_prefix": "force_emulation_prefix"}


def wanted_params(case):
    """[(key, accepted values)] for the parameters the case asked for."""
    wanted = []
    for p in params(case):
        name, _, value = p.partition("=")
        if name in PARAM_KEYS and value in ("0", "1"):
            wanted.append((PARAM_KEYS[name], {"1": ("Y", "1"), "0": ("N", "0")}[value]))
    return wanted


def check_selftest(case):
    """Problems with the case's exec_trap_test run, and the table's summary."""
    st = case["selftest"]
    if st is None:
        return ["no exec_trap_test result"], "-"
    results = st["results"].values()
    passed = sum(1 for r in results if r[0] == "ok")
    skipped = [r for r in results if r[0] == "skip"]
    failed = [r[1] for r in results if r[0] == "FAIL"]
    problems = [f"selftest: {name} failed" for name in failed]
    problems += [f"selftest: {r[1]} skipped ({r[2]})" for r in skipped if r[1] not in SELFTEST_MAY_SKIP]
    if st["plan"] is None or len(st["results"]) != st["plan"]:
        problems.append(f"selftest: {len(st['results'])} results for a plan of {st['plan']} (crashed?)")
    if st["rc"] != "0" and not failed:
        problems.append(f"selftest: exit status {st['rc']}")
    summary = f"{passed}/{st['plan'] or '?'} ok" + (f" {len(skipped)} skip" if skipped else "")
    return problems, summary


def check_install(case):
    """Problems with an install case (rootfs/e2e/installcheck.py)."""
    problems = []
    for step in INSTALL_STEPS:
        fields = case["install"].get(step)
        if fields is None:
            problems.append(f"install: no {step} result")
        elif fields.get("verdict") != "PASS":
            problems.append(f"install {step}: verdict {fields.get('verdict')}")
    problems += [e for e in case["errors"]]
    doctor = "/".join(case["install"].get(step, {}).get("doctor", "?") for step in INSTALL_STEPS[1:])
    return problems, doctor


def check_case(case, host_ref):
    """Return (verdict, events, traced, kvm-tests verdict, selftest, harness verdict, problems)."""
    problems = []
    if case["skip"]:
        return "SKIP", "-", "-", "-", "-", "-", ["modules not available"]
    if case["end"] is None:
        problems.append("case did not finish (timeout, panic or crash)")
    for key, accepted in wanted_params(case):
        got = case["modules"].get(key)
        if got not in accepted:
            problems.append(f"{key} is {got!r}, wanted {accepted[0]}")
    if case["begin"].get("set") == "install":
        iproblems, doctor = check_install(case)
        verdict = "PASS" if not problems + iproblems else "FAIL"
        return (verdict, "-", "-", "PASS" if not iproblems else "FAIL", "-", f"doctor {doctor}",
                problems + iproblems)
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
        if not int(t.get("cap", "0")) & KVM_EXEC_TRAP_FEATURE_NX:
            problems.append(f"capability without KVM_EXEC_TRAP_FEATURE_NX (cap={t.get('cap')})")
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
    selftest = "-"
    if patched:
        sproblems, selftest = check_selftest(case)
        problems += sproblems
    elif case["selftest"] is not None:
        problems.append("exec_trap_test ran on the stock module")
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
    # Cases that run module_tests have no harness run (see the plan files).
    harness = HARNESS and case["begin"].get("tests") == "kvm_tests"
    if patched and "packed" not in case["vmm"] and harness:
        hproblems.append("no harness (vmm run) result")
    if not patched and "packed-negative" not in case["vmm"] and harness:
        hproblems.append("no harness negative-control result")
    if "smp" not in case["vmm"] and harness:
        hproblems.append("no harness SMP result")
    if "rep-mmio" not in case["vmm"] and harness:
        hproblems.append("no harness rep-mmio result")
    hproblems += [e for e in case["errors"] if e.startswith("vmm ")]
    # The probes run with the patched module (rootfs/e2e/lib.sh): each check watched must
    # print what it prints unwatched.
    if patched and harness and case["probe_summary"] is None:
        hproblems.append("no probe results (E2E-PROBES)")
    hproblems += [f"probe {check} ({mode}): {detail}" for check, mode, verdict, detail in case["probes"]
                  if verdict == "FAIL"]
    if case["probe_summary"] is not None and case["probe_summary"].get("planned") == "no":
        case["notes"].append("probes: not planned in this case (its plan sets no PROBES)")
    known = [f"{check} ({mode})" for check, mode, verdict, _ in case["probes"] if verdict == "KNOWN"]
    if known:
        case["notes"].append(f"probes that differ as README documents (single-step's TF in a pushed frame, an "
                             f"unwatched run already slow, or DR6 in vm86's real mode): {', '.join(known)}")
    skipped = [f"{check} ({mode})" for check, mode, verdict, _ in case["probes"] if verdict == "SKIP"]
    if skipped:
        case["notes"].append(f"probes skipped (the unwatched run printed no line, or a timer never fired in it): {', '.join(skipped)}")
    kv_ = "PASS" if not problems else "FAIL"
    hv = ("PASS" if not hproblems else "FAIL") if (case["vmm"] or harness) else "-"
    problems += hproblems
    return ("PASS" if not problems else "FAIL"), events, traced, kv_, selftest, hv, problems


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


def print_table(hdr, rows):
    """Rows of len(hdr) columns plus the problems, shown after a row that did not pass."""
    n = len(hdr)
    w = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(n)]
    fmt = "  ".join("%%-%ds" % x for x in w)
    print(fmt % hdr)
    print(fmt % tuple("-" * x for x in w))
    for r in rows:
        print(fmt % r[:n] + (f"  ({r[n]})" if r[n] and r[n - 1] != "PASS" else ""))


def print_selftests(selftests):
    """The KVM selftest's subtests, one column each, for every case that ran it."""
    if not selftests:
        return
    names = {}
    for _, _, st in selftests:
        for number, (_, name, _) in st["results"].items():
            names.setdefault(number, name)
    numbers = sorted(names)
    print("\nexec_trap_test (patches/, tools/testing/selftests/kvm/x86_64/exec_trap_test.c):")
    hdr = ("case", "kernel") + tuple(str(n) for n in numbers) + ("time",)
    rows = [(name, kernel) + tuple(st["results"].get(n, ("-",))[0] for n in numbers) + (f"{st['time']}s",)
            for name, kernel, st in selftests]
    w = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    fmt = "  ".join("%%-%ds" % x for x in w)
    print(fmt % hdr)
    for r in rows:
        print(fmt % r)
    for n in numbers:
        print(f"  {n:>2}  {names[n]}")
    skips = sorted({f"{st['results'][n][1]}: {st['results'][n][2]}" for _, _, st in selftests
                    for n in st["results"] if st["results"][n][0] == "skip"})
    for s in skips:
        print(f"  skipped: {s}")


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

    rows, failed_logs, all_notes, selftests = [], [], [], []
    for run in a.runs:
        label, log, kernel, cpu = run.split(":", 3)
        cases, done, boot, lines = parse(log)
        bad = False
        if not cases:
            rows.append((label, kernel, cpu, "-", "-", "-", "-", "-", "-", "FAIL", "no cases in log"))
            bad = True
        for c in cases:
            verdict, events, traced, kverdict, selftest, hverdict, problems = check_case(c, host_ref)
            if verdict == "SKIP" and a.patched in ("yes", "prebuilt"):
                verdict = "FAIL"
            if verdict == "SKIP" and a.patched == "no" and c["begin"].get("set") == "patched":
                problems = ["patched modules disabled (PATCHED=no)"]
            bad |= verdict == "FAIL"
            all_notes += [(f"{label}/{c['begin'].get('name', '?')}", n) for n in c["notes"]]
            rows.append((c["begin"].get("name", "?"), kernel, cpu, paging(c), events, traced,
                         kverdict, selftest, hverdict, verdict, "; ".join(problems)))
            if c["selftest"] is not None:
                selftests.append((c["begin"].get("name", "?"), kernel, c["selftest"]))
        if done is None:
            rows.append((label, kernel, cpu, "-", "-", "-", "-", "-", "-", "FAIL",
                         "run did not finish (no E2E-DONE): timeout, panic or crash"))
            bad = True
        if bad:
            failed_logs.append((log, lines))

    hdr = ("case", "kernel", "CPU model", "paging", "events", "traced", "kvm tests", "selftest", "harness",
           "verdict")
    print_table(hdr, rows)
    print_selftests(selftests)
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
    print("\ne2e: all checks passed" + ("" if all(r[9] == "PASS" for r in rows)
                                        else " (some cases skipped)"))


if __name__ == "__main__":
    main()
