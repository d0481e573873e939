"""Reads a run directory's TensorBoard event files with TensorBoard's own reader, for
tests/tensorboard.rs.

usage: read_events.py RUN_DIR OUT.json

Writes {"scalars": {tag: [[step, value], ...]}, "text": {tag: string}} (every event in the
order the reader gives, duplicates included) to OUT.json.
"""

import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main():
    run_dir, out_path = sys.argv[1:3]
    # size_guidance 0: keep every event (the default samples long series); no purging, which
    # would hide a step logged twice.
    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0, "tensors": 0}, purge_orphaned_data=False)
    acc.Reload()
    tags = acc.Tags()
    scalars = {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]}
    text = {t: acc.Tensors(t)[0].tensor_proto.string_val[0].decode() for t in tags["tensors"]}
    with open(out_path, "w") as f:
        json.dump({"scalars": scalars, "text": text}, f)


if __name__ == "__main__":
    main()
