"""What every windowed training stream shares: argument checks, the batch count of a stream, and
the grain plumbing from per-slot reads to this process's batch iterator.

A stream is a sequence of global batches of G examples; process p of P reads rows
[pL, (p+1)L) of each (L = G / P), one "slot" per row, so slot s of this process is row
pL + s % L of global batch s // L. The window modules (renderer_windows.py, a2e_windows.py)
decide which example a slot reads; this module turns their slot reader into batches.
"""

from __future__ import annotations

import grain
from absl import flags

# An "endless" stream: long enough never to end, short enough for int64 arithmetic.
ENDLESS_STREAM_LENGTH = 2 ** 62


def check_stream_args(*, global_batch: int, seed: int, process_index: int, process_count: int,
                      num_epochs: int | None, read_threads: int, prefetch_batches: int,
                      worker_count: int) -> None:
    """One-line ValueError/RuntimeError for arguments no stream accepts."""
    if global_batch <= 0:
        raise ValueError(f"global_batch must be positive, got {global_batch}")
    if process_count <= 0 or not 0 <= process_index < process_count:
        raise ValueError(f"bad process_index {process_index} of process_count {process_count}")
    if global_batch % process_count:
        raise ValueError(
            f"global_batch {global_batch} is not divisible by process_count {process_count}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed}")
    if num_epochs is not None and num_epochs <= 0:
        raise ValueError(f"num_epochs must be positive or None, got {num_epochs}")
    if read_threads < 0 or prefetch_batches < 1 or worker_count < 0:
        raise ValueError("read_threads and worker_count must be >= 0, prefetch_batches >= 1")
    if worker_count > 0 and not flags.FLAGS.is_parsed():
        # Fail here with the fix, not later inside a grain thread with UnparsedFlagAccessError.
        raise RuntimeError(
            "grain worker processes read absl flags, which are not parsed yet: run under "
            "absl.app.run or call absl.flags.FLAGS.mark_as_parsed() first (or worker_count=0)")


def count_global_batches(stream_length: int, global_batch: int, drop_remainder: bool) -> int:
    """Global batches in a finite stream of `stream_length` examples (the last one padded when
    not drop_remainder); ValueError when that is none."""
    count = (stream_length // global_batch if drop_remainder
             else -(-stream_length // global_batch))
    if count == 0:
        raise ValueError(f"{stream_length} examples make no full global batch of {global_batch}; "
                         "use drop_remainder=False or more epochs")
    return count


def slot_batches(read_slot: grain.transforms.Map, *, num_global_batches: int, local_batch: int,
                 read_threads: int, prefetch_batches: int,
                 worker_count: int) -> grain.DatasetIterator:
    """This process's batches: slots 0 .. num_global_batches * L - 1 mapped through `read_slot`
    (slot -> example dict), batched by L, read by `read_threads` threads with
    `prefetch_batches` ready, optionally in `worker_count` spawned grain processes (same output
    for any count). The iterator supports get_state()/set_state() and orbax checkpointing."""
    batches = (grain.MapDataset.range(num_global_batches * local_batch)
               .map(read_slot)
               .batch(local_batch, drop_remainder=True))   # slots are a whole number of batches
    stream = batches.to_iter_dataset(
        grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_batches))
    if worker_count > 0:
        stream = stream.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=worker_count, per_worker_buffer_size=prefetch_batches))
    return iter(stream)
