#!/usr/bin/env python3
"""pytrim.py: list the files of the modules a set of Python runs imports.

Run with the interpreter being trimmed (the one extracted from the Debian
packages). For each job it imports, in a fresh interpreter, every module of
the given packages and/or runs a script or module, then prints the file of
every module in sys.modules. The union is written to OUT, one path a line.

  python3.11 pytrim.py OUT [--pkgs DIR:PKG,...] [--run 'ARGS...']...
"""
import json
import os
import subprocess
import sys

PROBE = r"""
import atexit, json, os, sys
def _dump():
    files = set()
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None)
        if f:
            files.add(os.path.realpath(f))
    with open(os.environ["PYTRIM_OUT"], "a") as fh:
        fh.write(json.dumps(sorted(files)) + "\n")
atexit.register(_dump)
mode, rest = sys.argv[1], sys.argv[2:]
if mode == "pkgs":
    import importlib, pkgutil
    for spec in rest:
        path, pkg = spec.split(":")
        sys.path.insert(0, path)
        mod = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
            if info.name.endswith(".__main__"):
                continue
            try:
                importlib.import_module(info.name)
            except BaseException as e:
                print("pytrim: import %s: %s" % (info.name, e), file=sys.stderr)
elif mode == "run":
    import runpy
    sys.argv = rest
    try:
        if rest[0] == "-m":
            sys.argv = rest[1:]
            runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(rest[0], run_name="__main__")
    except SystemExit:
        pass
"""


def main():
    out = sys.argv[1]
    args = sys.argv[2:]
    tmp = out + ".raw"
    if os.path.exists(tmp):
        os.unlink(tmp)
    env = dict(os.environ, PYTRIM_OUT=tmp)
    jobs = []
    while args:
        opt, val = args[0], args[1]
        args = args[2:]
        if opt == "--pkgs":
            jobs.append(["pkgs"] + val.split(","))
        elif opt == "--run":
            jobs.append(["run"] + val.split())
    with open(out + ".log", "w") as log:
        for job in jobs:
            log.write("== %s\n" % " ".join(job))
            log.flush()
            subprocess.run([sys.executable, "-c", PROBE] + job, env=env,
                           stdout=log, stderr=log, timeout=120)
    files = set()
    for line in open(tmp):
        files.update(json.loads(line))
    with open(out, "w") as fh:
        fh.write("\n".join(sorted(files)) + "\n")


if __name__ == "__main__":
    main()
