"""The processes of a torchrun job sharing out one list (batch inference, speech-token extraction).

    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 4 --master_addr HOST --master_port PORT \
        -m osum_echat.bin.infer ...

Each rank takes a deterministic share of the list, writes its own part files into the output
folder (a filesystem every node sees, as the lists and audio are) and, when done, a marker
`rank<R>.done` beside them holding its counts. Rank 0 then waits for every marker and merges.
The only collective is one gloo barrier at the start, under a timeout: it makes sure every
rank has removed its marker of an earlier run before anyone looks. Waiting for the others is
done on the markers, with a timeout, so a rank that dies never leaves rank 0 blocked in a
collective forever: rank 0 merges what there is and names the ranks that did not finish (a
rerun of the same command resumes them).
"""
from __future__ import annotations

import datetime
import json
import os
import time
from dataclasses import dataclass

POLL_SECONDS = 0.5


@dataclass
class JobRanks:
    rank: int
    world_size: int
    local_rank: int
    marker_dir: str
    started_group: bool = False

    @classmethod
    def from_env(cls, marker_dir: str) -> "JobRanks | None":
        """The ranks torchrun set (RANK, WORLD_SIZE, LOCAL_RANK); None outside torchrun."""
        if not all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
            return None
        return cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]),
                   marker_dir)

    def marker(self, rank: int) -> str:
        return os.path.join(self.marker_dir, f"rank{rank}.done")

    def start(self, timeout_s: float) -> None:
        """Remove this rank's marker of an earlier run, then one barrier (gloo, `timeout_s`)."""
        os.makedirs(self.marker_dir, exist_ok=True)
        try:
            os.remove(self.marker(self.rank))
        except FileNotFoundError:
            pass
        if self.world_size == 1:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_s))
            self.started_group = True
        dist.barrier()

    def finish(self, info: dict) -> None:
        """This rank's share is written: its marker, atomically."""
        tmp = f"{self.marker(self.rank)}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(info, f)
        os.replace(tmp, self.marker(self.rank))

    def wait_all(self, timeout_s: float) -> tuple[dict, list]:
        """Rank 0: ({rank: info} of the ranks that finished, [ranks that did not within timeout_s])."""
        deadline = time.monotonic() + timeout_s
        while True:
            done = {}
            for r in range(self.world_size):
                try:
                    with open(self.marker(r), encoding="utf-8") as f:
                        done[r] = json.load(f)
                except (FileNotFoundError, json.JSONDecodeError):
                    pass
            missing = [r for r in range(self.world_size) if r not in done]
            if not missing or time.monotonic() > deadline:
                return done, missing
            time.sleep(POLL_SECONDS)

    def close(self) -> None:
        if self.started_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.started_group = False
