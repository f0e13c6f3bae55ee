"""Progress lines: a short batch run shows its count moving (it printed `0/48 ... 0.00 utt/s` and
nothing more when the run took under 30 s); rate from the first result; ETA; failures named."""
import io
import json
import os
import threading
import time

from osum_echat.infer.results import Part
from osum_echat.progress import Progress, name_failures


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_log_lines_at_first_result_each_tenth_and_rate_from_the_first_result():
    clock, out = Clock(), io.StringIO()
    bar = Progress(20, desc="decode", stream=out, tty=False, clock=clock)
    clock.t = 10.0  # 10 s of model loading before anything is done
    bar.update(1)
    for i in range(2, 21):  # then one per second
        clock.t = 10.0 + (i - 1)
        bar.update(1, failed=1 if i == 7 else 0)
    lines = out.getvalue().splitlines()
    # first result, then at 2, 4, ... 20 of 20 (each 10%)
    assert [line.split()[1] for line in lines] == ["1/20", *[f"{n}/20" for n in range(2, 21, 2)]]
    # at 5/20 (t=14): 4 more in 4 s since the first result -> 1.00 utt/s, 15 left -> ETA 15s
    clock.t, bar.done = 14.0, 5
    assert bar.status() == "5/20 utt (25%), 1.00 utt/s, ETA 15s, 1 failed, 14s elapsed"
    clock.t, bar.done = 29.0, 20
    assert bar.close() == "decode: done, 20/20 utt (100%), 1.00 utt/s, 1 failed, 29s elapsed"


def test_without_a_total_a_line_every_interval_while_moving():
    clock, out = Clock(), io.StringIO()
    bar = Progress(None, stream=out, tty=False, every_s=30, clock=clock)
    for t in range(1, 100):
        clock.t = float(t)
        bar.update(1)
    assert [line.split()[0] for line in out.getvalue().splitlines()] == ["1", "31", "61", "91"]
    assert "ETA" not in out.getvalue() and "%" not in out.getvalue()


def test_terminal_line_is_rewritten_in_place():
    clock, out = Clock(), io.StringIO()
    bar = Progress(4, stream=out, tty=True, clock=clock)
    for t in range(1, 5):
        clock.t = float(t)
        bar.update(1)
        bar.write("a log line") if t == 2 else None
    bar.close()
    text = out.getvalue()
    assert text.count("\n") == 2 and "\r4/4 utt (100%)" in text and "a log line\n" in text


def test_name_failures_first_keys_reasons_and_where_the_rest_are(tmp_path):
    path = tmp_path / "text.failed"
    assert name_failures(str(path)) == ""
    path.write_text("".join(f"k{i}\treason{i}\n" for i in range(7)))
    assert name_failures(str(path), limit=2) == (f"7 failed: k0 (reason0), k1 (reason1) and 5 more; "
                                                 f"the full list: {path}")
    tsv = tmp_path / "skipped.tsv"  # extract_speech_tokens' layout: reason, where, key, detail
    tsv.write_text("reason\twhere\tkey\tdetail\nmissing_file\tl:3\tgone\tx\nbad_json\tl:9\t\ty\n")
    assert name_failures(str(tsv), what="skipped", key_col=2, reason_col=0, where_col=1, header=True) == (
        f"2 skipped: gone (missing_file), l:9 (bad_json); the full list: {tsv}")


def test_batch_watcher_shows_a_short_run_moving(tmp_path, capsys):
    """The watcher the batch script runs, on a 4 s run of 40 utterances written by 2 processes:
    lines in between 0 and 40 must appear (it printed only `0/40` before: one line every 30 s)."""
    from osum_echat.infer.progress import watch

    out = str(tmp_path / "text")
    parts = [Part.of(out, r, 2) for r in range(2)]
    os.makedirs(os.path.dirname(parts[0].jsonl))

    def workers():
        time.sleep(1.0)  # loading
        for i in range(40):
            part = parts[i % 2]
            with open(part.failed if i == 13 else part.jsonl, "a") as f:
                f.write(json.dumps({"key": f"u{i}"}) + "\n")
            time.sleep(0.1)
        open(os.path.join(f"{out}.split2", ".done"), "w").close()

    writer = threading.Thread(target=workers)
    writer.start()
    watch(out, 2, 40)
    writer.join()
    captured = capsys.readouterr()
    text = captured.out + captured.err
    counts = [int(line.split()[1].split("/")[0]) for line in text.splitlines() if line.startswith("decode: ")
              and "/40 utt" in line and "done," not in line]
    assert len([n for n in counts if 0 < n < 40]) >= 5, text
    assert counts == sorted(counts) and "ETA" in text
    assert "decode: done, 40/40 utt (100%)" in text and "1 failed" in text
