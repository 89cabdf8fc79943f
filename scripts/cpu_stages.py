#!/usr/bin/env python3
"""Groups a CPU profile of the shardgate proxy by write-path stage.

Record the proxy while `shardgate bench` loads it, with a build that keeps frame pointers:

    CARGO_PROFILE_RELEASE_DEBUG=line-tables-only RUSTFLAGS="-C force-frame-pointers=yes" \
        cargo build --release --target-dir target/profiling
    perf record -F 499 --call-graph fp -p "$PROXY_PID" -o proxy.data   # while the bench runs
    perf script -i proxy.data -F comm,tid,ip,sym > proxy.txt
    scripts/cpu_stages.py proxy.txt [STAGE]

Each sample goes to the stage named by its innermost frame that names one (so a memcpy inside
the tuple encoder counts as tuple encoding); kernel and allocator samples whose stack names no
stage are shown apart. With STAGE, also prints that stage's hottest innermost frames.
"""

import collections
import sys

# Stage, and the substrings of a frame's symbol that place a sample in it, most specific first.
STAGES = [
    ("key hash and routing", ["hash_key", "XxHash3", "xxh3", "place_write", "shard_for",
                              "salted_position", "KeySample", "hotkeys::", "WindowCollector"]),
    ("JSON decode and validation", ["serde_json", "decode::scan", "RowVisitor", "ValueSeed", "ColumnSeed",
                                    "encode_scalar", "encode_jsonb", "RowsVisitor", "RowSeed",
                                    "JsonScalar", "chrono", "uuid::parser"]),
    ("COPY tuple encoding", ["RowEncoder", "decode_rows", "emit_row", "finish_row"]),
    ("COPY send (driver)", ["tokio_postgres", "postgres_protocol", "CopyIn", "write_batch",
                            "ingest::copy"]),
    ("batching and hand-off", ["batcher", "ShardSet", "submit", "queue::", "Writes::",
                               "PendingWrite"]),
    ("HTTP (hyper, axum, body)", ["hyper", "axum", "http_body", "write_rows", "h1::", "tower",
                                  "encoding::"]),
]


def read_samples(path):
    """The stacks of a `perf script` dump, innermost frame first."""
    samples, stack = [], []
    for line in open(path, encoding="utf-8", errors="replace"):
        if not line.strip():
            if stack:
                samples.append(stack)
            stack = []
        elif line[0] in " \t":
            parts = line.strip().split(None, 1)
            stack.append(parts[1] if len(parts) > 1 else "?")
    if stack:
        samples.append(stack)
    return samples


def stage_of(stack):
    """The stage of one sample, or a kernel/runtime bucket when no frame names a stage."""
    for frame in stack:
        for name, keys in STAGES:
            if any(key in frame for key in keys):
                return name
    near = stack[:14]
    if any("recv" in frame for frame in near):
        return "socket reads (kernel, either side)"
    if any(key in frame for frame in near for key in ("sendto", "sendmsg", "writev", "tcp_sendmsg")):
        return "socket writes (kernel, either side)"
    if any(key in frame for frame in stack for key in ("epoll", "futex", "schedule", "tokio::runtime", "park")):
        return "runtime (scheduling, wake-ups)"
    if any(key in frame for frame in stack[:3] for key in ("malloc", "free", "realloc", "memcpy", "memmove")):
        return "allocator and memcpy (no stage on the stack)"
    return "other"


def main():
    samples = read_samples(sys.argv[1])
    counts = collections.Counter(stage_of(stack) for stack in samples)
    total = sum(counts.values())
    for stage, n in counts.most_common():
        print(f"{stage:46s} {n:6d} {100 * n / total:5.1f}%")
    print(f"{'samples':46s} {total:6d}")
    if len(sys.argv) > 2:
        hottest = collections.Counter(s[0][:110] for s in samples if stage_of(s) == sys.argv[2])
        for frame, n in hottest.most_common(15):
            print(f"{n:6d} {frame}")


if __name__ == "__main__":
    main()
