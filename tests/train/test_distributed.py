"""Two CPU processes over gloo through torchrun, driving the real train CLI on the tiny model."""
import json
import os
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from synth_data import write_raw_list  # noqa: E402


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


TINY_OVERRIDES = [
    "fire_module=link_and_encoder_and_lora", "dataset_conf.batch_conf.batch_size=2",
    "dataset_conf.multi_num=1", "dataset_conf.shuffle=true", "dataset_conf.sort=false",
    "max_epoch=1", "log_interval=1", "save_interval=2", "optim_conf.lr=0.002",
    "scheduler_conf.warmup_steps=2", "dataset_conf.filter_conf.min_length=1",
]


def run_two_ranks(tmp_path, engine_args, overrides=(), timeout=600, n_each=8):
    data = write_raw_list(str(tmp_path / "data"), n_asr=n_each, n_t2t=n_each)
    out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"  # one per run: runs may repeat
    out.mkdir()
    args = ["--config", "conf/tiny_ct_config.yaml", "--device", "cpu", "--data_type", "raw",
            "--train_data", data, "--cv_data", data, "--model_dir", str(tmp_path / "exp"),
            "--num_workers", "0", *engine_args]
    for o in [*TINY_OVERRIDES, *overrides]:
        args += ["--override_config", o]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", free_port(), os.path.join(HERE, "dist_driver.py"), str(out), "--", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    return ranks, tmp_path / "exp", proc


def test_ddp_two_processes_stay_identical_and_split_the_data(tmp_path):
    # gradient accumulation too: the first micro-batch of each update runs under no_sync
    ranks, exp, _ = run_two_ranks(tmp_path, ["--train_engine", "torch_ddp"],
                                  overrides=["accum_grad=2"], n_each=16)
    r0, r1 = ranks
    # 32 samples / 2 ranks / batch 2 = 8 or 9 micro-batches per rank (batches hold one
    # output_type), / accum 2; the epoch ends for both when the first rank runs dry
    assert r0["step"] == r1["step"] == 4
    assert r0["params"] == r1["params"]  # bitwise: same all-reduced grads, same updates
    keys0 = {k for b in r0["seen"] for k in b["keys"]}
    keys1 = {k for b in r1["seen"] for k in b["keys"]}
    assert keys0 and keys1 and not keys0 & keys1  # no sample trained twice in the epoch
    assert len(keys0 | keys1) >= 28  # and (almost) all of them once
    # an update was really made: the saved step-2 model differs from the final one
    import torch
    s2 = torch.load(exp / "step_2.pt", weights_only=True)
    final = torch.load(exp / "final.pt", weights_only=True)
    assert any(not torch.equal(s2[k], final[k]) for k in final)
    assert (exp / "train.yaml").exists() and list((exp / "tensorboard").rglob("events.*"))
    import yaml
    cv = yaml.safe_load(open(exp / "step_2.yaml"))["loss_dict"]
    assert {"loss/text", "loss/text2text", "acc/text"} <= set(cv)  # cv over the whole list
