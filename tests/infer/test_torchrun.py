"""Batch inference past one machine: two torchrun "nodes" x 2 processes on loopback (CPU, gloo).

First run: rank 3 is killed once it has started decoding; node 0 still merges what there is and
names the ranks that did not finish (exit 1). The rerun (through infer_with_shards_or_raw.sh
--nnodes/--node_rank/--master_addr/--master_port) resumes; the result is byte-identical to one
process under greedy decoding.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_batch_infer import _sine, make_checkpoint_dir  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
DECODE = ["--greedy", "--max_text_tokens", "3", "--max_speech_tokens", "4", "--device", "cpu"]
N = 40


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_data(tmp):
    (tmp / "wav").mkdir()
    lines = []
    for i in range(N):
        _sine(tmp / "wav" / f"u{i}.wav", 0.3 + 0.01 * i, 200 + 10 * i)
        lines.append(json.dumps({"key": f"u{i:02d}", "wav": f"wav/u{i}.wav", "txt": "hello", "task": "<TRANSCRIBE>"}))
    lines.insert(5, json.dumps({"key": "gone", "wav": "wav/gone.wav", "txt": "x", "task": "<TRANSCRIBE>"}))
    lines.insert(9, "{broken")
    (tmp / "data.jsonl").write_text("\n".join(lines) + "\n")


def infer_args(out):
    return ["-m", "osum_echat.bin.infer", "--checkpoint", "ck/final.pt", "--data", "data.jsonl", "--output", out,
            *DECODE]


def torchrun(tmp, node, port, out, extra=()):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
           "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
           *infer_args(out), *extra]
    return subprocess.Popen(cmd, cwd=tmp, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def rank_process(launcher, rank):
    for p in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if p.environ().get("RANK") == str(rank) and "osum_echat.bin.infer" in " ".join(p.cmdline()):
                return p
        except psutil.Error:
            pass
    return None


def test_two_nodes_kill_a_rank_rerun_resumes_identical_to_one_process(tmp_path, tiny_tokenizer, repo_root):
    make_checkpoint_dir(tmp_path / "ck", repo_root, tiny_tokenizer)
    write_data(tmp_path)
    one = subprocess.run([sys.executable, *infer_args("one/text")], cwd=tmp_path, env=ENV, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stdout + one.stderr

    port = free_port()
    nodes = [torchrun(tmp_path, node, port, "many/text", ["--merge_timeout", "15"]) for node in (0, 1)]
    part3 = tmp_path / "many/text.split4/part.3.failed"  # created once rank 3 starts decoding
    deadline, victim = time.monotonic() + 240, None
    while victim is None and time.monotonic() < deadline:
        proc = rank_process(nodes[1], 3) if part3.exists() else None
        if proc is not None:
            proc.send_signal(signal.SIGSTOP)  # frozen first: then check it has not finished already
            assert not (tmp_path / "many/text.split4/rank3.done").exists()
            proc.kill()
            victim = proc
        time.sleep(0.02)
    assert victim is not None, "rank 3 never started decoding"
    outs = [node.communicate(timeout=300)[0] for node in nodes]
    assert nodes[1].returncode != 0
    assert nodes[0].returncode == 1, outs[0]
    assert "did not finish within --merge_timeout 15 s" in outs[0] and "3 of 4" in outs[0], outs[0]
    done_first = sum(1 for _ in open(tmp_path / "many/text"))
    assert done_first < N  # rank 3's share is missing

    port = free_port()
    script = [f"{REPO}/infer_with_shards_or_raw.sh", "--checkpoint", "ck/final.pt", "--data", "data.jsonl",
              "--output", "many/text", "--nj", "2", "--nnodes", "2", "--master_addr", "127.0.0.1",
              "--master_port", str(port), *DECODE]
    again = [subprocess.Popen(["bash", *script, "--node_rank", str(node)], cwd=tmp_path, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for node in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in again]
    assert [p.returncode for p in again] == [0, 0], outs
    assert "process 0/4: decoded 0, failed 0" in outs[0]  # rank 0's share was done: nothing decoded again
    assert "decode: done, " in outs[0] and "2 failed: gone (missing_file), data.jsonl:10 (bad_json)" in outs[0]
    for name in ("text", "text.jsonl", "text.failed", "text.report.json"):
        assert (tmp_path / "many" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    assert sum(1 for _ in open(tmp_path / "many/text")) == N
