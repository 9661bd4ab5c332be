"""A few hundred seeded fuzz cases (VMM_FUZZ_CASES to change how many; the
`python -m tests.fuzz.run` script runs many more and prints the histogram)."""
import collections
import os

import pytest

from .harness import generate, is_failure, run_case

pytestmark = pytest.mark.kvm

CASES = int(os.environ.get("VMM_FUZZ_CASES", "300"))
SEED = 20121
TIMEOUT = 0.2


def test_random_guests_end_in_classified_outcomes_in_time():
    histogram = collections.Counter()
    failures = []
    for case in generate(SEED, CASES):
        kind, elapsed, detail = run_case(case, TIMEOUT)
        histogram[kind] += 1
        if is_failure(kind):
            failures.append(f"{kind} after {elapsed:.2f} s: {case!r}\n{detail}")
    assert not failures, (f"expected every one of {CASES} runs to end in a classified outcome within "
                          f"{TIMEOUT} + 1 s, got {len(failures)} failures:\n" + "\n".join(failures[:5]))
    assert len(histogram) >= 3, f"expected the cases to reach several kinds of outcome, got {dict(histogram)}"
