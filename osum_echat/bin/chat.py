"""Talk to a checkpoint: one task on one utterance, or a conversation read from stdin.

  python -m osum_echat.bin.chat --checkpoint K [--config C] [--token2wav_dir D] \
      --task "<S2TCHAT> <TEXT2TOKEN> <THINK>" (--wav F | --text T) [--output_dir O] [--interactive] [--stream]
  python -m osum_echat.bin.chat --list-tasks

Prints the think chain and the answer (--stream: as they are decoded, the speech rendered meanwhile);
with --output_dir writes turn_N.json (task, text, think, speech tokens, notes, timings) and, when
token2wav is configured and the task speaks, turn_N.wav
(16-bit PCM; --wav_format float32 for float). Without --config the train.yaml beside the checkpoint is used.
--interactive reads one request a line from stdin (a wav path for speech tasks, a text line for
text tasks; "/reset" starts a new conversation) and keeps them as one conversation: the model's
answers are fed back as history for the speech-in/speech-out tasks that were trained with it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from osum_echat import tasks as task_table


def list_tasks(prompt_config: str = "conf/prompt_config.yaml", out=None) -> None:
    """The task table: tag, input, outputs, decode preset, user prompt examples."""
    from osum_echat.data.dataset import load_prompts

    out = out or sys.stdout
    try:
        prompts = load_prompts(prompt_config)
    except Exception:  # noqa: BLE001 - the table is still worth printing without prompts
        prompts = {}
    for spec in task_table.TASKS.values():
        outputs = [o for o, on in (("think", spec.think), ("text", spec.text_target),
                                   ("speech tokens", spec.speech_output)) if on]
        layout = " (interleaved)" if spec.streaming else ""
        print(f"{spec.tag}", file=out)
        print(f"  input: {spec.input}   outputs: {' + '.join(outputs)}{layout}   output_type: {spec.output_type}"
              f"   history: {'yes' if spec.embeds_history else 'no'}", file=out)
        print(f"  decode preset: {decode_preset(spec.decode)}", file=out)
        examples = prompts.get(spec.tag) or []
        if spec.uses_prompt and examples:
            print(f"  prompt examples: {' | '.join(examples[:2])}", file=out)
        elif not spec.uses_prompt:
            print("  prompt: none (the task reads no user prompt)", file=out)


def decode_preset(conf) -> str:
    """The preset's fields that differ from DecodeConfig's defaults (the caps always)."""
    default = type(conf)()
    shown = {f.name: getattr(conf, f.name) for f in dataclasses.fields(conf)
             if f.name in ("max_text_tokens", "max_speech_tokens", "do_sample")
             or getattr(conf, f.name) != getattr(default, f.name)}
    return " ".join(f"{k}={v}" for k, v in shown.items())


def print_result(result, out=None) -> None:
    out = out or sys.stdout
    print(f"task: {result.task} ({result.output_type}), history turns seen: {result.history_turns}", file=out)
    if result.think:
        print(f"think: {result.think}", file=out)
    print(f"answer: {result.text}", file=out)
    if result.speech_tokens:
        print(f"speech tokens: {len(result.speech_tokens)}", file=out)
    for note in result.notes:
        print(f"note: {note}", file=out)
    print("timings: " + ", ".join(f"{k} {v:.3f} s" for k, v in result.timings.items()), file=out)


def print_stream(events, out=None):
    """Prints the think chain and the answer as they are decoded (`ChatPipeline.stream` events), then
    what print_result prints after them; returns the Result."""
    out = out or sys.stdout
    shown, packets, result = None, 0, None
    for ev in events:
        if ev.kind in ("think_delta", "text_delta"):
            name = "think" if ev.kind == "think_delta" else "answer"
            if shown != name:
                print(("\n" if shown else "") + f"{name}: ", end="", file=out)
                shown = name
            print(ev.text, end="", file=out, flush=True)
        elif ev.kind == "audio":
            packets += 1
        elif ev.kind == "done":
            result = ev.result
    if shown:
        print(file=out)
    print(f"task: {result.task} ({result.output_type}), history turns seen: {result.history_turns}", file=out)
    if result.speech_tokens:
        print(f"speech tokens: {len(result.speech_tokens)}", file=out)
    if packets:
        print(f"audio: {packets} packets, the first after {result.timings['first_audio']:.3f} s", file=out)
    for note in result.notes:
        print(f"note: {note}", file=out)
    print("timings: " + ", ".join(f"{k} {v:.3f} s" for k, v in result.timings.items()), file=out)
    return result


def save_result(result, output_dir: str, n: int, wav_subtype: str = "PCM_16") -> list:
    from osum_echat.infer.audio_io import write_wav

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / f"turn_{n}.json"]
    written[0].write_text(json.dumps(result.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    if result.audio is not None and result.audio.numel():
        written.append(out / f"turn_{n}.wav")
        write_wav(written[-1], result.audio, result.sample_rate, wav_subtype)
    return written


def build_parser() -> argparse.ArgumentParser:
    from osum_echat.generation.options import add_decode_args
    from osum_echat.infer.audio_io import add_wav_format_arg

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list-tasks", action="store_true", help="print the task table and exit")
    ap.add_argument("--config", default=None, help="model config (default: train.yaml beside the checkpoint)")
    ap.add_argument("--checkpoint")
    ap.add_argument("--token2wav_dir", default=None, help="CosyVoice-300M-25Hz style folder: speak the answers")
    ap.add_argument("--speaker_prompt_wav", default=None, help="voice to speak with (token2wav front-end)")
    ap.add_argument("--task", default=task_table.DEFAULT_TASK)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--wav")
    src.add_argument("--text")
    ap.add_argument("--prompt", default=None, help="user prompt (understanding tasks; default: the table's)")
    ap.add_argument("--output_dir", default=None)
    add_wav_format_arg(ap)
    ap.add_argument("--interactive", action="store_true", help="read requests from stdin as one conversation")
    ap.add_argument("--stream", action="store_true",
                    help="print the think chain and the answer as they are decoded (speech rendered meanwhile)")
    ap.add_argument("--max_turns", type=int, default=None, help="history turns kept (default 5)")
    ap.add_argument("--max_context_tokens", type=int, default=None,
                    help="bound on the estimated prompt length; oldest turns dropped first")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--device", default=None, help="cuda | npu | cpu (default: detect)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    add_decode_args(ap)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.list_tasks:
        list_tasks()
        return 0
    from osum_echat.utils import fail

    from osum_echat.config import ConfigError, resolve_config

    if not args.checkpoint:
        fail("--checkpoint is required (or --list-tasks); the config defaults to the train.yaml beside it")
    try:
        config_path = resolve_config(args.config, args.checkpoint)
    except ConfigError as e:
        fail(str(e))
    if not args.interactive and args.wav is None and args.text is None:
        fail("give --wav FILE or --text TEXT (or --interactive to read them from stdin)")
    try:
        task = task_table.resolve_task(args.task)
    except task_table.UnknownTaskError as e:
        fail(str(e))
    if task != args.task.strip():
        print(f"note: --task {args.task.strip()!r} read as {task}", file=sys.stderr)

    from osum_echat.infer.audio_io import SUBTYPES
    from osum_echat.infer.conversation import Conversation
    from osum_echat.generation.options import decode_options_from_args
    from osum_echat.infer.runtime import ChatInputError, ChatPipeline
    from osum_echat.models.checkpoint import CheckpointError
    from osum_echat.train.devices import DeviceError

    try:
        pipe = ChatPipeline.from_files(config_path, args.checkpoint, args.token2wav_dir, device=args.device,
                                       dtype=args.dtype, overrides=args.override,
                                       speaker_prompt_wav=args.speaker_prompt_wav,
                                       decode_options=decode_options_from_args(args))
    except (ValueError, OSError, CheckpointError, DeviceError) as e:  # config, files, token2wav dir, prompt
        fail(str(e))
    kw = {k: v for k, v in (("max_turns", args.max_turns), ("max_context_tokens", args.max_context_tokens)) if v}
    conv = Conversation(pipe, task, **kw)

    def one(n, wav=None, text=None):
        if args.stream:
            result = print_stream(conv.say_stream(wav=wav, text=text, prompt=args.prompt))
        else:
            result = conv.say(wav=wav, text=text, prompt=args.prompt)
            print_result(result)
        if args.output_dir:
            for path in save_result(result, args.output_dir, n, SUBTYPES[args.wav_format]):
                print(f"wrote {path}")

    try:
        return _requests(args, conv, one, task)
    finally:
        pipe.close()  # the stream's decode loop ends before the interpreter does


def _requests(args, conv, one, task: str) -> int:
    """The one request, or (--interactive) the stdin lines as one conversation."""
    from osum_echat.infer.runtime import ChatInputError
    from osum_echat.utils import fail

    if not args.interactive:
        try:
            one(1, args.wav, args.text)
        except ChatInputError as e:
            fail(str(e))
        return 0
    n = 0
    if args.wav or args.text:
        n += 1
        try:
            one(n, args.wav, args.text)
        except ChatInputError as e:
            print(f"error: {e}", file=sys.stderr)
    speech = task_table.TASKS[task].speech_input
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        if line == "/reset":
            conv.reset()
            print("conversation reset")
            continue
        n += 1
        try:
            one(n, wav=line if speech else None, text=None if speech else line)
        except ChatInputError as e:
            print(f"error: {e}", file=sys.stderr)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
