"""Decode a data list with a trained OSUM-EChat checkpoint (one process; see infer_with_shards_or_raw.sh).

  python -m osum_echat.bin.infer --checkpoint exp/demo/stage1/final.pt --data_type raw \
      --data LIST --output exp/infer/text [--config YAML] [--cosyvoice_model_path DIR]

Writes OUT (key<TAB>text), OUT.jsonl, OUT.failed, OUT.report.json and OUT.report.txt (see
osum_echat/infer/batch.py); a rerun resumes. Without --config the train.yaml that training saved
beside the checkpoint is used. The task of each utterance comes from the list, as in training.
`--rank/--world_size` decode one share of the list and leave the merge to `--merge_only`.
Under torchrun (several processes or machines) each rank takes its share from RANK/WORLD_SIZE
and rank 0 merges once every rank's marker is there (osum_echat/job_ranks.py):
  torchrun --nnodes 2 --node_rank 0 --nproc_per_node 2 --master_addr HOST --master_port 29500 \
      -m osum_echat.bin.infer --checkpoint CKPT --data LIST --output OUT
Upstream's option names (--test_data_path --infer_res_path --checkpoint_path --gpu_id) work too.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from osum_echat.config import ConfigError, load_config, mismatch_message, resolve_config
from osum_echat.infer.audio_io import SUBTYPES, add_wav_format_arg
from osum_echat.generation.options import add_decode_args, decode_options_from_args
from osum_echat.job_ranks import JobRanks
from osum_echat.utils import fail

REPO_ROOT = Path(__file__).resolve().parents[2]
PATH_KEYS = ("llm_path", "prompt_conf_path")  # config entries naming files (at any depth)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="model config (default: train.yaml beside the checkpoint)")
    ap.add_argument("--checkpoint", "--checkpoint_path", dest="checkpoint", help="model .pt (ours or upstream's)")
    ap.add_argument("--data_type", default="raw", choices=["raw", "shard", "combine"])
    ap.add_argument("--data", "--test_data_path", dest="data", help="data list file")
    ap.add_argument("--root", default=None, help="folder relative paths in the list are read against "
                    "(default: the list's folder, then the working directory)")
    ap.add_argument("--output", "--infer_res_path", dest="output", required=True, help="result file (key<TAB>text)")
    ap.add_argument("--cosyvoice_model_path", default=None,
                    help="token2wav model folder: speech outputs are rendered to OUT_wavs/KEY.wav")
    ap.add_argument("--speaker_prompt_wav", default=None,
                    help="with --cosyvoice_model_path: the voice to render in (upstream uses its prompt.wav); "
                         "default: no speaker prompt")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", default=None, help="cuda | npu | cpu | cuda:N (default: detect)")
    ap.add_argument("--gpu_id", type=int, default=None, help="upstream's spelling of --device cuda:N")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--prompt", default=None, help="one fixed user prompt for every prompted task "
                    "(default: drawn per utterance from prompt_config by key and seed)")
    ap.add_argument("--num_workers", type=int, default=0, help="dataloader workers of this process")
    ap.add_argument("--rank", type=int, default=0, help="this process's share of the list")
    ap.add_argument("--world_size", type=int, default=1, help="processes the list is split over")
    ap.add_argument("--no_merge", action="store_true", help="decode this share only (the script merges)")
    ap.add_argument("--merge_only", action="store_true", help="merge the parts of --world_size processes, report")
    ap.add_argument("--per_device_processes", type=int, default=1,
                    help="under torchrun: processes sharing one GPU/NPU (local rank // N picks the device)")
    ap.add_argument("--merge_timeout", type=float, default=3600.0,
                    help="under torchrun: seconds rank 0 waits for the other ranks once its share is done "
                         "(and for all to start); then it merges what there is and names the missing ranks")
    add_wav_format_arg(ap)
    add_decode_args(ap)
    return ap


def config_path_for(args) -> str:
    try:
        return resolve_config(args.config, args.checkpoint)
    except ConfigError as e:
        fail(str(e))


def anchor_paths(node, config_dir: Path) -> None:
    """Relative file paths in the config: from the working directory, else the config's folder,
    else the repository root (configs name conf/... as upstream's do), so any cwd works."""
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if isinstance(value, dict):
            anchor_paths(value, config_dir)
        elif key in PATH_KEYS and isinstance(value, str) and value and not os.path.isabs(value):
            for base in (Path.cwd(), config_dir, REPO_ROOT):
                if (base / value).exists():
                    node[key] = str((base / value).resolve())
                    break


def load_setup(args, config_path: str):
    """(config, tokenizer): config mistakes are one error line, before anything else is read."""
    from osum_echat.tokenizer import load_tokenizer

    try:
        config = load_config(config_path, args.override)
        anchor_paths(config, Path(config_path).resolve().parent)
        return config, load_tokenizer(config["llm_path"])
    except ConfigError as e:
        fail(str(e))


def load_model(args, config: dict, config_path: str, tokenizer, device):
    """The model with the checkpoint's weights, for decoding; a checkpoint that does not fit is one
    error line naming both files and the fix."""
    import torch

    from osum_echat.models import load_for_inference
    from osum_echat.models.checkpoint import CheckpointError

    try:
        return load_for_inference(config, args.checkpoint, device, getattr(torch, args.dtype), tokenizer)
    except ConfigError as e:
        fail(str(e))
    except CheckpointError as e:
        fail(mismatch_message(config_path, args.checkpoint, e))
    except (OSError, RuntimeError, ValueError, AttributeError, KeyError) as e:  # not a model checkpoint at all
        fail(f"checkpoint {args.checkpoint} cannot be read as model weights ({type(e).__name__}: {e})")


# options that do not change what an utterance decodes to (a rerun may change them and resume)
NOT_IN_SIGNATURE = {"wav_format", "rank", "world_size", "no_merge", "merge_only", "num_workers", "device", "gpu_id",
                    "data", "output", "checkpoint", "config", "per_device_processes", "merge_timeout"}


def check_run_signature(args, config_path: str) -> None:
    """OUT.run.json records what produced OUT; resuming under another checkpoint, config, list or
    decoding option would mix two runs' results in one file, so that stops with one line."""
    ck = os.stat(args.checkpoint)
    signature = {"checkpoint": os.path.abspath(args.checkpoint), "checkpoint_bytes": ck.st_size,
                 "checkpoint_mtime": int(ck.st_mtime), "config": os.path.abspath(config_path),
                 "data": os.path.abspath(args.data),
                 **{k: v for k, v in sorted(vars(args).items()) if k not in NOT_IN_SIGNATURE}}
    path = Path(f"{args.output}.run.json")
    if path.exists():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            before = None
        if before is not None and before != signature:
            changed = sorted(k for k in set(before) | set(signature) if before.get(k) != signature.get(k))
            fail(f"{args.output} holds the results of another run ({', '.join(changed)} differ, see {path}); "
                 f"choose another --output, or delete {args.output}* to start over")
    tmp = f"{path}.tmp{os.getpid()}"
    Path(tmp).write_text(json.dumps(signature, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def load_token2wav(args, device):
    """(Token2Wav, speaker prompt or None); a missing or broken model folder is one error line."""
    from osum_echat.token2wav import Token2Wav
    from osum_echat.token2wav.token2wav import ModelDirError

    try:
        t2w = Token2Wav.from_dir(args.cosyvoice_model_path, device=device)
        speaker = t2w.prompt_from_wav(args.speaker_prompt_wav) if args.speaker_prompt_wav else None
    except (ModelDirError, OSError, ValueError) as e:
        fail(f"--cosyvoice_model_path {args.cosyvoice_model_path}: {e}")
    return t2w, speaker


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from osum_echat.infer.results import merge, print_summary

    if args.merge_only:
        print_summary(merge(args.output, args.world_size), args.output)
        return 0
    config_path = config_path_for(args)
    config, tokenizer = load_setup(args, config_path)
    if not args.data:
        fail("--data (or --test_data_path) is required")
    if not os.path.isfile(args.data):
        fail(f"data list '{args.data}' not found")
    if not args.checkpoint or not os.path.isfile(args.checkpoint):
        fail(f"checkpoint '{args.checkpoint}' not found")
    from osum_echat.generation.decode import Decoder
    from osum_echat.infer.batch import decode_part
    from osum_echat.train.devices import DeviceError, select_device

    job = None if args.no_merge else JobRanks.from_env(f"{args.output}.split{os.environ.get('WORLD_SIZE')}")
    if job is not None:
        args.rank, args.world_size = job.rank, job.world_size
    try:
        local = job.local_rank // max(1, args.per_device_processes) if job is not None else None
        device = select_device(f"cuda:{args.gpu_id}" if args.gpu_id is not None else args.device, local)
    except DeviceError as e:
        fail(str(e))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    check_run_signature(args, config_path)
    if job is not None:
        job.start(args.merge_timeout)
    model = load_model(args, config, config_path, tokenizer, device)
    token2wav, speaker = load_token2wav(args, device) if args.cosyvoice_model_path else (None, None)
    if token2wav is None and args.rank == 0:
        print("speech outputs: tokens only (no --cosyvoice_model_path given, nothing rendered)", file=sys.stderr)
    start = time.time()
    if job is not None and job.rank == 0:
        from osum_echat.infer.progress import watch_in_thread

        watcher = watch_in_thread(args.output, args.world_size, args.data, args.data_type)
    counts = decode_part(model, tokenizer, config, args.data_type, args.data, args.output,
                         decoder=Decoder(model, **decode_options_from_args(args)), root=args.root, rank=args.rank,
                         world_size=args.world_size, num_workers=args.num_workers, token2wav=token2wav, speaker=speaker,
                         fixed_prompt=args.prompt, wav_subtype=SUBTYPES[args.wav_format],
                         show_progress=job is None)  # under torchrun rank 0's watcher shows every rank
    if args.no_merge:
        return 0
    missing = []
    if job is not None:
        job.finish(counts)
        if job.rank != 0:
            job.close()
            return 0
        finished, missing = job.wait_all(args.merge_timeout)
        counts = {"decoded": sum(c["decoded"] for c in finished.values()),  # this run, every rank
                  "failed": sum(c["failed"] for c in finished.values()),
                  "seconds": max(c["seconds"] for c in finished.values())}
        watcher()
        job.close()
    report = merge(args.output, args.world_size)
    print_summary(report, args.output)
    n = counts["decoded"] + counts["failed"]
    print(f"summary: {report['decoded']}/{report['listed']} decoded, {sum(report['failed'].values())} failed; "
          f"this run {n} utterances in {time.time() - start:.1f} s ({n / max(counts['seconds'], 1e-9):.2f} utt/s)")
    if missing:
        print(f"error: rank(s) {', '.join(map(str, missing))} of {args.world_size} did not finish within "
              f"--merge_timeout {args.merge_timeout:g} s; their utterances not yet decoded are in neither "
              f"{args.output} nor {args.output}.failed: run the same command(s) again to resume", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
