"""Expand a data yaml into the list a run reads (upstream's load_combine_type_yaml.py, seeded).

    python -m common_utils.load_data_yaml conf/data_example.yaml data/train.list [--seed 777]

The yaml names lists, each with a `path` and an optional `weight` (default 1):

    asr_aishell:   {path: data/aishell/shards_list.txt, weight: 2}    # every tar twice
    chat_combine:  {path: data/chat/combines_list.txt, weight: 1}
    tts_subset:    {path: data/tts/shards_list.txt, weight: 0.3}      # a random 30%

The one implementation lives in osum_echat/train/data_lists.py (train.sh calls it);
this is the same tool under upstream's common_utils location. The result is read
with data_type shard: tar paths, "META|TAR" combine pairs and raw jsonl lines may
be mixed in it.
"""
from osum_echat.train.data_lists import DataYamlError, main, yaml_to_list  # noqa: F401

if __name__ == "__main__":
    main()
