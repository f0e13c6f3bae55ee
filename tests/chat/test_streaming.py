"""ChatPipeline.stream on the tiny random checkpoint and tiny token2wav: the same ids as run(), deltas
that add up, audio while the LLM still decodes, cancel, and concurrent streams sharing one batch."""
import threading
import time

import numpy as np
import pytest

from osum_echat import tasks as task_table
from osum_echat.infer.conversation import Conversation
from osum_echat.infer.runtime import ChatInputError, ChatPipeline
from osum_echat.infer.streaming import EVENT_KINDS, TextDeltas

# one task per output type the decoder knows: text, chat, think, T2T, TTS, TTS interleaved, S2S, S2S think,
# S2S interleaved (6:18)
OUTPUT_TYPES = ["<TRANSCRIBE>", "<S2TCHAT>", "<S2TCHAT> <THINKER>", "<TEXT2TEXT>", "<TEXT2TOKEN>",
                "<TEXT2TOKEN> <STREAMING>", "<S2TCHAT> <TEXT2TOKEN>", "<S2TCHAT> <TEXT2TOKEN> <THINK>",
                "<S2TCHAT> <TEXT2TOKEN> <STREAMING>"]
CAPS = dict(max_text_tokens=8, max_speech_tokens=40, greedy=True)


@pytest.fixture(scope="module")
def pipe(tiny_checkpoints, tiny_token2wav):
    config, a, _ = tiny_checkpoints
    p = ChatPipeline.from_files(config, a, tiny_token2wav, device="cpu")
    yield p
    p.scheduler.close()


def request(tag, wavs):
    return dict(wav=wavs["q"]) if task_table.TASKS[tag].speech_input else dict(text="hello there")


def joined(events, kind, field="text"):
    parts = [getattr(e, field) for e in events if e.kind == kind]
    return "".join(parts) if field == "text" else [t for p in parts for t in p]


@pytest.mark.parametrize("tag", OUTPUT_TYPES)
def test_stream_gives_the_ids_run_gives_and_deltas_add_up(pipe, wavs, tag):
    spec = task_table.TASKS[tag]
    solo = pipe.run(tag, **request(tag, wavs), **CAPS)
    events = list(pipe.stream(tag, **request(tag, wavs), **CAPS))
    assert [e.kind for e in events].count("done") == 1 and events[-1].kind == "done"
    assert {e.kind for e in events} <= set(EVENT_KINDS)
    r = events[-1].result
    assert (r.text, r.think, r.speech_tokens) == (solo.text, solo.think, solo.speech_tokens)
    assert r.output_type == solo.output_type and not r.cancelled
    assert joined(events, "text_delta") == r.text
    think = joined(events, "think_delta")
    if spec.think and r.think:
        assert think == r.think
    elif spec.think:  # the random model never closes its chain: streamed as think, in the end all answer
        assert r.text.startswith(think)
    else:
        assert think == "" == r.think
    assert joined(events, "speech_tokens", "tokens") == r.speech_tokens
    audio = [e.audio for e in events if e.kind == "audio"]
    if spec.speech_output:
        assert len(r.speech_tokens) == 40  # a random model fills the cap
        assert all(a.dtype == np.float32 and a.ndim == 1 for a in audio) and len(audio) >= 3  # 3 windows
        assert r.audio.numel() == sum(len(a) for a in audio) == solo.audio.numel()
        assert events[0].kind != "audio" and 0 < r.timings["first_audio"] <= r.timings["total"]
    else:
        assert not audio and r.audio is None and r.speech_tokens == []
    if r.text:
        assert 0 < r.timings["first_text"] <= r.timings["total"]
    # the dict view the server reads: {"type": kind, ...}
    assert events[-1]["type"] == "done" and events[-1]["result"] is r and events[-1]["cancelled"] is False
    assert all(e["samples"] is e.audio and e["sample_rate"] == 22050 for e in events if e.kind == "audio")
    assert [e.to_dict()["tokens"] for e in events if e.kind == "speech_tokens"] == [list(e.tokens) for e in events
                                                                                   if e.kind == "speech_tokens"]


@pytest.mark.parametrize("tag", ["<S2TCHAT> <TEXT2TOKEN>", "<S2TCHAT> <TEXT2TOKEN> <STREAMING>"])
def test_first_audio_comes_while_the_llm_is_still_decoding(pipe, wavs, tag):
    """The decode loop is held after 12 speech codes until the consumer has an audio packet: audio
    that arrives then was rendered from the first codes while the LLM had more to decode."""
    llm = pipe.model.base_llm().model
    heard, waited_out = threading.Event(), []

    def hold(module, args, kwargs):
        active = pipe.scheduler._active
        codes = len(active[0].row.history["speech"]) if active else 0
        if codes >= 12 and not heard.is_set():
            waited_out.append(not heard.wait(30))

    handle = llm.register_forward_pre_hook(hold, with_kwargs=True)
    try:
        events = []
        for e in pipe.stream(tag, wav=wavs["q"], max_text_tokens=12, max_speech_tokens=60, greedy=True):
            events.append(e)
            if e.kind == "audio":
                heard.set()
    finally:
        handle.remove()
    kinds = [e.kind for e in events]
    first_audio = kinds.index("audio")
    codes_before = sum(len(e.tokens) for e in events[:first_audio] if e.kind == "speech_tokens")
    assert waited_out == [False]  # the hold was reached and released by audio, not by its timeout
    assert 10 <= codes_before < 60 and "speech_tokens" in kinds[first_audio:]
    text_at = [i for i, k in enumerate(kinds) if k in ("text_delta", "think_delta")]
    if tag.endswith("<STREAMING>"):  # 6 text ids, then speech: the first audio is within the first speech chunk
        assert codes_before <= task_table.STREAM_SPEECH_CHUNK
    else:  # text then speech: the whole text is out (at the text eos) before the first code
        assert text_at and max(text_at) < kinds.index("speech_tokens")


def test_cancel_stops_the_llm_row_and_token2wav(pipe, wavs):
    cancel = threading.Event()
    steps_before = pipe.scheduler.steps
    events = []
    for e in pipe.stream("<S2TCHAT> <TEXT2TOKEN>", wav=wavs["q"], cancel=cancel, max_text_tokens=4,
                         max_speech_tokens=1500, greedy=True):
        events.append(e)
        if e.kind == "audio":
            cancel.set()
    kinds = [e.kind for e in events]
    assert kinds[-2:] == ["audio", "done"] and kinds.count("audio") == 1  # nothing after the cancel but done
    r = events[-1].result
    assert r.cancelled and "cancelled" in r.notes[-1]
    assert pipe.scheduler.active_rows() == 0  # the row has left the batch
    assert not [t for t in threading.enumerate() if t.name == "osum-token2wav"]  # token2wav has stopped
    assert r.speech_tokens == joined(events, "speech_tokens", "tokens") and len(r.speech_tokens) < 1500
    assert r.audio.numel() == len(events[-2].audio) and r.text == joined(events, "text_delta")
    steps = pipe.scheduler.steps
    assert steps - steps_before < 4 + 1500
    time.sleep(0.2)
    assert pipe.scheduler.steps == steps  # no more decode steps


def test_closing_the_generator_cancels_the_row(pipe, wavs):
    gen = pipe.stream("<TEXT2TOKEN>", text="hello there", max_speech_tokens=1500, greedy=True)
    assert next(e for e in gen if e.kind == "speech_tokens")
    gen.close()
    deadline = time.time() + 10
    while pipe.scheduler.active_rows() and time.time() < deadline:
        time.sleep(0.01)
    assert pipe.scheduler.active_rows() == 0


def test_stream_raises_the_errors_run_raises(pipe, wavs):
    for kw, reason in [(dict(task="<TRANSCRIBE>", wav=wavs["not_audio"]), "not_audio"),
                       (dict(task="<TRANSCRIBE>", wav=wavs["long"]), "audio_too_long"),
                       (dict(task="<TEXT2TEXT>", text="  "), "empty_text"),
                       (dict(task="<TRANSCRIBE>"), "missing_input"),
                       (dict(task="<TRANSCRIBE>", wav=wavs["q"], topk=3), "bad_decode_option")]:
        with pytest.raises(ChatInputError) as e:
            list(pipe.stream(**kw))
        assert e.value.reason == reason
    with pytest.raises(ChatInputError) as e:  # a prompt longer than the context, found by the decoder
        list(pipe.stream("<TRANSCRIBE>", wav=wavs["q"], max_audio_frames=10))
    assert e.value.reason == "audio_too_long"


def test_concurrent_streams_share_the_batch_and_get_their_solo_ids(pipe, wavs):
    """Four requests of different tasks and lengths; each later one starts while the earlier ones
    decode (the loop is held until it has joined), so they step as one batch."""
    asks = [("<S2TCHAT> <TEXT2TOKEN>", dict(wav=wavs["q"], max_text_tokens=10, max_speech_tokens=50)),
            ("<TRANSCRIBE>", dict(wav=wavs["q2"], max_text_tokens=30)),
            ("<TEXT2TOKEN>", dict(text="good morning to you", max_speech_tokens=25)),
            ("<S2TCHAT> <TEXT2TOKEN> <STREAMING>", dict(wav=wavs["q2"], max_text_tokens=9, max_speech_tokens=45))]
    solo = [pipe.run(tag, greedy=True, **kw) for tag, kw in asks]
    sched = pipe.scheduler
    llm = pipe.model.base_llm().model
    started = [threading.Event() for _ in asks]
    joined_rows = []

    def hold(module, args, kwargs):  # a decode step waits until the next request is queued
        n = sum(e.is_set() for e in started)
        if n < len(asks) and sched.active_rows() == n and kwargs["inputs_embeds"].shape[1] == 1:
            started[n].wait(30)
            joined_rows.append(n)

    results = [None] * len(asks)

    def consume(i):
        tag, kw = asks[i]
        for e in pipe.stream(tag, key=f"r{i}", greedy=True, **kw):
            if e.kind == "done":
                results[i] = e.result

    handle = llm.register_forward_pre_hook(hold, with_kwargs=True)
    threads = []
    try:
        for i in range(len(asks)):
            threads.append(threading.Thread(target=consume, args=(i,)))
            threads[-1].start()
            while sched.pending() == 0 and sched.active_rows() <= i and threads[-1].is_alive():
                time.sleep(0.005)
            started[i].set()
            time.sleep(0.05)
        for t in threads:
            t.join(60)
    finally:
        handle.remove()
    assert sched.max_batch >= 3
    for got, want in zip(results, solo):
        assert (got.text, got.speech_tokens) == (want.text, want.speech_tokens)
        assert (got.audio is None) == (want.audio is None)
        assert got.audio is None or got.audio.numel() == want.audio.numel()
    assert pipe.voice_batcher.rows >= pipe.voice_batcher.solves > 0  # their windows went through the batcher


def test_text_deltas_cut_pieces_where_the_text_is_whole(tiny_tokenizer):
    text = task_table.THINK_OPEN + "想一想 ok" + task_table.THINK_CLOSE + "好的, fine 😀!"
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    deltas = TextDeltas(tiny_tokenizer, think_task=True)
    pairs = [deltas.push(i) for i in ids]
    from osum_echat.generation.decode import split_think
    think, answer = split_think(tiny_tokenizer.decode(ids))
    pairs.append(deltas.finish(think, answer))
    assert "".join(t for t, _ in pairs) == think == "想一想 ok"
    assert "".join(a for _, a in pairs) == answer == "好的, fine 😀!"
    assert all("\ufffd" not in t + a and "<" not in t for t, a in pairs)
    assert sum(bool(a) for _, a in pairs) > 2  # the answer came in pieces, not at the end


def test_text_deltas_send_an_unclosed_think_chain_once(tiny_tokenizer):
    # the demo's tiny think checkpoints often never write THINK_CLOSE: split_think (upstream's rule) then
    # calls the whole text, "<think>" included, the answer; the stream has already sent it as think
    text = task_table.THINK_OPEN + "<FEMALE><SAD>i am sorry to hear that"
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    deltas = TextDeltas(tiny_tokenizer, think_task=True)
    pairs = [deltas.push(i) for i in ids]
    from osum_echat.generation.decode import split_think
    think, answer = split_think(tiny_tokenizer.decode(ids))
    assert think == "" and answer == text
    pairs.append(deltas.flush())  # the text eos, as the stream calls it
    pairs.append(deltas.finish(think, answer))
    assert "".join(t for t, _ in pairs) == "<FEMALE><SAD>i am sorry to hear that"
    assert "".join(a for _, a in pairs) == ""


def test_conversation_keeps_a_streamed_turn_and_only_the_sent_part_of_a_cancelled_one(pipe, wavs):
    conv = Conversation(pipe, "<S2TCHAT> <TEXT2TOKEN>")
    done = [e for e in conv.say_stream(wav=wavs["q"], max_text_tokens=6, max_speech_tokens=20, greedy=True)
            if e.kind == "done"][0].result
    assert len(conv.turns) == 1 and conv.turns[0].speech_tokens == done.speech_tokens
    cancel = threading.Event()
    for e in conv.say_stream(wav=wavs["q2"], cancel=cancel, max_text_tokens=6, max_speech_tokens=1500, greedy=True):
        if e.kind == "audio":
            cancel.set()
        if e.kind == "done":
            cut = e.result
    assert cut.cancelled and cut.history_turns == 1 and len(conv.turns) == 2
    assert conv.turns[1].speech_tokens == cut.speech_tokens and 10 <= len(cut.speech_tokens) < 1500
    played = pipe.token2wav.num_samples(7)  # the user heard the first 7 tokens' audio
    turn = conv.truncate(played / pipe.token2wav.sample_rate)
    assert turn is conv.turns[1] and turn.speech_tokens == cut.speech_tokens[:7]
    assert len(turn.text) <= len(cut.text)


def test_chat_cli_streams_the_answer_it_gives_without_stream(tiny_checkpoints, tiny_token2wav, wavs, tmp_path,
                                                            capsys):
    import json

    import soundfile as sf

    from osum_echat.bin import chat as chat_cli

    config, a, _ = tiny_checkpoints
    base = ["--config", config, "--checkpoint", a, "--token2wav_dir", tiny_token2wav, "--device", "cpu",
            "--task", "<S2TCHAT> <TEXT2TOKEN>", "--wav", wavs["q"], "--greedy", "--max_text_tokens", "6",
            "--max_speech_tokens", "30"]
    assert chat_cli.main(base + ["--output_dir", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    assert chat_cli.main(base + ["--stream", "--output_dir", str(tmp_path / "stream")]) == 0
    streamed = capsys.readouterr().out
    assert "speech tokens: 30" in streamed and "answer: " in streamed
    assert "audio: 3 packets, the first after" in streamed  # windows at 10, 25 and 30 codes
    plain, stream = (json.loads((tmp_path / d / "turn_1.json").read_text()) for d in ("plain", "stream"))
    assert {k: plain[k] for k in ("text", "think", "speech_tokens")} == {k: stream[k] for k in ("text", "think",
                                                                                                   "speech_tokens")}
    samples, rate = sf.read(tmp_path / "stream" / "turn_1.wav")
    assert rate == 22050 and len(samples) == 256 * (30 * 22050 // (25 * 256))
