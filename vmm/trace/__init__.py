"""V2E trace files: JSON Lines, format 2 (docs/trace-format.md; the records are defined by
trace-v2.schema.json).

writer (the engine's recorder), reader (a trace as a stream of checked records: Header,
Event, Page, Insn with all its registers, Leave, Summary), schema (the validator the schema
file is compiled into), disasm (objdump, batched and cached), symbols (ELF symbol tables),
and the `vmm trace` commands: show, stats, diff (cli). Nothing is imported here, so that
`vmm run` pays only for what it uses.

    from vmm.trace.reader import TraceReader
    for record in TraceReader("run.jsonl"):
        ...
"""
