"""`vmm trace show|stats|diff` on traces of real runs, as real processes: disassembly in every
CPU mode and both syntaxes, symbols, filters, JSON, statistics, divergences, bad input."""
import json
import shutil
import subprocess
import sys

import pytest

from conftest import GUESTS, ROOT
from vmm.machine import Machine
from vmm.trace.format import schema
from vmm.trace.reader import Insn, TraceReader
from vmm.v2e import V2E

pytestmark = pytest.mark.kvm

PAYLOAD_INSTRUCTIONS = 264
MESSAGE_LENGTH = 16        # "payload running\n": one out (and one in) per character
LOOP_COUNT = 16            # the checksum loop: add, rol, dec, jnz


def vmm(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "vmm", *map(str, args)], cwd=ROOT, capture_output=True,
                          timeout=timeout, env=env)


def steps(result):
    """The instruction lines of `trace show`, each split into words."""
    return [line.split() for line in result.stdout.decode().splitlines() if line.startswith("  #")]


def mnemonic(words):
    """The mnemonic in an instruction line's words: the first after the address and bytes."""
    return next(word for word in words[2:] if not (len(word) == 2 and all(c in "0123456789abcdef" for c in word)))


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    """Traces of the packed samples and of the ELF guest, made once."""
    directory = tmp_path_factory.mktemp("traces")
    runs = {
        "long": ["packed_long.bin", "--watch", "0x200000"],
        "twice": ["packed_twice.bin", "--watch", "0x200000"],
        "real": ["packed_real.bin", "--mode", "real", "--watch", "0x9000"],
        "protected": ["packed_protected.bin", "--mode", "protected", "--watch", "0x200000"],
        "elf": ["hello_elf64.elf", "--watch-symbol", "puts"],
        "wide": ["packed_long.bin", "--watch", "0x100000", "--watch", "0x200000"],
    }
    made = {}
    for name, (image, *options) in runs.items():
        made[name] = directory / f"{name}.jsonl"
        result = vmm("run", GUESTS / image, *options, "--trace", made[name])
        assert made[name].exists(), result.stderr
    return made


def test_show_disassembles_each_instruction_in_att_syntax(traces):
    result = vmm("trace", "show", traces["long"], "--max-instructions", "4")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].startswith(f"trace {traces['long']}: format version 2 from vmm ")
    assert lines[1] == ("event 1: vCPU 0 executes watched page 0x200000 at rip 0x200000 (gpa 0x200000, gva "
                        "0x200000; long mode, 64-bit code, CPL 0, cr3 0x2000, stock backend) -> trace")
    assert "    00200030  25 00 00 18 00 c3 70 61 79 6c 6f 61 64 20 72 75  |%.....payload ru|" in lines
    assert steps(result) == [
        ["#1", "0x200000", "be", "36", "00", "20", "00", "mov", "$0x200036,%esi", "rsi=0x200036"],
        ["#2", "0x200005", "ac", "lods", "%ds:(%rsi),%al", "rax=0x200070", "rsi=0x200037", "[0x200036:1]=0x70"],
        ["#3", "0x200006", "84", "c0", "test", "%al,%al", "rflags=0x2"],
        ["#4", "0x200008", "74", "14", "je", "0x20001e"]]
    assert lines[-3] == "  ..."
    assert lines[-2] == "  leave: branch-out at rip 0x10006e after 264 traced of 264 stepped instructions"
    assert lines[-1].startswith("summary: 1 event, 264 instructions traced, stock backend, watched "
                                "0x200000-0x201000; run ended: test-exit (exit status 193)")


@pytest.mark.parametrize("name, syntax, first, branch", [
    ("long", "intel", ["mov", "esi,0x200036"], ["je", "0x20001e"]),
    ("real", "att", ["mov", "$0x9033,%si"], ["je", "0x901a"]),
    ("real", "intel", ["mov", "si,0x9033"], ["je", "0x901a"]),
    ("protected", "att", ["mov", "$0x200033,%esi"], ["je", "0x20001e"]),
])
def test_show_follows_the_cpu_mode_and_the_syntax(traces, name, syntax, first, branch):
    result = vmm("trace", "show", traces[name], "--max-instructions", "4", "--syntax", syntax)
    assert result.returncode == 0, result.stderr
    words = steps(result)
    assert words[0][-len(first) - 1:-1] == first, words[0]
    assert words[3][-len(branch):] == branch, words[3]


def test_show_names_addresses_by_the_images_symbols(traces):
    result = vmm("trace", "show", traces["elf"], "--max-instructions", "7", "--no-pages")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert "<_start>" in lines[1]
    assert [line for line in lines if line.startswith("  <")] == ["  <_start>:", "  <main64>:", "  <puts>:"]
    words = steps(result)
    assert words[1][-4:] == ["0x2010e0", "<main64>", "rsp=0x207078", "[0x207078:8]=0x20100c"], words[1]
    assert words[6][-3:] == ["je", "0x201045", "<puts+0x35>"], words[6]


def test_symbols_from_a_file_or_none_for_a_changed_image(traces, tmp_path):
    image = tmp_path / "guest.elf"
    shutil.copy(GUESTS / "hello_elf64.elf", image)
    trace = tmp_path / "guest.jsonl"
    vmm("run", image, "--watch-symbol", "puts", "--trace", trace)
    image.write_bytes(b"changed")
    result = vmm("trace", "show", trace, "--max-instructions", "2", "--no-pages")
    assert result.returncode == 0 and "<" not in result.stdout.decode().split("\n", 2)[2], result.stdout
    assert result.stderr.decode() == f"vmm: warning: {image} is no longer the traced image (its sha256 differs): " \
                                     "no symbols from it\n"
    result = vmm("trace", "show", trace, "--max-instructions", "2", "--symbols", GUESTS / "hello_elf64.elf")
    assert steps(result)[1][-4:-2] == ["0x2010e0", "<main64>"], steps(result)
    result = vmm("trace", "show", trace, "--symbols", GUESTS / "packed_long.bin")
    assert result.returncode == 2 and result.stderr.decode().startswith("vmm: ") and "not an ELF file" in \
        result.stderr.decode(), result.stderr


def test_filters_select_events_addresses_and_mnemonics(traces):
    result = vmm("trace", "show", traces["twice"], "--event", "2", "--rip", "0x200000-0x200008", "--no-pages")
    lines = result.stdout.decode().splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("event")] == ["event 2"]
    assert [words[1] for words in steps(result)] == ["0x200000", "0x200005", "0x200006"] + \
        ["0x200005", "0x200006"] * MESSAGE_LENGTH
    result = vmm("trace", "show", traces["long"], "--mnemonic", "out", "--mnemonic", "rol")
    assert [mnemonic(words) for words in steps(result)] == ["out"] * MESSAGE_LENGTH + ["rol"] * LOOP_COUNT
    result = vmm("trace", "show", traces["long"], "--mnemonic", "mov", "--max-instructions", "2")
    assert [mnemonic(words) for words in steps(result)] == ["mov", "mov"], steps(result)


def test_json_reemits_the_selected_records_self_contained(traces):
    result = vmm("trace", "show", traces["long"], "--json", "--rip", "0x200020+0x10")
    assert result.returncode == 0, result.stderr
    check = schema().validator("#/$defs/shown_record")
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    for record in records:
        assert check(record) is None, (check(record), record)
    assert [record["type"] for record in records][:3] == ["header", "event", "page"]
    insns = [record for record in records if record["type"] == "insn"]
    assert [record["asm"].split()[0] for record in insns] == ["mov"] + ["add", "rol", "dec", "jne"] * LOOP_COUNT + [
        "mov"], [record["asm"] for record in insns]
    full = {record["step"]: record["regs"] for record in insns}
    by_reader = {record.step: record.regs for record in TraceReader(traces["long"]) if isinstance(record, Insn)}
    for step, regs in full.items():
        assert [int(value, 16) for value in regs.values()] == list(by_reader[step]), step


def test_the_traced_states_are_the_engines(tmp_path):
    """Every step's full registers, rebuilt from the trace, are those the engine reported."""
    path = tmp_path / "t.jsonl"
    seen = []
    with Machine(mem_size=4 << 20) as machine:
        machine.load((GUESTS / "packed_long.bin").read_bytes(), mode="long")
        with V2E(machine, [(0x200000, 0x201000)], backend="stock", trace_path=path,
                 on_instruction=lambda step: seen.append((step.index, step.rip, step.code, step.values))) as engine:
            engine.finish(machine.run(timeout=20))
    read = [(r.step, r.rip, r.code, r.regs) for r in TraceReader(path) if isinstance(r, Insn)]
    assert len(read) == PAYLOAD_INSTRUCTIONS and read == seen


def test_stats_counts_events_code_blocks_and_mnemonics(traces):
    result = vmm("trace", "stats", traces["twice"])
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    lines = text.splitlines()
    assert lines[1:4] == [
        "events:",
        "  event 1: vCPU 0, entered 0x200000 (64-bit), trace: 264 instructions of 264 steps, branch-out to 0x10006e",
        "  event 2: vCPU 0, entered 0x200000 (64-bit), trace: 264 instructions of 264 steps, branch-out to 0x10006e"]
    assert "totals: 2 events, 528 instructions traced" in lines
    assert "page contents stored: 1 distinct page (4 KiB) for 2 page references by the events" in lines
    code = next(line for line in lines if line.startswith("code: "))
    # the payload's 21 instructions, 0x200000-0x200036, all run
    assert code == ("code: 21 distinct instructions (54 bytes) in 1 page: 0x200000 "
                    "(watched at the end: 1 page, 4 KiB)"), code
    blocks = lines[lines.index(next(line for line in lines if line.startswith("hottest"))) + 1:]
    # The checksum loop's taken jnz back: its first turn runs on from the xor before it, its last
    # on to the ret, the other 14 are the 4-instruction block, in each of the 2 events.
    assert any(line.split()[:3] == [str(2 * (LOOP_COUNT - 2)), "x", "4"] and line.endswith("0x200025 .. 0x20002c")
               for line in blocks), blocks
    histogram = {line.split()[0]: int(line.split()[1]) for line in lines[lines.index(
        next(line for line in lines if line.startswith("mnemonics"))) + 1:]}
    assert (histogram["out"], histogram["rol"], histogram["ret"]) == (2 * MESSAGE_LENGTH, 2 * LOOP_COUNT, 2)
    assert sum(histogram.values()) == 528


def test_diff_of_the_same_guest_at_other_granularities_finds_no_divergence(traces):
    result = vmm("trace", "diff", traces["long"], traces["wide"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.decode().splitlines()[-1] == (
        f"no divergence: {PAYLOAD_INSTRUCTIONS} instructions compared, all those both traces hold in "
        "0x200000-0x201000")


def test_diff_shows_the_first_divergence_with_both_sides(traces, tmp_path):
    changed = tmp_path / "changed.jsonl"
    lines = traces["long"].read_text().splitlines(keepends=True)
    at = next(index for index, line in enumerate(lines) if '"step":100,' in line)
    record = json.loads(lines[at])
    record["regs"] = {**record.get("regs", {}), "r9": "0x99"}
    lines[at] = json.dumps(record, separators=(",", ":")) + "\n"
    changed.write_text("".join(lines))
    result = vmm("trace", "diff", traces["wide"], changed, "--context", "2")
    assert result.returncode == 1, result.stderr
    text = result.stdout.decode().splitlines()
    assert text[2] == "the traces diverge at vCPU 0's instruction 100 of those both hold in 0x200000-0x201000:"
    # A watched the loader's page too: the payload runs inside the event that entered there.
    assert text[3].startswith("  A: event 1 (vCPU 0, entered at 0x100000), step "), text[3]
    assert text[4].startswith("  B: event 1 (vCPU 0, entered at 0x200000), step 100, line ")
    assert text[5] == "before it, the same in both (A's steps):" and text[8] == "A:", text
    assert text[-1] == "differs: r9 (A 0x0, B 0x99)"
    assert vmm("trace", "diff", traces["wide"], changed, "--ignore", "r9").returncode == 0


def test_diff_of_traces_sharing_no_range_is_bad_input(traces):
    result = vmm("trace", "diff", traces["long"], traces["real"])
    assert (result.returncode, result.stderr.decode()) == (
        2, f"vmm: {traces['long']} and {traces['real']} watch no common range: nothing to compare\n")


@pytest.mark.malformed_traces
def test_a_trace_cut_short_is_shown_then_reported(traces, tmp_path):
    cut = tmp_path / "cut.jsonl"
    data = traces["long"].read_bytes()
    cut.write_bytes(data[:data.index(b'"step":10,') + 5])
    for command in ("show", "stats"):
        result = vmm("trace", command, cut)
        assert result.returncode == 2, result.stderr
        assert result.stderr.decode().splitlines() == [
            f"vmm: {cut}:13: the last line is cut short (the run was killed while writing it?)"]
    assert [words[0] for words in steps(vmm("trace", "show", cut))] == [f"#{n}" for n in range(1, 10)]


def test_an_event_that_lost_its_step_reads_back(traces, tmp_path):
    """A leave record the stepper writes when no step was reported (`untraced`) is shown like
    any other, with its detail."""
    lines = traces["long"].read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if json.loads(line)["type"] == "leave")
    leave = json.loads(lines[index])
    leave.update(reason="untraced", detail="no step was reported after rip 0x200010")
    lines[index] = json.dumps(leave)
    changed = tmp_path / "untraced.jsonl"
    changed.write_text("\n".join(lines) + "\n")
    result = vmm("trace", "show", changed)
    assert result.returncode == 0, result.stderr
    shown = [line for line in result.stdout.decode().splitlines() if line.startswith("  leave:")]
    assert shown == [f"  leave: untraced (no step was reported after rip 0x200010) at rip {leave['rip']} after "
                     f"{leave['instructions']} traced of {leave['steps']} stepped instructions"], shown


@pytest.mark.malformed_traces
def test_a_version_1_trace_is_refused_in_one_line(tmp_path):
    old = tmp_path / "v1.jsonl"
    old.write_text('{"type":"event","event":1,"vcpu":0}\n{"type":"summary","version":1}\n')
    result = vmm("trace", "show", old)
    assert (result.returncode, result.stdout) == (2, b"")
    assert result.stderr.decode() == (f"vmm: {old}:1: a trace in format version 1 (no header record), which this "
                                      "vmm no longer reads; it reads version 2: record the run again with "
                                      "`vmm run --trace`\n")


def test_without_objdump_the_trace_is_shown_undisassembled(traces):
    import os
    result = vmm("trace", "show", traces["long"], "--max-instructions", "1",
                 env={**os.environ, "OBJDUMP": "/nonexistent/objdump"})
    assert result.returncode == 0
    assert steps(result)[0] == ["#1", "0x200000", "be", "36", "00", "20", "00", "rsi=0x200036"]
    assert result.stderr.decode() == "vmm: warning: /nonexistent/objdump (GNU binutils) not found: no disassembly\n"


def test_version():
    result = vmm("--version")
    assert result.returncode == 0 and result.stdout.decode().startswith("vmm 0."), result
    from importlib import metadata
    assert result.stdout.decode() == f"vmm {metadata.version('v2e-vmm')}\n"


@pytest.fixture(scope="module")
def smp_traces(tmp_path_factory):
    """Two runs of the SMP guest on four vCPUs calling the watched code at once."""
    directory = tmp_path_factory.mktemp("smp")
    made = [directory / "a.jsonl", directory / "b.jsonl"]
    for path in made:
        vmm("run", GUESTS / "smp.elf", "--smp", "4", "--watch", "0x101000", "--trace", path, "--timeout", "60")
    return made


SMP_EVENTS, SMP_STEPS = 4 * 25, 9       # 25 calls per CPU of mov, dec/jnz three times, lock incl, ret


def test_show_marks_whose_instructions_follow_when_events_interleave(smp_traces):
    result = vmm("trace", "show", smp_traces[0], "--no-pages")
    assert result.returncode == 0, result.stderr
    steps, current = {}, None
    for line in result.stdout.decode().splitlines():
        if line.startswith("event "):
            current = int(line.split()[1].rstrip(":"))
        elif line.startswith("  (event "):
            current = int(line.split()[1].rstrip(","))
        elif line.startswith("  #"):
            steps.setdefault(current, []).append(int(line.split()[0][1:]))
    assert len(steps) == SMP_EVENTS and all(s == list(range(1, SMP_STEPS + 1)) for s in steps.values()), steps


def test_diff_compares_each_vcpus_instructions_however_they_interleave(smp_traces):
    """The lock incl's flags and the counter it leaves depend on the order of the calls: left
    out, the two runs agree."""
    result = vmm("trace", "diff", *smp_traces, "--ignore", "rflags", "--ignore", "mem")
    assert result.returncode == 0, result.stdout.decode()
    assert result.stdout.decode().splitlines()[-1] == (
        f"no divergence: {SMP_EVENTS * SMP_STEPS} instructions compared, all those both traces hold in "
        "0x101000-0x102000")
