"""The Python API on a tiny random checkpoint: every task, history, bounds, bad input, two checkpoints."""
import json

import pytest
import torch

from osum_echat import tasks as task_table
from osum_echat.infer.conversation import Conversation
from osum_echat.infer.runtime import HELPER_TASKS, ChatInputError, ChatPipeline, Turn

SHORT = dict(max_text_tokens=6, max_speech_tokens=12)


@pytest.fixture(scope="module")
def pipe(tiny_checkpoints, tiny_token2wav):
    config, a, b = tiny_checkpoints
    return ChatPipeline.from_files(config, a, tiny_token2wav, device="cpu", checkpoint_b=b)


@pytest.mark.parametrize("tag", list(task_table.TASKS))
def test_every_task_of_the_table_runs(pipe, wavs, tag):
    spec = task_table.TASKS[tag]
    kw = dict(wav=wavs["q"]) if spec.speech_input else dict(text="hello there")
    r = pipe.run(tag, **kw, **SHORT)
    assert r.output_type == spec.output_type
    assert r.timings["llm"] > 0 and r.timings["total"] >= r.timings["llm"]
    if spec.speech_input:
        assert r.timings["encoder"] > 0
    # a random model never stops by itself within 12 speech tokens: the speech phase fills the limit
    assert (len(r.speech_tokens) > 0) == spec.speech_output
    assert all(0 <= c < 4096 for c in r.speech_tokens)
    if spec.speech_output:  # spoken by token2wav: 22,050 Hz, 256 samples a mel frame, 25 tokens a second
        assert r.sample_rate == 22050 and r.audio.dim() == 1
        assert r.audio.numel() == 256 * (len(r.speech_tokens) * 22050 // (25 * 256))
        assert 0 < r.timings["first_audio"] <= r.timings["total"] and r.timings["token2wav"] > 0
    else:
        assert r.audio is None and "token2wav" not in r.timings


def test_helpers_run_their_rows(pipe, wavs):
    for name, tag in HELPER_TASKS.items():
        arg = "hello there" if not task_table.TASKS[tag].speech_input else wavs["q"]
        assert getattr(pipe, name)(arg, **SHORT).output_type == task_table.TASKS[tag].output_type
    assert pipe.understand(wavs["q"], "<AGE> <GENDER>", **SHORT).task == "<AGE> <GENDER>"


def test_request_goes_through_the_data_pipeline_like_a_list(pipe, wavs, tmp_path, tiny_tokenizer):
    """The single-utterance batch is what decoding a raw list gives (same prompt ids, features)."""
    from osum_echat.data.dataset import build_dataset, one_by_one_config

    # the user prompt is drawn by key and seed: the list line carries the request's key
    line = {"key": "request", "wav": wavs["stereo8k"], "txt": "", "task": "<EMOTION>"}
    (tmp_path / "d.list").write_text(json.dumps(line) + "\n")
    listed = next(iter(build_dataset(one_by_one_config(pipe.config), "raw", str(tmp_path / "d.list"),
                                     tiny_tokenizer, mode="decode")))
    sample, _, _ = pipe.sample("<EMOTION>", wav=wavs["stereo8k"])
    asked = pipe.batch(sample)
    assert torch.equal(asked.feats, listed.feats) and torch.equal(asked.prompt, listed.prompt)
    assert asked.output_type == listed.output_type == "text"


def test_user_prompt_is_used_by_understanding_tasks_only(pipe, wavs, tiny_tokenizer):
    sample, _, notes = pipe.sample("<EMOTION>", wav=wavs["q"], prompt="what is the mood")
    assert pipe.batch(sample).prompt[0].tolist() == tiny_tokenizer.encode("what is the mood", add_special_tokens=False)
    assert notes == []
    _, _, notes = pipe.sample("<S2TCHAT>", wav=wavs["q"], prompt="what is the mood")
    assert any("reads no user prompt" in n for n in notes)


def test_conversation_feeds_answers_back_with_the_trained_layout(pipe, wavs):
    conv = Conversation(pipe, "<S2TCHAT> <TEXT2TOKEN>")
    r1 = conv.say(wav=wavs["q"], **SHORT)
    assert r1.history_turns == 0 and r1.task == "<S2TCHAT> <TEXT2TOKEN>"
    sample, _, _ = pipe.sample(conv.task, wav=wavs["q2"], history=conv.turns)
    batch = pipe.batch(sample)
    turn = batch.history[0][0]
    # the turn carries the user's speech features, the model's answer and its speech tokens (wrapped)
    assert turn["txt"] == r1.text and turn["wav"].size(1) == 80
    assert turn["speech_token"][1:-1] == r1.speech_tokens and turn["speech_token"][0] == 4096
    with_history = pipe.model.assemble(batch.to(pipe.model.device), with_output=False).inputs_embeds.size(1)
    alone = pipe.model.assemble(pipe.batch(pipe.sample(conv.task, wav=wavs["q2"])[0]), with_output=False)
    assert with_history > alone.inputs_embeds.size(1) + len(r1.speech_tokens)
    r2 = conv.say(wav=wavs["q2"], **SHORT)
    assert r2.history_turns == 1 and r2.task == "<S2TCHAT> <TEXT2TOKEN> <HISTORY>"  # the table's history row
    conv.reset()
    assert conv.say(wav=wavs["q"], **SHORT).history_turns == 0


def dropped(result):
    return [n for n in result.notes if n.startswith("dropped")]


def test_history_bounds_drop_the_oldest_turns_and_say_so(pipe, wavs):
    conv = Conversation(pipe, "<S2TCHAT> <TEXT2TOKEN>", max_turns=2)
    for _ in range(3):
        r = conv.say(wav=wavs["q"], **SHORT)
    assert r.history_turns == 2 and not dropped(r)
    r = conv.say(wav=wavs["q"], **SHORT)
    assert r.history_turns == 2 and dropped(r) == ["dropped the 1 oldest turn(s) from the history (max_turns=2)"]
    one_turn = conv.estimate_positions(conv.turns[-1:], 1.0)
    tight = Conversation(pipe, "<S2TCHAT> <TEXT2TOKEN>", max_context_tokens=one_turn)
    tight.turns = list(conv.turns)
    r = tight.say(wav=wavs["q"], **SHORT)
    assert r.history_turns == 1 and f"max_context_tokens={one_turn}" in dropped(r)[0]


def test_history_is_not_shown_to_tasks_trained_without_it(pipe, wavs):
    turn = Turn(wavs["q"], "hi", [1, 2, 3], 1.0)
    r = pipe.run("<S2TCHAT>", wav=wavs["q"], history=[turn], **SHORT)
    assert r.history_turns == 0 and any("not trained with history" in n for n in r.notes)


def test_bad_input_gives_one_clear_error(pipe, wavs):
    cases = [(dict(task="<TRANSCRIBE>", wav=wavs["not_audio"]), "not_audio"),
             (dict(task="<TRANSCRIBE>", wav=wavs["long"]), "audio_too_long"),
             (dict(task="<TEXT2TEXT>", text="   "), "empty_text"),
             (dict(task="<TEXT2TOKEN>"), "empty_text"),
             (dict(task="<TRANSCRIBE>"), "missing_input"),
             (dict(task="<TRANSCRIBE>", wav="/no/such.wav"), "missing_file")]
    for kw, reason in cases:
        with pytest.raises(ChatInputError) as e:
            pipe.run(**kw, **SHORT)
        assert e.value.reason == reason and str(e.value).startswith(reason + ": ")
    assert "31.0 s" in str(pytest.raises(ChatInputError, pipe.run, "<TRANSCRIBE>", wav=wavs["long"]).value)
    r = pipe.run("<TRANSCRIBE>", wav=wavs["q"], **SHORT)  # still serving
    assert r.output_type == "text"


def test_fixed_up_input_runs_and_says_so(pipe, wavs):
    r = pipe.run("<EMOTION>", wav=wavs["stereo8k"], **SHORT)
    assert "audio has 2 channels: mixed to mono" in r.notes
    assert "audio sample rate 8000 Hz: resampled to 16000 Hz" in r.notes
    r = pipe.run("transcribe", wav=wavs["q"], **SHORT)  # a helper name is its tag
    assert r.task == "<TRANSCRIBE>" and "task 'transcribe' read as <TRANSCRIBE>" in r.notes
    with pytest.raises(ChatInputError) as e:
        pipe.run("<TRANSCRIBER>", wav=wavs["q"], **SHORT)
    assert e.value.reason == "unknown_task" and "closest: <TRANSCRIBE>" in str(e.value)
    assert "--list-tasks" in str(e.value)
    r = pipe.run("<S2TCHAT>", wav=(torch.zeros(2, 16000), 16000), **SHORT)  # samples + rate
    assert "audio has 2 channels: mixed to mono" in r.notes


def test_two_checkpoints_share_one_model(pipe, tiny_checkpoints):
    from osum_echat.models.checkpoint import read_state_dict

    _, a, b = tiny_checkpoints
    variants = pipe.variants
    assert list(variants.aside) == ["speech_llama_proj.weight"]  # only what differs is kept aside
    proj = pipe.model.speech_llama_proj.weight
    assert torch.equal(proj, read_state_dict(a)["speech_llama_proj.weight"])
    key = ("turn",)
    pipe.model.history_cache.put(key, torch.ones(2, 3))  # encoder outputs of the weights in use ...
    pipe.use_variant("b")
    assert torch.equal(proj, read_state_dict(b)["speech_llama_proj.weight"])
    assert pipe.model.history_cache.get(key) is None  # ... are gone with them
    pipe.use_variant("a")
    assert torch.equal(proj, read_state_dict(a)["speech_llama_proj.weight"])
    with pytest.raises(ValueError):
        pipe.use_variant("c")
