"""VStyle (arXiv 2509.09716; data huggingface.co/datasets/zhanjun/VStyle, code github.com/alibaba/voice-gen-eval):
its metadata.jsonl as released. --data is one metadata.jsonl (the release has en/ and zh/, each a metadata.jsonl
beside a wav/ folder) or a folder holding metadata.jsonl and/or <lang>/metadata.jsonl.

Fields read (as in the repo's data/examples/*/metadata*.jsonl and the README's input format):
  instruct_id          the instruction's id (item key: <lang>/<instruct_id> when the file sits in a language folder)
  instruct_text        the instruction's text
  ability              "<category>/<subcategory>", category one of acoustic_attributes, instruction, role_play,
                       empathy (lalm_eval/gemini_eval.py SUB_CATS)
  instruct_audio_path  the spoken instruction, relative to --audio_root (default: wav/ beside the file)
Each reply is judged with rubrics/vstyle_<category>.txt (1-5, the last "[[N]]" of the answer) and reported per
ability, plus VStyle's weighted scores (gemini_eval.py analyze_scores): each category weighs 1/4 of the overall;
inside acoustic_attributes, composite_properties weighs half and the six single attributes share the other half;
inside the others the subcategories weigh alike; abilities without scores drop out and the weights renormalise.
Not verified: the released metadata.jsonl itself (the files read here come from the repo's examples and
the project page's sample, github.com/JunZhan2000/VoiceGenEval.github.io data/examples/en/metadata_sample.jsonl,
which use these names). The judge prompts are the English ones, also for zh items.
"""
from __future__ import annotations

import glob
import os

from . import SPOKEN_REPLY_TASK, Item, Suite, SuiteFormatError, audio_path, load_jsonl, need, register

# VStyle's abilities per category (gemini_eval.py SUB_CATS), which its weights split over
ABILITIES = {
    "acoustic_attributes": ("age", "speed", "gender", "emotion", "pitch", "volume", "composite_properties"),
    "instruction": ("emotion", "variation", "style"),
    "role_play": ("character", "scenario"),
    "empathy": ("anger", "sadness_disappointment", "anxiety_fear", "joy_excitement"),
}
CATEGORIES = tuple(ABILITIES)
HALF_OF_CATEGORY = "acoustic_attributes/composite_properties"


def ability_weights() -> dict:
    weights = {}
    for cat, subs in ABILITIES.items():
        names = [f"{cat}/{s}" for s in subs]
        for name in names:
            if HALF_OF_CATEGORY in names:
                weights[name] = 0.125 if name == HALF_OF_CATEGORY else 0.125 / (len(names) - 1)
            else:
                weights[name] = 0.25 / len(names)
    return weights


def _weighted(judged: dict, names: list, weights: dict) -> dict | None:
    used = [n for n in names if judged.get(n) and judged[n]["mean"] is not None]
    if not used:
        return None
    total = sum(weights[n] for n in used)
    return {"mean": round(sum(judged[n]["mean"] * weights[n] for n in used) / total, 4), "ci95": None,
            "count": sum(judged[n]["count"] for n in used), "invalid": sum(judged[n]["invalid"] for n in names if n in judged)}
LANGUAGES = ("en", "zh")  # the release's folders, one judge prompt set each


class VStyle(Suite):
    name = "vstyle"
    description = "VStyle: voice style adaptation (judge 1-5 per ability)"

    def files(self, path: str) -> list:
        if os.path.isdir(path):
            found = sorted(glob.glob(os.path.join(path, "metadata.jsonl")) +
                           glob.glob(os.path.join(path, "*", "metadata.jsonl")))
            if not found:
                raise SuiteFormatError(f"vstyle: no metadata.jsonl nor */metadata.jsonl in folder {path}")
            return found
        return [path]

    def read(self, path: str, audio_root: str | None) -> list:
        items = []
        for file in self.files(path):
            folder = os.path.dirname(os.path.abspath(file))
            lang = os.path.basename(folder) if os.path.basename(folder) in LANGUAGES else ""
            root = audio_root or os.path.join(folder, "wav")
            for i, row in enumerate(load_jsonl(file, "vstyle"), 1):
                items.append(self._item(row, f"vstyle: {file}:{i}", lang, root, file))
        return items

    def _item(self, row, where, lang, root, file) -> Item:
        if not isinstance(row, dict):
            raise SuiteFormatError(f"{where}: a line must be a JSON object")
        ability = str(need(row, "ability", where))
        category = ability.split("/", 1)[0]
        if category not in CATEGORIES:
            raise SuiteFormatError(f"{where}: field 'ability' is {ability!r}; its category must be one of "
                                   f"{', '.join(CATEGORIES)}")
        text = str(need(row, "instruct_text", where))
        key = str(need(row, "instruct_id", where))
        return Item(key=f"{lang}/{key}" if lang else key,
                    wav=audio_path(str(need(row, "instruct_audio_path", where)), root, file),
                    task=SPOKEN_REPLY_TASK, statement=text, dimension=ability, rubrics=(f"vstyle_{category}",),
                    fields={"instruction_type": ability, "input_instruction": text, "language": lang})

    def derived_metrics(self, metrics: dict) -> dict:
        judged, weights = metrics.get("judge", {}), ability_weights()
        out = {}
        for name, names in [("weighted overall", list(weights))] + \
                [(f"weighted {cat}", [n for n in weights if n.startswith(cat + "/")]) for cat in CATEGORIES]:
            score = _weighted(judged, names, weights)
            if score is not None:
                out[name] = score
        return {"judge": out} if out else {}


register(VStyle())
