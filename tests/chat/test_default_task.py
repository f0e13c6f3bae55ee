"""The web demo starts at a task the loaded checkpoint was trained on, read from its stage folder's
training lists (what train.sh writes), for each of two think checkpoints, through their links."""
import io
import json
import os
import shutil
import tarfile
import types

import pytest

from osum_echat.infer.trained_tasks import default_task, trained_tasks
from osum_echat.infer.web_demo import DemoServer, build_demo

S2S_THINK, S2T_THINK = "<S2TCHAT> <TEXT2TOKEN> <THINK>", "<S2TCHAT> <THINKER>"


def write_shard(path, tasks):
    with tarfile.open(path, "w") as tar:
        for i, task in enumerate(tasks):
            for suffix, text in (("txt", f"answer {i}"), ("task", task)):
                data = text.encode()
                info = tarfile.TarInfo(f"utt{i}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def make_stage(root, name, lists, data_type, tiny_checkpoints, repo_root):
    """root/name/{final.pt, train.yaml, data/*.list} and the link root/name_final.pt -> name/final.pt."""
    stage = root / name
    (stage / "data").mkdir(parents=True)
    shutil.copy(tiny_checkpoints[1], stage / "final.pt")
    text = (repo_root / "conf/tiny_ct_config.yaml").read_text()
    (stage / "train.yaml").write_text(text + f"\ntrain_conf:\n  data_type: {data_type}\n")
    for list_name, tasks in lists.items():
        if data_type == "shard":
            write_shard(stage / "data" / f"{list_name}.tar", tasks)
            lines = [str(stage / "data" / f"{list_name}.tar")]
        else:
            lines = [json.dumps({"key": f"u{i}", "wav": "x.wav", "txt": "hi", "task": t}) for i, t in enumerate(tasks)]
        (stage / "data" / f"{list_name}.list").write_text("\n".join(lines) + "\n")
    os.symlink(f"{name}/final.pt", root / f"{name}_final.pt")
    return str(root / f"{name}_final.pt")


@pytest.fixture
def think_checkpoints(tmp_path, tiny_checkpoints, repo_root):
    # tag-style stage trained both think tasks (shards, as the demo writes them); the language-style one
    # only text replies plus text chat (raw lists); both cv lists hold a task neither trained on
    tag = make_stage(tmp_path, "tag_think", {"s2s": [S2S_THINK] * 3, "s2t": [S2T_THINK] * 3,
                                             "cv": ["<TRANSCRIBE>"] * 9}, "shard", tiny_checkpoints, repo_root)
    language = make_stage(tmp_path, "language_think", {"s2t": [S2T_THINK] * 2, "t2t": ["<TEXT2TEXT>"],
                                                       "cv": ["<TRANSCRIBE>"] * 9}, "raw", tiny_checkpoints, repo_root)
    return tag, language


def test_trained_tasks_come_from_the_stage_lists(think_checkpoints, tmp_path):
    tag, language = think_checkpoints
    assert trained_tasks(tag) == {S2S_THINK: 3, S2T_THINK: 3}
    assert trained_tasks(language) == {S2T_THINK: 2, "<TEXT2TEXT>": 1}
    assert default_task(tag, "<TRANSCRIBE>")[0] == S2S_THINK  # a tie goes to the speaking task
    chosen, why = default_task(language, "<TRANSCRIBE>")
    assert chosen == S2T_THINK and why.startswith(f"trained on {S2T_THINK} (2)")
    lone = tmp_path / "lone.pt"
    lone.write_bytes(b"")
    assert default_task(lone, "<S2TCHAT> <TEXT2TOKEN>") == ("<S2TCHAT> <TEXT2TOKEN>",
                                                            f"no training lists found beside {lone}")


def test_the_page_offers_each_checkpoints_trained_task(think_checkpoints):
    pipe = types.SimpleNamespace(audio_limit=lambda spec: 30.0, variants=None)
    defaults = [default_task(p, "<S2TCHAT> <TEXT2TOKEN>")[0] for p in think_checkpoints]
    for names, expect in ((["tag", "language"], S2S_THINK), (["language", "tag"], S2T_THINK)):
        server = DemoServer(pipe, names, default_tasks=defaults if names[0] == "tag" else defaults[::-1])
        demo = build_demo(server)
        task = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "task")
        assert task.value == expect
        assert server.default_task("language") == S2T_THINK and server.default_task("tag") == S2S_THINK
