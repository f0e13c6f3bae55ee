import pytest

from osum_echat.train.data_lists import DataYamlError, yaml_to_list


def test_weights_repeat_and_subsample_and_paths_become_absolute(tmp_path):
    (tmp_path / "a").mkdir()
    for i in range(4):
        (tmp_path / "a" / f"t{i}.tar").write_bytes(b"")
    (tmp_path / "a" / "shards_list.txt").write_text("".join(f"t{i}.tar\n" for i in range(4)))
    (tmp_path / "b.jsonl").write_text('{"key": "k1"}\n{"key": "k2"}\n')
    spec = tmp_path / "data.yaml"
    spec.write_text(f"a:\n  path: {tmp_path}/a/shards_list.txt\n  weight: 0.5\n"
                    f"b:\n  path: b.jsonl\n  weight: 3\n")
    out = tmp_path / "out" / "s2t.list"
    n = yaml_to_list(str(spec), str(out), seed=1)
    lines = out.read_text().splitlines()
    assert n == len(lines) == 2 + 6
    tars = [x for x in lines if x.endswith(".tar")]
    assert len(tars) == 2 and all(x.startswith(str(tmp_path / "a")) for x in tars)
    assert sorted(x for x in lines if x.startswith("{")) == ['{"key": "k1"}'] * 3 + ['{"key": "k2"}'] * 3
    # fixed seed: every node of a multi-node job writes the same list
    out2 = tmp_path / "again.list"
    yaml_to_list(str(spec), str(out2), seed=1)
    assert out2.read_text() == out.read_text()


def test_combine_lists_pair_with_their_tars(tmp_path):
    (tmp_path / "tars").mkdir()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "part1.list").write_text("")
    (tmp_path / "c" / "combines_list.txt").write_text("part1.list\n")
    (tmp_path / "c" / "combines_tar_root.txt").write_text(str(tmp_path / "tars") + "/\n")
    spec = tmp_path / "d.yaml"
    spec.write_text(f"c:\n  path: {tmp_path}/c/combines_list.txt\n")
    yaml_to_list(str(spec), str(tmp_path / "o.list"))
    assert (tmp_path / "o.list").read_text().strip() == \
        f"{tmp_path}/c/part1.list|{tmp_path}/tars/part1.tar"


def test_missing_list_is_named(tmp_path):
    spec = tmp_path / "d.yaml"
    spec.write_text("asr:\n  path: nowhere/shards_list.txt\n")
    with pytest.raises(DataYamlError, match="asr.*nowhere/shards_list.txt"):
        yaml_to_list(str(spec), str(tmp_path / "o.list"))
