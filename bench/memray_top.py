"""`python -m bench.memray_top CAPTURE [N]`: what held the memory at the high-water mark
of a `python -m bench --only memory --memray` capture, by the first frame in this
project or a library it uses (one line per source line, largest first).

mimalloc's address-space reservation (pyarrow's allocator reserves 1 GB it never
touches) is left out: it is not resident.
"""

from __future__ import annotations

import sys
from collections import Counter

from memray import FileReader

from bench.worker import ROOT

OURS = ("/app/", "/tables/", "/agents/")
LIBRARIES = ("aiokafka", "deltalake", "pyarrow", "rocksdict", "faust", "orjson", "asyncpg")


def site(stack: list[tuple[str, str, int]]) -> str:
    for function, path, line in stack:
        if not path.endswith(".py"):
            continue  # a native frame: the Python line that led to it names it better
        short = path.split("site-packages/")[-1]
        if any(part in path for part in OURS) or short.split("/")[0] in LIBRARIES:
            return f"{short.removeprefix(f'{ROOT}/')}:{line} {function}"
    return "elsewhere: " + " <- ".join(function for function, _, _ in stack[:3])


def main() -> None:
    reader = FileReader(sys.argv[1])
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    sizes: Counter[str] = Counter()
    for record in reader.get_high_watermark_allocation_records(merge_threads=True):
        stack = list(record.hybrid_stack_trace())
        if any(function == "mi_reserve_os_memory_ex2" for function, _, _ in stack):
            continue
        sizes[site(stack)] += record.size
    print(f"held at the high-water mark: {sum(sizes.values()) / 2**20:.1f} MB")
    for where, size in sizes.most_common(top):
        print(f"{size / 2**20:8.1f} MB  {where}")


if __name__ == "__main__":
    main()
