"""Evaluate checkpoints on an empathy benchmark: decode once, check the spoken replies, judge, report.

  python -m osum_echat.bin.evaluate --suite echat --data LIST --checkpoint A.pt [--checkpoint B.pt] \
      [--config YAML] [--token2wav_dir DIR] --judge_base_url URL --judge_model NAME --output DIR

Suites: echat (this project's data lists), sd_eval, echomind, vstyle (their released files as they
are; see docs/evaluation.md). Without --judge_base_url only the objective checks and exact scores
run. The judge key is read from $OPENAI_API_KEY (or the variable --judge_api_key_env names; local
endpoints take any key). --rescore reruns only the scoring on the decoded outputs already in DIR;
when every judge answer is cached it needs no judge at all. Writes DIR/report.json, DIR/report.md
and DIR/<suite>.png.
"""
from __future__ import annotations

import argparse
import sys

from osum_echat.generation.options import add_decode_args, decode_options_from_args
from osum_echat.utils import fail


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", required=True, help="echat | sd_eval | echomind | vstyle")
    ap.add_argument("--data", required=True, help="the suite's data file (or folder)")
    ap.add_argument("--checkpoint", action="append", required=True,
                    help="model .pt; repeat to compare several side by side")
    ap.add_argument("--config", default=None, help="model config (default: train.yaml beside each checkpoint)")
    ap.add_argument("--token2wav_dir", default=None, help="token2wav model folder: replies rendered to wavs, "
                    "which the objective checks transcribe and classify")
    ap.add_argument("--scorer_checkpoint", default=None, help="checkpoint whose <TRANSCRIBE> and <EMOTION> "
                    "hear the reply audio (default: each evaluated checkpoint itself); its config: the "
                    "train.yaml beside it, else --config")
    ap.add_argument("--audio_root", default=None, help="folder the suite's relative audio paths start from")
    ap.add_argument("--output", required=True, help="output folder")
    ap.add_argument("--rescore", action="store_true", help="score the decoded outputs in --output again")
    ap.add_argument("--device", default=None, help="cuda | npu | cpu (default: detect)")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    j = ap.add_argument_group("judge (any OpenAI-compatible chat endpoint)")
    j.add_argument("--judge_base_url", default=None, help="e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1")
    j.add_argument("--judge_model", default=None, help="model name sent to the endpoint (recorded in the report)")
    j.add_argument("--judge_api_key_env", default="OPENAI_API_KEY", help="environment variable holding the key")
    j.add_argument("--judge_temperature", type=float, default=0.0)
    j.add_argument("--judge_seed", type=int, default=1337)
    j.add_argument("--judge_max_tokens", type=int, default=None)
    j.add_argument("--judge_concurrency", type=int, default=4, help="requests in flight at most")
    j.add_argument("--judge_retries", type=int, default=4, help="retries on 429 / 5xx / timeouts / refused connections")
    j.add_argument("--judge_backoff", type=float, default=1.0, help="seconds before the first retry (doubled each time)")
    j.add_argument("--judge_timeout", type=float, default=120.0, help="seconds per request")
    add_decode_args(ap)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from osum_echat.eval.judge import JudgeConfig
    from osum_echat.eval.rubric import RubricError
    from osum_echat.eval.run import EvalError, Setup, evaluate
    from osum_echat.eval.suites import SuiteFormatError

    judge = None
    if args.judge_base_url:
        if not args.judge_model:
            fail("--judge_base_url needs --judge_model (the model name the endpoint serves)")
        judge = JudgeConfig(base_url=args.judge_base_url, model=args.judge_model, api_key_env=args.judge_api_key_env,
                            temperature=args.judge_temperature, seed=args.judge_seed, max_tokens=args.judge_max_tokens,
                            concurrency=args.judge_concurrency, retries=args.judge_retries,
                            backoff=args.judge_backoff, timeout=args.judge_timeout)
    setup = Setup(suite=args.suite, data=args.data, checkpoints=args.checkpoint, output=args.output,
                  config=args.config, audio_root=args.audio_root, token2wav_dir=args.token2wav_dir,
                  scorer_checkpoint=args.scorer_checkpoint, judge=judge, rescore=args.rescore, device=args.device,
                  overrides=args.override, decode_options=decode_options_from_args(args))
    try:
        report = evaluate(setup)
    except (EvalError, SuiteFormatError, RubricError) as e:
        fail(str(e))
    from osum_echat.eval.judged_report import format_markdown

    sys.stdout.write(format_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
