"""Trace format 2 (docs/trace-format.md): the schema file that defines its records (read when
first needed, not when this is imported), the format's name and version, and small helpers the
writer and readers share."""
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


# What the header's format and version fields hold (the schema fixes them to these, a test
# checks). Here as well, so that writing a trace needs no data file beside the code.
FORMAT = "v2e-vmm trace"
VERSION = 2


def hex_or_none(value):
    return None if value is None else f"{value:#x}"


def plural(count, noun):
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# `vmm trace diff --ignore mem`: the bytes of memory operands are left out (shared data that
# other vCPUs write), their addresses and sizes still compared.
IGNORE_MEMORY_BYTES = "mem"
