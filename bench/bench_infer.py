"""Batch inference speed, measured side by side in one run (issue 10, Speed).

    python bench/bench_infer.py [--checkpoint exp/demo/stage1/final.pt] \
        [--data exp/demo/data/lists/s1_asr.jsonl] [--extra "--greedy"]

Runs infer_with_shards_or_raw.sh on the same list three times, each into a fresh output:
  A: 1 CPU process, decode batch 1;  B: 2 CPU processes, decode batch 1;  C: 1 process, decode batch 8.
For each it prints the wall time of the whole command (start-up, model load, decoding, merge) and
the decoding rate (utterances over the slowest process's decoding time, from the process logs),
then the ratios B/A (processes) and C/A (decode batch). Threads: the script's default (cores divided
among the processes), or --threads_per_process N for all three runs. Every utterance of the list must end
decoded or failed in each run (checked), and A, B and C must give the same result file under
--greedy (checked: decoding does not depend on the split or the batch).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOG_LINE = re.compile(r"process (\d+)/(\d+): decoded (\d+), failed (\d+) .*? ([\d.]+) s$", re.M)
RUNS = (("A", 1, 1), ("B", 2, 1), ("C", 1, 8))  # name, processes, decode batch


def run_once(args, out: Path, procs: int, batch: int) -> dict:
    extra = f"{args.extra} --decode_batch_size {batch}".strip()
    cmd = ["bash", str(ROOT / "infer_with_shards_or_raw.sh"), "--checkpoint", args.checkpoint, "--data", args.data,
           "--data_type", args.data_type, "--output", str(out), "--nj", str(procs), "--device", "cpu", "--extra", extra]
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # the script gives each process its share of the cores
    if args.threads_per_process:
        env["OMP_NUM_THREADS"] = str(args.threads_per_process)
    start = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.time() - start
    if r.returncode != 0:
        sys.exit(f"run failed ({' '.join(cmd)}):\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
    logs = "".join(p.read_text() for p in sorted(Path(f"{out}.split{procs}").glob("log.*")))
    parts = [(int(m.group(3)), int(m.group(4)), float(m.group(5))) for m in LOG_LINE.finditer(logs)]
    if len(parts) != procs:
        sys.exit(f"expected {procs} process summaries in the logs of {out}, found {len(parts)}")
    n = sum(d + f for d, f, _ in parts)
    listed = int(re.search(r"listed (\d+)", r.stdout).group(1))
    return {"utts": n, "listed": listed, "wall": wall, "decode_s": max(s for _, _, s in parts),
            "result": Path(out).read_bytes()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="exp/demo/stage1/final.pt")
    ap.add_argument("--data", default="exp/demo/data/lists/s1_asr.jsonl")
    ap.add_argument("--data_type", default="raw")
    ap.add_argument("--extra", default="--greedy", help="decoding options for every run")
    ap.add_argument("--threads_per_process", type=int, default=0,
                    help="torch threads of every process (default: the script's, cores / processes)")
    args = ap.parse_args(argv)
    for path in (args.checkpoint, args.data):
        if not os.path.isfile(path):
            sys.exit(f"{path} not found: train the demo first (bash train.sh) or pass --checkpoint/--data")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, procs, batch in RUNS:
            results[name] = run_once(args, Path(tmp) / name / "text", procs, batch)
            r = results[name]
            print(f"{name}: {procs} process(es), decode batch {batch}: {r['utts']} utterances, wall {r['wall']:.1f} s "
                  f"({r['utts'] / r['wall']:.2f} utt/s), decoding {r['decode_s']:.1f} s "
                  f"({r['utts'] / r['decode_s']:.2f} utt/s)", flush=True)
    a = results["A"]
    for name, what in (("B", "2 processes vs 1"), ("C", "decode batch 8 vs 1")):
        r = results[name]
        print(f"ratio {what}: wall {a['wall'] / r['wall']:.2f}x, decoding {a['decode_s'] / r['decode_s']:.2f}x faster")
    complete = all(r["utts"] == r["listed"] for r in results.values())
    same = len({r["result"] for r in results.values()}) == 1
    print(f"every listed utterance decoded or failed in each run: {'yes' if complete else 'NO'}; "
          f"same result file in A, B and C: {'yes' if same else 'NO'}")
    return 0 if complete and same else 1


if __name__ == "__main__":
    sys.exit(main())
