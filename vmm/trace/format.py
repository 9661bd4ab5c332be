"""Trace format 2 (docs/trace-format.md): the schema file that defines its records, the format's
name and version as the schema states them, and small helpers the writer and readers share. The schema is read
when first needed, not when this is imported."""
import functools
import json
import pathlib

from .schema import Schema

SCHEMA_PATH = pathlib.Path(__file__).with_name("trace-v2.schema.json")
SYNTAXES = ("att", "intel")    # disassembly: objdump's AT&T (its default) and -M intel


@functools.cache
def schema_document():
    with open(SCHEMA_PATH, encoding="utf-8") as source:
        return json.load(source)


@functools.cache
def schema():
    return Schema(schema_document())


def header_constant(field):
    """What the schema fixes a header field to: "format" ("v2e-vmm trace"), "version" (2)."""
    return schema_document()["$defs"]["header"]["properties"][field]["const"]


def hex_or_none(value):
    return None if value is None else f"{value:#x}"


def plural(count, noun):
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
