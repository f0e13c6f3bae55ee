"""Speech-token extraction past one machine: two torchrun "nodes" x 2 processes on loopback (CPU):
raw list -> the same output list as one process, in list order; shard list -> the same tars and
list; skipped samples merged into one skipped.tsv and named at the end."""
import json
import os
import socket
import subprocess
import sys
import tarfile

from common_utils.convert import raw_to_shard

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_extract_speech_tokens import ENV, REPO, run, tiny_dir, write_list  # noqa: E402,F401 (fixture)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(args, cwd):
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank",
                               str(node), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                               str(port), "-m", "osum_echat.bin.extract_speech_tokens", *args,
                               "--merge_timeout", "120"],
                              cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for node in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    return outs[0]


def rows(path):
    """reason, where, key of each skipped sample (the detail may hold an object's address)."""
    return sorted(tuple(line.split("\t")[:3]) for line in path.read_text().splitlines()[1:])


def members(tar):
    with tarfile.open(tar) as t:
        return [(m.name, t.extractfile(m).read()) for m in t.getmembers()]


def test_raw_and_shard_lists_over_two_nodes_equal_one_process(tmp_path, tiny_dir, capsys):  # noqa: F811
    data = write_list(tmp_path / "in", n=8)
    shard_list, _ = raw_to_shard(str(data), str(tmp_path / "shards"), per_shard=2)
    for kind, listed in (("raw", data), ("shard", shard_list)):
        common = ["--model_dir", str(tiny_dir), "--data_type", kind, "--data", str(listed), "--batch_size", "2",
                  "--threads", "1"]
        one = run([*common, "--output", str(tmp_path / f"one_{kind}")], capsys)
        log = two_nodes([*common, "--output", str(tmp_path / f"four_{kind}")], REPO)  # the cwd of one
        four = json.loads([line for line in log.splitlines() if line.startswith('{"output"')][-1])
        assert {k: v for k, v in four.items() if k not in ("output", "skipped_list")} == \
               {k: v for k, v in one.items() if k not in ("output", "skipped_list")}
        name = os.path.basename(listed)
        a, b = tmp_path / f"one_{kind}", tmp_path / f"four_{kind}"
        assert (b / name).read_bytes() == (a / name).read_bytes()
        assert rows(b / "skipped.tsv") == rows(a / "skipped.tsv") and len(rows(a / "skipped.tsv")) >= 2
        assert "extract: done, " in log and " skipped: " in log and f"the full list: {b / 'skipped.tsv'}" in log
        if kind == "shard":
            tars = (a / name).read_text().split()
            assert len(tars) >= 4 and all(members(b / t) == members(a / t) for t in tars)
