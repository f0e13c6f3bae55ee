"""The demo's stage-1 training steps/s on a quiet CPU and beside one CPU-bound competitor.

    python bench/bench_contention.py [--steps 100] [--warmup 10] [--policy ours|spin|one]
                                     [--threads 2] [--data_dir exp/demo/data]

Needs the demo's data (exp/demo/data, written by `bash train.sh` or `bash recipes/demo/run.sh
--stop_stage 0`). Each measurement is a fresh process that builds the demo's stage-1 model and data
(recipes/demo/conf/stage1_understanding.yaml, shard lists, 1 loader worker, as recipes/demo/run.sh)
and runs the real training step (trainer, engine, optimizer); steps/s is timed over --steps
steps after --warmup. First alone, then beside a competitor: a python process multiplying 512x512
matrices in a loop with torch's default threads, pinned to nothing (like another user's job).
Prints both rates and their ratio (target: >= 0.40; an even share of the CPU is 0.50).

--policy: ours  what the CLIs do (osum_echat/threads.py: thread count from the usable cores or
                OMP_NUM_THREADS, OpenMP passive waiting)
          spin  the old behaviour: OMP_NUM_THREADS only, OpenMP's default spin-waiting
          one   one thread, spin-waiting
--threads sets OMP_NUM_THREADS for the measured process (the demo's run.sh sets 2). Other
OpenMP settings pass through to it, e.g. a short spin before sleeping:
    GOMP_SPINCOUNT=10000 python bench/bench_contention.py --policy spin
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "recipes/demo/conf/stage1_understanding.yaml")
COMPETITOR = ("import torch\n"
              "a = torch.randn(512, 512)\n"
              "while True:\n"
              "    a = torch.tanh(a @ a)\n")


def child(args) -> None:
    """One measurement (a fresh process): the demo's stage-1 steps, timed."""
    if args.policy == "ours":
        from osum_echat.threads import configure

        configure()
    import torch

    from osum_echat.bin.train import build, get_parser
    from osum_echat.config import load_config
    from osum_echat.train.devices import select_device
    from osum_echat.train.trainer import Meter, Trainer

    if args.policy == "one":
        torch.set_num_threads(1)
    config = load_config(CONFIG, ["train_conf.cv_at_start=false", "save_interval=0"])
    config["max_steps"] = args.warmup + args.steps
    train_args = get_parser().parse_args([
        "--config", CONFIG, "--model_dir", args.model_dir, "--data_type", "shard", "--device", "cpu",
        "--train_data_s2t", args.list, "--num_workers", "1", "--prefetch", "8", "--no_resume",
        "--data_index", "none"])
    torch.manual_seed(0)
    os.makedirs(args.model_dir, exist_ok=True)
    engine, dataset, loader, _, _ = build(train_args, config, "single", select_device("cpu"))
    trainer = Trainer(engine, dataset, loader, None, config, args.model_dir)
    times, meter = [], Meter()
    engine.model.train()
    while len(times) < args.warmup + args.steps:
        for batch in loader:
            if trainer._train_batch(batch, meter) is not None:
                times.append(time.monotonic())
            if len(times) >= args.warmup + args.steps:
                break
    seconds = times[-1] - times[args.warmup - 1]
    print(json.dumps({"steps_per_s": args.steps / seconds, "seconds": seconds, "threads": torch.get_num_threads(),
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
                      "gomp_spincount": os.environ.get("GOMP_SPINCOUNT", "unset")}))


def measure(args, workdir: str, tag: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    env["PYTHONPATH"] = REPO
    if args.policy != "ours":
        env["OSUM_OMP_WAIT"] = "spin"  # osum_echat.bin's import then leaves OpenMP's waiting alone
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--policy", args.policy, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--list", args.list, "--model_dir", os.path.join(workdir, tag)]
    r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"measurement '{tag}' failed:\n{r.stdout}{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def start_competitor() -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    proc = subprocess.Popen([sys.executable, "-c", COMPETITOR], env=env)
    time.sleep(3)  # torch imported, the loop running
    if proc.poll() is not None:
        sys.exit("the competitor process stopped at once")
    return proc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--policy", default="ours", choices=["ours", "spin", "one"])
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the measured process (0: unset)")
    ap.add_argument("--data_dir", default=os.path.join(REPO, "exp/demo/data"))
    ap.add_argument("--only", choices=["quiet", "busy"], default=None, help="one of the two measurements")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--list", help=argparse.SUPPRESS)
    ap.add_argument("--model_dir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0
    data_yaml = os.path.join(args.data_dir, "conf/stage1_s2t.yaml")
    if not os.path.isfile(data_yaml):
        sys.exit(f"{data_yaml} not found: write the demo data first (bash recipes/demo/run.sh --stop_stage 0, "
                 f"or bash train.sh), or point --data_dir at it")
    with tempfile.TemporaryDirectory(prefix="bench_contention_") as workdir:
        args.list = os.path.join(workdir, "s2t.list")
        subprocess.run([sys.executable, "-m", "osum_echat.train.data_lists", data_yaml, args.list],
                       cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, check=True, stdout=subprocess.DEVNULL)
        result = {"policy": args.policy, "threads": args.threads or "unset", "steps": args.steps}
        if args.only != "busy":
            result["quiet"] = measure(args, workdir, "quiet")
        if args.only != "quiet":
            competitor = start_competitor()
            try:
                result["busy"] = measure(args, workdir, "busy")
            finally:
                competitor.kill()
                competitor.wait()
    for tag in ("quiet", "busy"):
        if tag in result:
            m = result[tag]
            print(f"{tag:5s}  {m['steps_per_s']:7.2f} steps/s  ({args.steps} steps in {m['seconds']:.1f} s, "
                  f"{m['threads']} threads, OMP_WAIT_POLICY={m['omp_wait_policy']}, "
                  f"GOMP_SPINCOUNT={m['gomp_spincount']})")
    if "quiet" in result and "busy" in result:
        result["ratio"] = result["busy"]["steps_per_s"] / result["quiet"]["steps_per_s"]
        verdict = "met" if result["ratio"] >= 0.40 else "NOT met"
        print(f"beside one CPU-bound competitor: {100 * result['ratio']:.0f}% of the quiet rate "
              f"(target >= 40%, an even share is 50%): {verdict}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
