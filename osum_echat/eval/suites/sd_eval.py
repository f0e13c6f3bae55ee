"""SD-Eval (https://github.com/amphionspace/SD-Eval): its released subset JSON files as they are.

Each file (data/test-emo.json, test-acc.json, test-age.json, test-env.json) is a list of
  {"wav_path": path relative to the audio root, "transcript": what the user said, "utt_id": ...,
   "info": the paralinguistic label (emotion, accent, age or background sound), "dataset_name": ...,
   "target": [{"reply": a reference reply, "reply_emotion": ...}, ...]}
The subset is the file's name; --data is one such file or a folder holding them. --audio_root is the
folder wav_path is relative to (default: the JSON file's folder). Replies are judged with the
subset's rubric (rubrics/sd_eval_<subset>.txt: 1-10, "Rating: [[N]]"); `info` is given title-cased,
as SD-Eval's llm_eval.py does.
"""
from __future__ import annotations

import glob
import os

from . import SPOKEN_REPLY_TASK, Item, Suite, SuiteFormatError, audio_path, load_json, need, register

SUBSETS = ("test-emo", "test-acc", "test-age", "test-env")


class SDEval(Suite):
    name = "sd_eval"
    description = "SD-Eval: emotion, accent, age, background sound (judge 1-10)"

    def files(self, path: str) -> list:
        if os.path.isdir(path):
            found = sorted(p for p in glob.glob(os.path.join(path, "test-*.json"))
                           if os.path.basename(p)[:-5] in SUBSETS)
            if not found:
                raise SuiteFormatError(f"sd_eval: no {', '.join(s + '.json' for s in SUBSETS)} in folder {path}")
            return found
        if not os.path.isfile(path):
            raise SuiteFormatError(f"sd_eval: file {path} not found")
        return [path]

    def read(self, path: str, audio_root: str | None) -> list:
        items = []
        for file in self.files(path):
            subset = os.path.basename(file)[:-len(".json")]
            if subset not in SUBSETS:
                raise SuiteFormatError(f"sd_eval: {file}: the file name must be one of the subsets "
                                       f"{', '.join(SUBSETS)} (it selects the rubric)")
            rows = load_json(file, "sd_eval")
            if not isinstance(rows, list):
                raise SuiteFormatError(f"sd_eval: {file} must hold a JSON list of utterances")
            for i, row in enumerate(rows):
                where = f"sd_eval: {file} item {i}"
                utt = str(need(row, "utt_id", where))
                items.append(Item(
                    key=f"{subset}/{utt}", wav=audio_path(need(row, "wav_path", where), audio_root, file),
                    task=SPOKEN_REPLY_TASK, statement=need(row, "transcript", where), dimension=subset,
                    labels={"info": str(need(row, "info", where))}, rubrics=(f"sd_eval_{subset}",),
                    fields={"info": str(row["info"]).title(), "dataset_name": row.get("dataset_name", ""),
                            "references": [t.get("reply", "") for t in row.get("target") or []]}))
        return items


register(SDEval())
