"""Training throughput of the tiny model on CPU: 1 process vs 2 processes (torch DDP, gloo).

Runs the real train CLI (torchrun for 2 processes) on the same offline data and reads the
trainer's own log lines (tokens/s and samples/s summed over ranks), skipping the first
interval (start-up). Peak RSS is the largest resident size of any one training process.

    python bench/bench_train.py [--steps 100] [--batch_size 16] [--threads 1] [--num_workers 0]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import psutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "train"))
from synth_data import write_raw_list  # noqa: E402

LINE = re.compile(r"TRAIN epoch \d+ step (\d+) .* ([\d.]+) tok/s ([\d.]+) samples/s")


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def peak_rss_watch(proc: subprocess.Popen, result: dict):
    """Poll the process tree; keep the largest RSS of one process."""
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            for p in [root, *root.children(recursive=True)]:
                result["rss"] = max(result.get("rss", 0), p.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.2)


def run(nproc, data, workdir, steps, threads, batch_size, num_workers):
    model_dir = os.path.join(workdir, f"exp_{nproc}")
    shutil.rmtree(model_dir, ignore_errors=True)
    args = ["--config", "conf/tiny_ct_config.yaml", "--device", "cpu", "--data_type", "raw",
            "--train_data", data, "--model_dir", model_dir, "--num_workers", str(num_workers), "--prefetch", "4",
            "--max_steps", str(steps), "--no_resume"]
    for o in ("fire_module=link_and_encoder_and_lora", f"dataset_conf.batch_conf.batch_size={batch_size}",
              "dataset_conf.multi_num=50", "log_interval=10", "save_interval=0", "max_epoch=1000",
              "train_conf.cv_at_start=false", "dataset_conf.filter_conf.min_length=1"):
        args += ["--override_config", o]
    if nproc == 1:
        cmd = [sys.executable, "-m", "osum_echat.bin.train", "--train_engine", "single", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", free_port(), "-m", "osum_echat.bin.train",
               "--train_engine", "torch_ddp", *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": REPO}
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    mem = {}
    watcher = threading.Thread(target=peak_rss_watch, args=(proc, mem), daemon=True)
    watcher.start()
    out = proc.communicate()[0]
    watcher.join()
    if proc.returncode != 0:
        sys.exit(f"{nproc}-process run failed:\n{out[-3000:]}")
    rates = [(int(m.group(1)), float(m.group(2)), float(m.group(3))) for m in LINE.finditer(out)]
    steady = rates[1:] or rates  # the first interval includes start-up
    tok = sum(r[1] for r in steady) / len(steady)
    smp = sum(r[2] for r in steady) / len(steady)
    return {"tokens_per_s": tok, "samples_per_s": smp, "rss_mb": mem.get("rss", 0) / 2**20,
            "wall_s": time.time() - t0}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--num_workers", type=int, default=0, help="data loader workers per process")
    p.add_argument("--workdir", default="/tmp/bench_train")
    args = p.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    data = write_raw_list(os.path.join(args.workdir, "data"), n_asr=16, n_t2t=16)
    print(f"tiny model, CPU, {args.steps} steps of batch {args.batch_size} per process, "
          f"{args.threads} thread(s) + {args.num_workers} data worker(s) per process, "
          f"{os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    results = {n: run(n, data, args.workdir, args.steps, args.threads, args.batch_size,
                     args.num_workers) for n in (1, 2)}
    base = results[1]
    print(f"{'processes':>9} {'tokens/s':>10} {'samples/s':>10} {'vs 1 proc':>10} {'peak RSS/proc':>14} {'wall':>7}")
    for n, r in results.items():
        print(f"{n:>9} {r['tokens_per_s']:>10.0f} {r['samples_per_s']:>10.1f} "
              f"{r['samples_per_s'] / base['samples_per_s']:>9.2f}x {r['rss_mb']:>11.0f} MB {r['wall_s']:>6.0f}s")


if __name__ == "__main__":
    main()
