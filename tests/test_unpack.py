"""Generic unpacking: every page written then executed is one layer, dumped exactly, on
samples with several layers, several pages, a middle entry, a decoy, a self-modifying loop
and two vCPUs, in 16-, 32- and 64-bit code; and bad input."""
import json
import os

import pytest

from conftest import GUESTS
from test_cli import assert_one_line_error, vmm
from vmm.errors import EXIT_BAD_INPUT, EXIT_OUTPUT
from vmm.unpack import Unpacker

pytestmark = pytest.mark.kvm

PAGE = 4096


def run(image, *options, dump_dir=None, mode=None):
    """`vmm run` of a guest image, unwatched or with --unpack --dump-dir."""
    args = [str(GUESTS / image)] + (["--mode", mode] if mode else []) + list(options)
    if dump_dir is not None:
        args += ["--unpack", "--dump-dir", str(dump_dir)] if "--unpack" not in options else ["--dump-dir", str(dump_dir)]
    return vmm("run", *args, "--timeout", "30")


def layers(dump_dir):
    """The layer records, in order."""
    records = [json.loads((dump_dir / name).read_text()) for name in os.listdir(dump_dir) if name.endswith(".json")]
    return sorted(records, key=lambda record: record["layer"])


def dumped(dump_dir, record):
    return (dump_dir / record["region"]["file"]).read_bytes()


def padded(data, size):
    assert len(data) <= size, f"the plain layer has {len(data)} bytes, more than the region's {size}"
    return data + bytes(size - len(data))


@pytest.mark.parametrize("mode, pages", [("real", (0x3000, 0x5000)), ("protected", (0x200000, 0x300000)),
                                         ("long", (0x200000, 0x300000))])
def test_three_layers_each_dumped_as_the_build_decrypted_it(built_guests, tmp_path, mode, pages):
    name = f"unpack_three_{mode}"
    plain = run(f"{name}.bin", mode=mode)
    unpacked = run(f"{name}.bin", mode=mode, dump_dir=tmp_path)
    assert (unpacked.returncode, unpacked.stdout) == (plain.returncode, plain.stdout) == (65, (
        b"loader: unpacking layer 2\nlayer 2: unpacking layer 3\nlayer 3: unpacked\n")), unpacked.stderr
    records = layers(tmp_path)
    assert [(r["layer"], r["entry"]["gpa"], r["region"]["gpa"], r["region"]["size"]) for r in records] == [
        (1, hex(pages[0]), hex(pages[0]), PAGE), (2, hex(pages[1]), hex(pages[1]), PAGE)], records
    for record, layer in zip(records, ("layer2.bin", "layer3.bin")):
        expected = padded((built_guests / ".obj" / name / layer).read_bytes(), PAGE)
        assert dumped(tmp_path, record) == expected, f"layer {record['layer']}: the dump differs from {layer}"
        assert record["mode"] == mode and record["regs"]["rip"] == record["entry"]["rip"], record
    assert records[1]["pages_written"] == [hex(pages[1])], records[1]
    assert "2 layer(s) (stock backend)" in unpacked.stderr.decode(), unpacked.stderr


def test_a_payload_of_several_pages_is_one_layer(built_guests, tmp_path):
    plain = run("unpack_multipage.bin")
    unpacked = run("unpack_multipage.bin", dump_dir=tmp_path)
    assert (unpacked.returncode, unpacked.stdout) == (plain.returncode, plain.stdout), unpacked.stderr
    record, = layers(tmp_path)
    assert (record["entry"]["gpa"], record["region"]["gpa"], record["region"]["size"]) == ("0x400000", "0x400000", 3 * PAGE)
    expected = padded((built_guests / ".obj" / "unpack_multipage" / "payload.bin").read_bytes(), 3 * PAGE)
    assert dumped(tmp_path, record) == expected


def test_a_layer_entered_in_the_middle_of_its_page(built_guests, tmp_path):
    unpacked = run("unpack_midentry.bin", dump_dir=tmp_path)
    assert unpacked.returncode == 35, unpacked.stderr
    record, = layers(tmp_path)
    assert (record["entry"]["gpa"], record["entry"]["rip"], record["region"]["gpa"]) == ("0x200800", "0x200800", "0x200000")
    assert dumped(tmp_path, record) == padded((built_guests / ".obj" / "unpack_midentry" / "payload.bin").read_bytes(), PAGE)


def test_data_that_is_written_and_never_run_is_no_layer(tmp_path):
    plain = run("unpack_decoy.bin")
    unpacked = run("unpack_decoy.bin", dump_dir=tmp_path)
    assert (unpacked.returncode, unpacked.stdout) == (plain.returncode, plain.stdout), unpacked.stderr
    assert layers(tmp_path) == [] and os.listdir(tmp_path) == []


@pytest.mark.parametrize("max_layers, expected", [(None, 64), (200, 101), (5, 5)])
def test_a_self_modifying_loop_is_a_layer_per_turn_until_the_budget(tmp_path, max_layers, expected):
    options = [] if max_layers is None else ["--max-layers", str(max_layers)]
    plain = run("unpack_selfmod.bin")
    unpacked = run("unpack_selfmod.bin", *options, dump_dir=tmp_path)
    assert (unpacked.returncode, unpacked.stdout) == (plain.returncode, plain.stdout) == (173, b"loader: decrypting the payload\n")
    records = layers(tmp_path)
    assert len(records) == expected, f"expected {expected} layers, got {len(records)}"
    # the copy, then each rewrite of the immediate: the loop instruction after it
    assert [r["entry"]["gpa"] for r in records] == ["0x200000"] + ["0x200015"] * (expected - 1), records[:3]
    ended = f"{expected} layers: the unpacking analysis ends here, the guest runs on"
    assert (ended in unpacked.stderr.decode()) == (expected != 101), unpacked.stderr


def test_one_vcpu_writes_and_another_runs_the_layer(tmp_path):
    plain = vmm("run", str(GUESTS / "unpack_smp.elf"), "--smp", "2", "--timeout", "30")
    unpacked = vmm("run", str(GUESTS / "unpack_smp.elf"), "--smp", "2", "--unpack", "0x300000+0x1000",
                   "--dump-dir", str(tmp_path), "--timeout", "30")
    assert (unpacked.returncode, unpacked.stdout) == (plain.returncode, plain.stdout) == (33, plain.stdout), unpacked.stderr
    record, = layers(tmp_path)
    assert (record["vcpu"], record["entry"]["gpa"], record["last_writer_rip"] is not None) == (1, "0x300000", True), record


def test_identical_contents_are_dumped_once(machine, tmp_path):
    """The same code written into the same page twice: two layers, one data file."""
    vm = machine(mem_size=16 << 20)
    # 0x100000: mov $2, %ebx; 1: movl $0x90c3c3c3... -> write "ret" into 0x200000; call it; dec; jnz; hlt
    code = bytes.fromhex("bb02000000" "c7042500002000c3000000" "b800002000" "ffd0" "ffcb" "75ea" "f4")
    vm.load(code, mode="long")
    with Unpacker(vm, str(tmp_path), backend="stock") as unpacker:
        outcome = vm.run(timeout=20)
    assert outcome.kind == "halt" and unpacker.layers == 2, (outcome, unpacker.summary())
    records = layers(tmp_path)
    assert [r["region"]["file"] for r in records] == ["layer-1-0x200000.bin"] * 2
    assert sorted(os.listdir(tmp_path)) == ["layer-1-0x200000.bin", "layer-1-0x200000.json", "layer-2-0x200000.json"]


@pytest.mark.parametrize("ranges, text", [
    (["0x200000+0x2000", "0x201000+0x1000"], "overlap"),
    (["0x200800+0x1000"], "not page aligned"),
    (["0x7ffff000+0x2000"], "outside guest memory"),
    (["0x2000+0x1000"], "overlaps the VMM's GDT and page tables"),
])
def test_bad_ranges_are_one_line_and_status_2(tmp_path, ranges, text):
    result = vmm("run", str(GUESTS / "unpack_three_long.bin"), "--unpack", *ranges, "--dump-dir", str(tmp_path))
    assert_one_line_error(result, EXIT_BAD_INPUT, text)


def test_an_unwritable_dump_directory_is_one_line_and_status_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = vmm("run", str(GUESTS / "unpack_three_long.bin"), "--unpack", "--dump-dir", str(blocker / "dumps"))
    assert_one_line_error(result, EXIT_BAD_INPUT, "cannot create the dump directory")
    assert_one_line_error(vmm("run", str(GUESTS / "unpack_three_long.bin"), "--unpack"), EXIT_BAD_INPUT,
                          "--unpack needs --dump-dir")


def test_a_full_disk_leaves_complete_dumps_or_none(tmp_path):
    """A dump directory on a filesystem with room for the first layer only: the run ends with
    one line and status 12, the first layer's files are whole and no partial file is left."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.system(f"mount -t tmpfs -o size=12k tmpfs {mount} 2>/dev/null") != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        result = vmm("run", str(GUESTS / "unpack_selfmod.bin"), "--unpack", "--dump-dir", str(mount))
        assert result.returncode == EXIT_OUTPUT, result.stderr
        assert b"cannot write the dump" in result.stderr and b"No space left on device" in result.stderr, result.stderr
        names = os.listdir(mount)
        assert names and not any(name.startswith(".partial-") for name in names), names
        for name in names:
            if name.endswith(".json"):
                json.loads((mount / name).read_text())     # complete
    finally:
        os.system(f"umount {mount}")


def test_each_layer_is_traced_from_its_entry_with_trace_layers(tmp_path):
    """--trace-layers: each layer is a V2E event from its entry, its instructions all inside
    its region, and the trace holds a record of each layer."""
    from vmm.trace.reader import read_trace
    path = tmp_path / "layers.jsonl"
    result = run("unpack_three_long.bin", "--trace", str(path), "--trace-layers", dump_dir=tmp_path / "dumps")
    assert result.returncode == 65, result.stderr
    records = read_trace(path)
    layer_records = [r for r in records if r["type"] == "layer"]
    events = [r for r in records if r["type"] == "event"]
    assert [(r["layer"], r["entry"]["rip"]) for r in layer_records] == [(1, "0x200000"), (2, "0x300000")]
    assert [(e["event"], e["rip"]) for e in events] == [(1, "0x200000"), (2, "0x300000")], events
    for event, page in ((1, 0x200000), (2, 0x300000)):
        rips = {int(r["rip"], 16) for r in records if r["type"] == "insn" and r["event"] == event}
        assert rips and all(page <= rip < page + PAGE for rip in rips), (event, sorted(map(hex, rips))[:5])
    leaves = [(r["event"], r["reason"], r["rip"]) for r in records if r["type"] == "leave"]
    assert leaves[0] == (1, "branch-out", "0x300000"), leaves
    assert_one_line_error(run("unpack_three_long.bin", "--trace-layers", dump_dir=tmp_path / "d2"), EXIT_BAD_INPUT,
                          "--trace-layers needs --trace")
