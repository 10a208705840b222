"""What the SDK scripts share: one line per check, exit 1 at the first failure."""
import sys


def check(name, ok, detail=None):
    if not ok:
        print(f"FAIL {name}: {detail!r}")
        sys.exit(1)
    print(f"ok {name}")
