"""EchoMind (https://github.com/hlt-cuhksz/EchoMind, data: huggingface.co/datasets/hlt-cuhksz/EchoMind):
its JSON files as they are. --data is one file or a data folder (data_synthesis/ or data_human/).

  script_info_*.json  a list of cases: case_id, topic, spoken_info (the vocal cue, e.g. "sad-toned
      expressive voice" or "male"), the script (field "script"; "text" / "transcript" accepted), and
      per voice type (target, neutral, alternative) "<type>_audio_info": {"<type>_input_audio_file":
      path under <folder>/audio}. Every voice of every case is one open reply, judged with
      rubrics/echomind_response.txt (C1-C4, 1-5) and rubrics/echomind_vocal_empathy.txt (VES, 1-5).
      As EchoMind does, the neutral voice is skipped for speaker cues (male, female, child, adult,
      elderly).
  MCQ/understanding.json, MCQ/reasoning.json  lists of question_id, audio_dir, audio_name (audio at
      <folder>/audio/<audio_dir>/<audio_name>), question, options_text and the right option letter
      ("answer"); scored exactly: the first option letter of the reply against it.
--audio_root overrides <folder>/audio.
Checked against EchoMind's code at commit f60c978 (src/eval-slm/eval_response_main.py, eval_mcq_main.py,
eval_asr_main.py, utils.py): every field named above except two that its code never reads and that could not
be seen without the data set: the script text ("script" / "text" / "transcript" accepted) and the MCQ answer
("answer").
"""
from __future__ import annotations

import glob
import os
import re

from . import Item, Reply, SPOKEN_REPLY_TASK, Suite, SuiteFormatError, audio_path, load_json, need, register

VOICES = ("target", "neutral", "alternative")
SPEAKER_CUES = ("male", "female", "child", "adult", "elderly")  # EchoMind's voice_info["speaker"]
# multiple choice needs a user prompt: a speech -> text row of the task table that reads one
# (its answer follows the transcript after the answer mark, see eval/report.py ANSWER_MARK)
MCQ_TASK = "<TRANSCRIBE> <S2TCHAT>"
ANSWER_MARK = "<开始回答>"
MCQ_PROMPT = ("Determine the correct answer to this multiple-choice question about the audio. "
              "Answer in the format 'The answer is: [A/B/C/D]'.\nQuestion: {question}\nOptions:\n{options}")
_LETTER = [re.compile(r"answer is\s*:?\s*\[?\(?([A-D])\b", re.I), re.compile(r"\b([A-D])\b")]


def read_letter(text: str) -> str | None:
    text = text.split(ANSWER_MARK, 1)[-1]
    for pattern in _LETTER:
        m = pattern.search(text)
        if m:
            return m.group(1).upper()
    return None


class EchoMind(Suite):
    name = "echomind"
    description = "EchoMind: understanding + reasoning MCQ (exact), open replies (judge C1-C4, VES)"

    def files(self, path: str) -> list:
        if os.path.isdir(path):
            found = sorted(glob.glob(os.path.join(path, "script_info*.json"))) + \
                sorted(glob.glob(os.path.join(path, "MCQ", "*.json")))
            if not found:
                raise SuiteFormatError(f"echomind: no script_info*.json or MCQ/*.json in folder {path}")
            return found
        if not os.path.isfile(path):
            raise SuiteFormatError(f"echomind: file {path} not found")
        return [path]

    def read(self, path: str, audio_root: str | None) -> list:
        items = []
        for file in self.files(path):
            rows = load_json(file, "echomind")
            if not isinstance(rows, list):
                raise SuiteFormatError(f"echomind: {file} must hold a JSON list")
            mcq = bool(rows) and isinstance(rows[0], dict) and "question_id" in rows[0]
            folder = os.path.dirname(os.path.abspath(file))
            root = audio_root or os.path.join(os.path.dirname(folder) if mcq else folder, "audio")
            reader = self._mcq if mcq else self._script
            for i, row in enumerate(rows):
                items += reader(row, f"echomind: {file} item {i}", root, file)
        return items

    def _mcq(self, row, where, root, file):
        kind = os.path.basename(file)[:-len(".json")]
        wav = os.path.join(str(need(row, "audio_dir", where)), str(need(row, "audio_name", where)))
        prompt = MCQ_PROMPT.format(question=need(row, "question", where), options=need(row, "options_text", where))
        return [Item(key=f"mcq_{kind}/{need(row, 'question_id', where)}", wav=audio_path(wav, root, file),
                     task=MCQ_TASK, dimension=kind, prompt=prompt,
                     answer=str(need(row, "answer", where)).strip().strip("()[]").upper()[:1])]

    def _script(self, row, where, root, file):
        script = next((row[k] for k in ("script", "text", "transcript") if k in row), None)
        if script is None:
            raise SuiteFormatError(f"{where}: no field 'script' (nor 'text' / 'transcript')")
        cue = str(need(row, "spoken_info", where))
        out = []
        for voice in VOICES:
            info = row.get(f"{voice}_audio_info")
            if not info or (voice == "neutral" and cue in SPEAKER_CUES):
                continue
            wav = need(info, f"{voice}_input_audio_file", f"{where} {voice}_audio_info")
            out.append(Item(key=f"{need(row, 'case_id', where)}_{voice}", wav=audio_path(wav, root, file),
                            task=SPOKEN_REPLY_TASK, statement=str(script), dimension=voice,
                            labels={"spoken_info": cue},
                            rubrics=("echomind_response", "echomind_vocal_empathy"),
                            fields={"spoken_info": cue, "topic": row.get("topic", "")}))
        return out

    def metric(self, item: Item, dim: str, n_dims: int) -> str:
        return f"{item.dimension}/{dim}"

    def exact_scores(self, item: Item, reply: Reply) -> dict:
        if item.answer is None:
            return {}
        letter = read_letter(reply.text)
        return {f"mcq_{item.dimension}": None if letter is None else float(letter == item.answer)}


register(EchoMind())
