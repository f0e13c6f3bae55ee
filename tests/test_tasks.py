from pathlib import Path

import yaml

from osum_echat import tasks
from osum_echat.tasks import TASKS, get_task


def test_every_output_type_has_its_own_system_prompt():
    for row in TASKS.values():
        assert row.output_type in tasks.SYSTEM_PROMPTS, row.tag
        assert row.system_text.startswith("<|im_start|>system\n")
        assert row.system_text.endswith("<|im_end|>\n<|im_start|>user\n")


def test_aliases_resolve_to_rows():
    assert get_task("TEXT2TOKEN").tag == "<TEXT2TOKEN>"
    assert get_task("<Speech2TEXTandTOKEN>").tag == "<S2TCHAT> <TEXT2TOKEN>"
    assert get_task("<S2TCHAT> <TEXT2TOKEN> <EMOTION>").output_type == "speech2text_token"
    assert get_task("  <S2TCHAT>   <THINKER> ").output_type == "s2t_chat_think"
    assert get_task("<NOT A TASK>") is None


def test_history_turns_select_history_variant():
    assert get_task("<S2TCHAT> <TEXT2TOKEN>", has_history=True).output_type == "speech2text_token_history"
    assert get_task("<S2TCHAT>", has_history=True).output_type == "s2t_chat"


def test_requirements_match_targets():
    for row in TASKS.values():
        assert row.speech_output == ("speech_token" in row.needs), row.tag
        assert row.think == ("think_str" in row.needs), row.tag
        if row.input == "text":
            assert row.output_type.startswith("text2"), row.tag
        # the prompt is embedded only where upstream embeds it
        assert row.uses_prompt == (row.output_type in ("text", "text2text")), row.tag


def test_conversion_targets_exist():
    for row in TASKS.values():
        for target in (row.only_x, row.streaming_tag, row.think_tag):
            if target is not None:
                assert target in TASKS, (row.tag, target)


def test_prompt_config_tags_are_known():
    path = Path(__file__).resolve().parents[1] / "conf" / "prompt_config.yaml"
    prompts = yaml.safe_load(path.read_text(encoding="utf-8"))
    unknown = [tag for tag in prompts if get_task(tag) is None]
    assert not unknown, f"prompt_config tags missing from the task table: {unknown}"
