"""The JSON Schema validator the trace schema compiles into, and the schema's agreement with the
facts it restates (the register names)."""
import copy
import json
import re

import pytest

from conftest import ROOT
from vmm.trace.format import FORMAT, SCHEMA_PATH, VERSION, schema_document
from vmm.trace.schema import Schema
from vmm.x86.registers import CONTROL_REGISTERS, GENERAL_REGISTERS, SEGMENT_FIELDS, SEGMENT_REGISTERS, SYSTEM_SEGMENTS


def check(schema, value):
    problem = Schema(schema).validator()(value)
    return None if problem is None else str(problem)


@pytest.mark.parametrize("schema, value, expected", [
    ({"type": "integer"}, 3, None),
    ({"type": "integer"}, True, "expected an integer, got a boolean true"),
    ({"type": "integer"}, 3.0, "expected an integer, got a number 3.0"),
    ({"type": "integer", "minimum": 1}, 0, "0 is below the minimum 1"),
    ({"type": ["integer", "null"], "maximum": 255}, None, None),
    ({"type": ["integer", "null"], "maximum": 255}, 256, "256 is above the maximum 255"),
    ({"type": "string", "pattern": "^0x[0-9a-f]+$"}, "0x1g", '"0x1g" does not match ^0x[0-9a-f]+$'),
    ({"type": "string", "pattern": "^a$", "description": "the letter a"}, "b", 'expected the letter a, got "b"'),
    ({"type": "string", "maxLength": 2}, "abc", "3 characters, at most 2 allowed"),
    ({"type": "string", "minLength": 1}, "", "0 characters, at least 1 needed"),
    ({"const": 2}, 2, None),
    ({"const": 1}, True, "expected 1, got true"),
    ({"enum": ["a", "b"]}, "c", 'expected one of "a", "b", got "c"'),
    ({"enum": ["a", "b"]}, ["a"], 'expected one of "a", "b", got ["a"]'),
    ({"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "integer"}}, ["x", 1, "y"],
     "[2]: expected an integer, got a string \"y\""),
    ({"type": "array", "minItems": 2, "maxItems": 2}, [1], "1 items, at least 2 needed"),
    ({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "integer"}}}}},
     {"a": {"b": "x"}}, 'a.b: expected an integer, got a string "x"'),
    ({"type": "object", "required": ["a"]}, {}, 'missing "a"'),
    ({"type": "object", "properties": {"a": True}, "additionalProperties": False}, {"a": 1, "b": 2},
     'unknown field "b"'),
    ({"type": "object", "additionalProperties": {"type": "integer"}}, {"a": "x"},
     'a: expected an integer, got a string "x"'),
    ({"anyOf": [{"type": "null"}, {"type": "string", "description": "a name"}]}, 3,
     "expected null or a name, got 3"),
    ({"if": {"properties": {"k": {"const": 1}}}, "then": {"required": ["v"]}}, {"k": 1}, 'missing "v"'),
    ({"if": {"properties": {"k": {"const": 1}}}, "then": {"required": ["v"]}}, {"k": 2}, None),
    ({"$defs": {"n": {"type": "integer"}}, "type": "array", "items": {"$ref": "#/$defs/n"}}, [1, "2"],
     '[1]: expected an integer, got a string "2"'),
])
def test_keywords(schema, value, expected):
    assert check(schema, value) == expected


DISPATCH = {"type": "object", "allOf": [
    {"if": {"properties": {"kind": {"const": "a"}}}, "then": {"required": ["x"]}},
    {"if": {"properties": {"kind": {"const": "b"}}}, "then": {"required": ["y"]}}]}


@pytest.mark.parametrize("value", [{"kind": "a"}, {"kind": "a", "x": 1}, {"kind": "b"}, {"kind": "b", "y": 1},
                                   {"kind": "c"}, {"kind": ["a"]}, {"kind": 1}, {}, [], "a"])
def test_the_dispatch_table_decides_as_the_branches_do(value):
    """allOf of if/then on one property's constant is compiled to a table: the same verdicts
    as each branch's if/then on its own (a schema the table shortcut does not apply to)."""
    one_by_one = {"allOf": [{"allOf": [branch]} for branch in DISPATCH["allOf"]], "type": "object"}
    assert (check(DISPATCH, value) is None) == (check(one_by_one, value) is None), value


def test_unknown_keywords_are_refused():
    with pytest.raises(ValueError, match="not supported"):
        Schema({"type": "string", "format": "date-time"}).validator()


def test_the_schema_file_is_compiled_whole():
    document = schema_document()
    compiled = Schema(document)
    for name in document["$defs"]:
        compiled.validator(f"#/$defs/{name}")
    assert json.loads(SCHEMA_PATH.read_text()) == document


def test_the_schema_names_the_registers_the_vmm_has():
    defs = schema_document()["$defs"]
    assert list(defs["registers"]["properties"]) == list(GENERAL_REGISTERS)
    assert defs["all_registers"]["required"] == list(GENERAL_REGISTERS)
    assert defs["segment"]["required"] == list(SEGMENT_FIELDS)
    special = defs["special_registers"]["required"]
    assert special == list(SEGMENT_REGISTERS + SYSTEM_SEGMENTS) + ["gdt", "idt"] + list(CONTROL_REGISTERS)


def test_a_changed_schema_changes_what_is_valid():
    """The validator reads the schema and nothing else: loosen the hex pattern, and a record
    that was refused passes."""
    record = {"type": "insn", "event": 1, "step": 1, "rip": "0X1F", "bytes": "90"}
    document = copy.deepcopy(schema_document())
    assert Schema(document).validator()(record) is not None
    document["$defs"]["hex64"]["pattern"] = "^0[xX][0-9a-fA-F]{1,16}$"
    assert Schema(document).validator()(record) is None


def test_the_writer_writes_the_format_and_version_the_schema_fixes():
    header = schema_document()["$defs"]["header"]["properties"]
    assert (header["format"]["const"], header["version"]["const"]) == (FORMAT, VERSION)


def test_the_schema_takes_every_leave_reason_the_format_documents():
    """A reason the engine writes and docs/trace-format.md names, but the schema lacks, makes
    the trace unreadable (`untraced` once did)."""
    row = next(line for line in (ROOT / "docs" / "trace-format.md").read_text().splitlines()
               if line.startswith("| `reason` |"))
    documented = re.findall(r"(?:\| |, )`([a-z-]+)`", row)[1:]   # the first is the field's own name
    reasons = schema_document()["$defs"]["leave"]["properties"]["reason"]["enum"]
    assert documented == reasons
