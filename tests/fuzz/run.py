"""Run fuzz cases and print the outcome histogram:

    python -m tests.fuzz.run --count 10000 [--seed 1] [--timeout 0.25] [--no-watch]

Exit status 0 when every run ended in a classified outcome in time, 1 otherwise
(each failing case is printed with its bytes, to replay).
"""
import argparse
import collections
import sys
import time

from .harness import generate, is_failure, run_case


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="number of cases (default: 1000)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default: 1)")
    parser.add_argument("--timeout", type=float, default=0.25, help="seconds per run (default: 0.25)")
    parser.add_argument("--no-watch", action="store_true", help="never watch a page with V2E")
    args = parser.parse_args(argv)
    histogram = collections.Counter()
    failures = []
    slowest = 0.0
    started = time.monotonic()
    for case in generate(args.seed, args.count, watch=not args.no_watch):
        kind, elapsed, detail = run_case(case, args.timeout)
        histogram[kind, case.mode, case.watched] += 1
        slowest = max(slowest, elapsed)
        if is_failure(kind):
            failures.append((case, kind, detail))
            print(f"FAIL {kind}: {case!r}\n{detail}", file=sys.stderr)
    print(f"{args.count} cases, seed {args.seed}, timeout {args.timeout:g} s, "
          f"{time.monotonic() - started:.1f} s, slowest run {slowest:.2f} s")
    by_kind = collections.Counter()
    for (kind, _, _), count in histogram.items():
        by_kind[kind] += count
    width = max(len(kind) for kind in by_kind)
    for kind, count in by_kind.most_common():
        modes = ", ".join(f"{mode}{'+watch' if watched else ''} {n}"
                          for (k, mode, watched), n in sorted(histogram.items()) if k == kind)
        print(f"  {kind:<{width}}  {count:>6}  ({modes})")
    print(f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
