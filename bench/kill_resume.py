"""kill -9 a training run at a random moment, start the same command again, repeat.

Checks after every kill that each complete checkpoint loads (nothing half-written is ever
taken for a checkpoint), that the restarted run resumes from the newest one with the step
counter continuing, and at the end that the run finishes at the same step count as an
uninterrupted run would.

    python bench/kill_resume.py [--repeats 5] [--workdir /tmp/kill_resume] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import torch
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests", "train"))
from osum_echat.train.checkpointing import list_checkpoints  # noqa: E402
from synth_data import write_raw_list  # noqa: E402

STEPS_PER_EPOCH = 16  # 32 samples, batch 2, accum 1
EPOCHS = 12


def command(data, model_dir):
    overrides = ["fire_module=link_and_encoder_and_lora", "dataset_conf.batch_conf.batch_size=2",
                 "dataset_conf.multi_num=1", "dataset_conf.sort=false", f"max_epoch={EPOCHS}",
                 "log_interval=4", "save_interval=5", "keep_checkpoint_max=3",
                 "dataset_conf.filter_conf.min_length=1", "scheduler_conf.warmup_steps=5"]
    cmd = [sys.executable, "-m", "osum_echat.bin.train", "--train_engine", "single",
           "--config", "conf/tiny_ct_config.yaml", "--device", "cpu", "--data_type", "raw",
           "--train_data", data, "--model_dir", model_dir, "--num_workers", "0"]
    for o in overrides:
        cmd += ["--override_config", o]
    return cmd


def check_checkpoints(model_dir) -> int:
    """Every complete checkpoint loads; returns the newest step (0 if none)."""
    newest = 0
    for ckpt in list_checkpoints(model_dir):
        torch.load(ckpt["model"], map_location="cpu", weights_only=True)
        if os.path.exists(ckpt["state"]):
            torch.load(ckpt["state"], map_location="cpu", weights_only=True)
        with open(ckpt["info_path"]) as f:
            assert yaml.safe_load(f)["step"] == ckpt["info"]["step"]
        newest = max(newest, ckpt["info"]["step"])
    return newest


def check_seek(text, i):
    """A run resumed mid-epoch seeks (no replay through feature extraction)."""
    m = re.search(r"resumed from \S+: step \d+, epoch \d+, batch (\d+)", text)
    if m and int(m.group(1)) > 0 and "resume: replayed" in text:
        raise AssertionError(f"run {i} replayed batch {m.group(1)} instead of seeking")
    if m and int(m.group(1)) > 0:
        assert f"resume: skipped {m.group(1)} batches" in text, f"run {i}: no seek logged"
        # the killed run's data index (possibly with a torn last line) served the seek
        assert re.search(r"data index: the seek took the facts of [1-9]", text), f"run {i}: data index unused"


def newest_step(model_dir) -> int:
    steps = [c["info"]["step"] for c in list_checkpoints(model_dir)] if os.path.isdir(model_dir) else []
    return max(steps, default=0)


def run(workdir, repeats=5, seed=0, log=print):
    rng = random.Random(seed)
    shutil.rmtree(workdir, ignore_errors=True)
    data = write_raw_list(os.path.join(workdir, "data"), n_asr=16, n_t2t=16)
    model_dir = os.path.join(workdir, "exp")
    cmd = command(data, model_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    last = 0
    for i in range(repeats):
        logf = open(os.path.join(workdir, f"run{i}.log"), "w")
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT)
        # wait for this run to write a checkpoint beyond the one it resumed from
        deadline = time.time() + 300
        while newest_step(model_dir) <= last and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))  # then a random moment: mid-step or mid-save
        if proc.poll() is not None:
            raise AssertionError(f"run {i} ended before it could be killed; see {logf.name}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        logf.close()
        text = open(logf.name).read()
        if i > 0:
            m = re.search(r"resumed from \S+: step (\d+)", text)
            assert m and int(m.group(1)) == last, f"run {i} did not resume from step {last}"
            check_seek(text, i)
        newest = check_checkpoints(model_dir)
        assert newest > last, f"run {i}: no progress past step {last}"
        log(f"kill {i + 1}/{repeats}: killed after step {newest} was saved; all checkpoints load")
        last = newest
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    m = re.search(r"resumed from \S+: step (\d+)", done.stderr)
    assert m and int(m.group(1)) == last
    check_seek(done.stderr, repeats)
    final = newest_step(model_dir)
    assert final == STEPS_PER_EPOCH * EPOCHS, f"finished at step {final}"
    assert os.path.exists(os.path.join(model_dir, "final.pt"))
    assert not [f for f in os.listdir(model_dir) if ".tmp." in f]
    log(f"final run resumed from step {last} and finished at step {final} "
        f"(= {EPOCHS} epochs x {STEPS_PER_EPOCH} steps, as without interruption)")
    return final


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workdir", default="/tmp/kill_resume")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    t0 = time.time()
    run(args.workdir, args.repeats, args.seed)
    print(f"ok: {args.repeats} kills survived in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
