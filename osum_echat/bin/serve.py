"""Serve a checkpoint: OpenAI Realtime API (WebSocket), OpenAI-compatible REST and a browser page.

  python -m osum_echat.bin.serve --checkpoint CKPT [--config YAML] [--token2wav_dir DIR] \
      [--host 127.0.0.1] [--port 8000] [--api_key KEY] [--max_sessions N]

--config defaults to the train.yaml saved beside the checkpoint. Without --token2wav_dir the server
answers in text only and says audio output is off. A --host other than loopback needs --api_key.
The model is loaded once, before the port opens: GET /healthz answers once it is loaded.
See docs/serving.md.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from pathlib import Path
import sys

from osum_echat import tasks as task_table


def build_parser() -> argparse.ArgumentParser:
    from osum_echat.generation.options import add_decode_args
    from osum_echat.serve.app import ServeSettings

    d = ServeSettings()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--config", default=None, help="model YAML (default: train.yaml beside the checkpoint)")
    ap.add_argument("--token2wav_dir", default=None, help="CosyVoice-300M-25Hz style folder; without it: text only")
    ap.add_argument("--checkpoint_b", default=None,
                    help="the other think checkpoint (tag/language think): sessions pick it with osum.variant 'b'")
    ap.add_argument("--token2wav_worker", default="process", choices=["process", "thread"],
                    help="where streamed token2wav runs: a process of its own (default; the decode loop keeps "
                         "its interpreter lock) or threads of the server process")
    ap.add_argument("--token2wav_nice", type=int, default=0,
                    help="niceness added to the token2wav process (> 0: the decode loop goes first on a busy CPU)")
    ap.add_argument("--token2wav_threads", type=int, default=None,
                    help="torch threads of the token2wav process (default: half of the server's, at least 1)")
    ap.add_argument("--token2wav_estimator", default="auto", choices=["auto", "torch", "onnx"],
                    help="backend of the flow's estimator, token2wav's heaviest part: onnx (ONNX Runtime, exported "
                         "from the loaded weights at start; CPU, float32) or torch. auto: onnx for a float32 "
                         "token2wav on the CPU (torch, with a warning, if the export fails), else torch")
    ap.add_argument("--speaker_prompt_wav", default=None, help="voice to speak with (token2wav front-end)")
    ap.add_argument("--voices_dir", default=None,
                    help="NAME.wav speaker prompts; a session picks one with session.audio.output.voice NAME")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--api_key", default=os.environ.get("OSUM_API_KEY"),
                    help="required from clients as 'Authorization: Bearer KEY' (default: $OSUM_API_KEY)")
    ap.add_argument("--model_name", default=d.model_name, help="the model id clients see")
    ap.add_argument("--task", default=None, help="a realtime session's task until session.update changes it "
                    f"(default: the task the checkpoint's stage trained on most, else {d.task})")
    ap.add_argument("--max_sessions", type=int, default=d.max_sessions)
    ap.add_argument("--max_message_bytes", type=int, default=d.max_message_bytes)
    ap.add_argument("--max_turn_audio_s", type=float, default=d.max_turn_audio_s)
    ap.add_argument("--idle_timeout_s", type=float, default=d.idle_timeout_s)
    ap.add_argument("--max_session_s", type=float, default=d.max_session_s)
    ap.add_argument("--send_queue", type=int, default=d.send_queue,
                    help="server events queued for one client; a client that falls further behind is closed")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--device", default=None, help="cuda | npu | cpu (default: detect)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--log_level", default="info")
    add_decode_args(ap)
    return ap


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def settings_from_args(args):
    from osum_echat.serve.app import ServeSettings

    task = args.task or ServeSettings.task
    return ServeSettings(model_name=args.model_name, api_key=args.api_key or None, task=task,
                         max_sessions=args.max_sessions, max_message_bytes=args.max_message_bytes,
                         max_turn_audio_s=args.max_turn_audio_s, idle_timeout_s=args.idle_timeout_s,
                         max_session_s=args.max_session_s, send_queue=args.send_queue)


def main(argv=None) -> int:
    from osum_echat.utils import fail

    args = build_parser().parse_args(argv)
    if not is_loopback(args.host) and not args.api_key:
        fail(f"--host {args.host} is not a loopback address: set --api_key KEY (or $OSUM_API_KEY) so that "
             "only clients with the key can use the model")
    if args.task is None:
        from osum_echat.infer.trained_tasks import default_task
        args.task, why = default_task(args.checkpoint, settings_from_args(args).task)
        print(f"session task {args.task} ({why}); --task or session.update osum.task change it", file=sys.stderr)
    try:
        args.task = task_table.resolve_task(args.task)
    except task_table.UnknownTaskError as e:
        fail(f"--task: {e}")
    for name in ("max_sessions", "max_message_bytes", "send_queue"):
        if getattr(args, name) < 1:
            fail(f"--{name} must be at least 1")
    if args.voices_dir and not Path(args.voices_dir).is_dir():
        fail(f"--voices_dir {args.voices_dir} is not a directory")
    try:  # the port first: a busy port is found before minutes of loading
        with socket.create_server((args.host, args.port)):
            pass
    except OSError as e:
        fail(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}")

    import uvicorn

    from osum_echat.config import resolve_config
    from osum_echat.generation.options import decode_options_from_args
    from osum_echat.infer.runtime import ChatPipeline
    from osum_echat.models.checkpoint import CheckpointError
    from osum_echat.serve.app import create_app
    from osum_echat.serve.engine import Engine
    from osum_echat.train.devices import DeviceError

    try:
        config = resolve_config(args.config, args.checkpoint)  # --config, else the train.yaml beside it
        pipe = ChatPipeline.from_files(config, args.checkpoint, args.token2wav_dir, device=args.device,
                                       dtype=args.dtype, overrides=args.override,
                                       speaker_prompt_wav=args.speaker_prompt_wav, checkpoint_b=args.checkpoint_b,
                                       decode_options=decode_options_from_args(args))
    except (ValueError, OSError, CheckpointError, DeviceError) as e:
        fail(str(e))
    if pipe.token2wav is None:
        print("no --token2wav_dir: audio output is off (text answers only)", file=sys.stderr)
    elif args.token2wav_worker == "process":
        from osum_echat.token2wav.worker import VoiceWorker
        try:
            pipe.voice_worker = VoiceWorker(args.token2wav_dir, device=pipe.token2wav.device, dtype=args.dtype,
                                            nice=args.token2wav_nice, threads=args.token2wav_threads,
                                            estimator=args.token2wav_estimator)
            print(f"token2wav in its own process (pid {pipe.voice_worker.pid}, {pipe.voice_worker.threads} "
                  f"thread(s), {pipe.voice_worker.estimator} estimator)", file=sys.stderr)
        except (ValueError, RuntimeError) as e:
            fail(str(e))
    else:
        try:
            backend = pipe.token2wav.use_estimator(args.token2wav_estimator)
        except (ValueError, RuntimeError, ImportError) as e:
            fail(f"--token2wav_estimator {args.token2wav_estimator}: {e}")
        print(f"token2wav in the server process ({backend} estimator)", file=sys.stderr)
    app = create_app(Engine(pipe, args.voices_dir), settings_from_args(args))
    print(f"serving {args.model_name} on http://{args.host}:{args.port} (WebSocket /v1/realtime, REST /v1)",
          file=sys.stderr, flush=True)
    # no permessage-deflate: audio deltas are base64 PCM, which deflate barely shrinks for the CPU
    # it costs on both ends (measured: ~12% of the server's event-loop samples at 4 sessions)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, ws="websockets-sansio",
                ws_max_size=args.max_message_bytes, ws_per_message_deflate=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
