"""Run the anti-analysis probe suite (guest_images/probe_*.bin) unwatched and watched,
and say for every check whether the watched run printed the same line.

Inside an emulated machine, once a case has loaded the KVM modules:
    python3 probes.py [--backend patched|stock] [--timeout SECONDS] [IMAGE...]
(IMAGE: a probe image's name, e.g. probe_long; default every probe_*.bin in
$V2E_TOP/guest_images; --timeout bounds each run, 120 s by default.) It prints
one line per check and image, then a summary:
    E2E-PROBE <check> <mode> PASS: identical
    E2E-PROBE <check> <mode> FAIL: <the first difference>
    E2E-PROBE <check> <mode> KNOWN: <a difference README documents, and why>
    E2E-PROBE <check> <mode> SKIP: <why the unwatched run printed no line for it>
    E2E-PROBES passed=N failed=N known=N skipped=N
where <mode> is the image's name without "probe_" (real, protected, compat,
long_timer, smp...). Exit status 0 when nothing failed.

Each probe guest prints one line per check, "check: verdict", and ends with status
33. Its image starts with a header (guest_images/include/probe.inc) giving the
`vmm run` options it needs ("probe-args: ...") and the page to watch
("probe-watch: GPA+LEN"). A line of serial input selects one check by name ("list"
prints the names). Both runs of a guest run all its checks; a check whose line is
missing from either (the run timed out or failed before it), or whose lines differ,
is run again alone, unwatched and watched, but for the one the watched run ended in.

tests/test_probes.py uses read_header, check_lines and first_difference from here.
"""
import argparse
import os
import re
import sys
import tempfile

PROBES_DONE = 33            # the exit status of a probe guest that ran its checks
HEADER_BYTES = 256
LINE = re.compile(rb"^([a-z0-9-]+): (.*)$")


def read_header(image):
    """(the `vmm run` options, the watch range) from a probe image's bytes."""
    head = image[:HEADER_BYTES]

    def field(tag):
        start = head.find(tag)
        end = head.find(b"\0", start)
        if start < 0 or end < 0:
            raise ValueError(f"not a probe image: no {tag.decode()!r} header")
        return head[start + len(tag):end].decode("ascii")

    return field(b"probe-args: ").split(), field(b"probe-watch: ")


def check_lines(output):
    """The complete check lines of a run's serial output, in order, as text (a line the run
    ended in the middle of does not count)."""
    return [line.decode("ascii", "replace") for line in output.split(b"\n")[:-1] if LINE.match(line)]


def check_name(line):
    return line.split(":", 1)[0]


def unfinished_check(output):
    """The check a run ended in the middle of (its line begun, not ended), or None."""
    last = output.split(b"\n")[-1]
    return last.split(b":", 1)[0].decode("ascii", "replace") if b":" in last else None


# What README ("What the guest can and cannot tell") says single-stepping under VT-x and
# SVM shows: KVM's TF is in RFLAGS while a vCPU steps, so an exception or interrupt the CPU
# delivers pushes it (and the handler runs unstepped: the VMM cannot clear it first), as
# does pushf in a MOV SS shadow when the CPU takes no step trap after it.
FRAME_TF = ("tf set", "tf clear")
FRAME_TF_REASON = "KVM's single-step TF in a frame the CPU pushed (README: what the guest can tell)"
# The rdtsc checks compare against thresholds: in an emulated machine an unwatched cpuid
# exit may already be "slow"; watched code reads the VMM's virtual TSC.
SLOW_REASON = "the unwatched run is already slow in this machine; watched code reads the VMM's TSC"
# Without unrestricted guest (VT-x with ept=0) KVM runs real mode in vm86 and delivers the
# guest's own #DB by emulation, leaving DR6 as it was: unwatched, the handler reads BS or B0
# clear; watched, the stepper delivers the #DB with them set, as the CPU does.
VM86_DR6 = re.compile(r"(DR6\.(?:BS|B0)) 0$")
VM86_DR6_REASON = ("real mode in vm86 (VT-x without unrestricted guest): KVM's own delivery of the guest's #DB "
                   "leaves DR6 clear; the stepper sets it as the CPU does (README: what the guest can tell)")
UNRESTRICTED_GUEST = "/sys/module/kvm_intel/parameters/unrestricted_guest"


def real_mode_in_vm86(mode):
    """Whether this host's KVM runs the probes of `mode` (real, real_softint...) in vm86."""
    try:
        with open(UNRESTRICTED_GUEST) as parameter:
            return mode.startswith("real") and parameter.read().strip() == "N"
    except OSError:
        return False


def known_difference(plain_line, watched_line, vm86=False):
    """The reason a watched line differs from the unwatched one in a documented way, or None;
    vm86: the probes run in real mode in vm86 (real_mode_in_vm86)."""
    if watched_line.replace(*FRAME_TF) == plain_line and FRAME_TF[0] in watched_line:
        return FRAME_TF_REASON
    if vm86 and VM86_DR6.sub(r"\1 1", plain_line) == watched_line != plain_line:
        return VM86_DR6_REASON
    name = check_name(plain_line)
    if name.startswith("rdtsc") and plain_line == f"{name}: slow" and watched_line == f"{name}: normal":
        return SLOW_REASON
    return None


def first_difference(plain, watched):
    """None when the two runs (status, output) printed the same check lines and ended with
    the same status; else what differs first, in words."""
    plain_lines, watched_lines = check_lines(plain[1]), check_lines(watched[1])
    for number, (expected, actual) in enumerate(zip(plain_lines, watched_lines), 1):
        if expected != actual:
            return f"line {number} differs: unwatched {expected!r}, watched {actual!r}"
    if len(watched_lines) < len(plain_lines):
        return (f"the watched run ended (status {watched[0]}) before line {len(watched_lines) + 1}: "
                f"unwatched {plain_lines[len(watched_lines)]!r}")
    if len(watched_lines) > len(plain_lines):
        return f"the watched run printed more: {watched_lines[len(plain_lines)]!r}"
    if watched[0] != plain[0]:
        return f"the lines are identical, the exit status is not: unwatched {plain[0]}, watched {watched[0]}"
    return None


def run_probe(path, watch=None, backend=None, timeout=None, only=None):
    """(exit status, serial output, stderr) of one run of a probe image; `only` selects one check."""
    from vmmcheck import vmm
    args, watch_range = read_header(open(path, "rb").read())
    command = ["run", path, *args]
    if timeout is not None:
        command += ["--timeout", str(timeout)]
    if watch:
        command += ["--watch", watch_range, "--backend", backend]
    with tempfile.NamedTemporaryFile("wb", suffix=".in") as selection:
        if only is not None:
            selection.write(only.encode() + b"\n")
            selection.flush()
            command += ["--serial-input", selection.name]
        status, output, stderr = vmm(*command)
    return status, output, stderr


def last_words(run):
    """The last line a run wrote on stderr, or its status."""
    return (run[2].strip().splitlines()[-1:] or [f"status {run[0]}"])[0]


def compare_image(path, backend, timeout, vm86=False):
    """[(check, verdict, detail)] for every check of one probe image (the guest prints
    their names for "list")."""
    listing = run_probe(path, timeout=timeout, only="list")
    names = listing[1].decode("ascii", "replace").splitlines()
    if listing[0] != PROBES_DONE or not names:
        return [("-", "SKIP", f"the guest did not list its checks (status {listing[0]}): {last_words(listing)}")]
    plain = run_probe(path, timeout=timeout)
    watched = run_probe(path, watch=True, backend=backend, timeout=timeout)
    plain_lines = {check_name(line): line for line in check_lines(plain[1])}
    watched_lines = {check_name(line): line for line in check_lines(watched[1])}
    results = []
    stuck = unfinished_check(watched[1])
    for check in names:
        if check in plain_lines and check in watched_lines:
            result = line_verdict(check, plain_lines[check], watched_lines[check], vm86)
            if result[1] == "FAIL":
                # Timer checks race real time in an emulated machine: the check is run again
                # alone, and that run decides (the first difference stays in the detail).
                again = compare_alone(path, check, backend, timeout, vm86)
                result = (check, again[1], f"{again[2]}; in the run of all checks: {result[2]}")
            results.append(result)
        elif check in plain_lines and check == stuck:
            results.append((check, "FAIL", f"the watched run ended (status {watched[0]}) in this check: "
                                           f"unwatched {plain_lines[check]!r}"))
        else:
            results.append(compare_alone(path, check, backend, timeout, vm86))
    if plain[0] != watched[0] and all(verdict != "FAIL" for _, verdict, _ in results):
        results.append(("exit-status", "FAIL", f"unwatched {plain[0]}, watched {watched[0]}"))
    return results


def line_verdict(check, plain_line, watched_line, vm86=False):
    """(check, PASS|KNOWN|FAIL, detail) for one check's lines."""
    if plain_line == watched_line:
        return check, "PASS", "identical"
    difference = f"unwatched {plain_line!r}, watched {watched_line!r}"
    if "timer" in check and plain_line.startswith(f"{check}: 0 irq"):
        # The unwatched run is the reference: in an emulated machine its timer may not fire in time.
        return check, "SKIP", f"the unwatched run saw no timer interrupt: {difference}"
    reason = known_difference(plain_line, watched_line, vm86)
    return (check, "FAIL", difference) if reason is None else (check, "KNOWN", f"{reason}: {difference}")


def compare_alone(path, check, backend, timeout, vm86):
    """(check, verdict, detail) from running one check alone, unwatched and watched."""
    plain = run_probe(path, timeout=timeout, only=check)
    if not check_lines(plain[1]):
        return check, "SKIP", f"the unwatched run printed no line (status {plain[0]}): {last_words(plain)}"
    watched = run_probe(path, watch=True, backend=backend, timeout=timeout, only=check)
    plain_lines, watched_lines = check_lines(plain[1]), check_lines(watched[1])
    if plain[0] == watched[0] and len(plain_lines) == len(watched_lines) == 1:
        return line_verdict(check, plain_lines[0], watched_lines[0], vm86)
    difference = first_difference(plain, watched)
    return check, "FAIL" if difference else "PASS", difference or "identical"


def main(argv):
    parser = argparse.ArgumentParser(description="the probe suite, unwatched against watched")
    parser.add_argument("--backend", default="patched", choices=("patched", "stock"))
    parser.add_argument("--timeout", type=float, default=120, help="seconds per run")
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="probe image names (default: all)")
    args = parser.parse_args(argv)
    directory = os.path.join(os.environ.get("V2E_TOP", "/opt/v2e"), "guest_images")
    images = args.images or sorted(name[:-len(".bin")] for name in os.listdir(directory)
                                   if name.startswith("probe_") and name.endswith(".bin"))
    counts = {"PASS": 0, "FAIL": 0, "KNOWN": 0, "SKIP": 0}
    for image in images:
        mode = image[len("probe_"):]
        for check, verdict, detail in compare_image(os.path.join(directory, f"{image}.bin"), args.backend,
                                                    args.timeout, real_mode_in_vm86(mode)):
            counts[verdict] += 1
            print(f"E2E-PROBE {check} {mode} {verdict}: {detail}", flush=True)
    print(f"E2E-PROBES passed={counts['PASS']} failed={counts['FAIL']} known={counts['KNOWN']} "
          f"skipped={counts['SKIP']}", flush=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main(sys.argv[1:]))
