"""Web demo: talk to a checkpoint in the browser.

  python -m osum_echat.bin.demo_web --checkpoint K [--config C] [--token2wav_dir D] [--port 7860]
      [--checkpoint_b K2]   the other think checkpoint (tag / language), switched on the page;
                            both share one model, B costs only the weights where it differs
      [--host 127.0.0.1] [--max_file_size 10mb] [--max_seconds 30]

Binds to 127.0.0.1 unless --host says otherwise. Each browser tab keeps its own conversation.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from osum_echat.generation.options import add_decode_args, decode_options_from_args


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="model config (default: train.yaml beside --checkpoint)")
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--checkpoint_b", default=None, help="a second checkpoint of the same model (the other think style)")
    ap.add_argument("--token2wav_dir", default=None)
    ap.add_argument("--speaker_prompt_wav", default=None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--max_file_size", default="10mb", help="upload limit (gradio size string)")
    ap.add_argument("--max_seconds", type=float, default=None,
                    help="longest user audio accepted (default: the task preset's max_audio_frames, 30 s)")
    ap.add_argument("--max_turns", type=int, default=5)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    add_decode_args(ap)
    args = ap.parse_args(argv)

    from osum_echat.config import ConfigError, resolve_config
    from osum_echat.infer.runtime import HELPER_TASKS, ChatPipeline
    from osum_echat.infer.trained_tasks import default_task
    from osum_echat.infer.web_demo import DemoServer, build_demo
    from osum_echat.models.checkpoint import CheckpointError
    from osum_echat.train.devices import DeviceError
    from osum_echat.utils import fail

    try:
        config_path = resolve_config(args.config, args.checkpoint)
    except ConfigError as e:
        fail(str(e))
    try:
        pipe = ChatPipeline.from_files(config_path, args.checkpoint, args.token2wav_dir, device=args.device,
                                       dtype=args.dtype, overrides=args.override, checkpoint_b=args.checkpoint_b,
                                       speaker_prompt_wav=args.speaker_prompt_wav, max_audio_seconds=args.max_seconds,
                                       decode_options=decode_options_from_args(args))
    except (ValueError, OSError, CheckpointError, DeviceError) as e:  # config, files, token2wav dir, prompt
        fail(str(e))
    names = [Path(p).stem for p in (args.checkpoint, args.checkpoint_b) if p]
    if len(names) == 2 and names[0] == names[1]:
        names = [str(Path(args.checkpoint)), str(Path(args.checkpoint_b))]
    defaults = []
    for path in (p for p in (args.checkpoint, args.checkpoint_b) if p):
        tag, why = default_task(path, HELPER_TASKS["s2s"])
        print(f"{path}: default task {tag} ({why})", flush=True)
        defaults.append(tag)
    demo = build_demo(DemoServer(pipe, names, args.max_turns, defaults), args.max_file_size)
    print(f"serving on http://{args.host}:{args.port}", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=args.max_file_size, show_error=True,
                quiet=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
