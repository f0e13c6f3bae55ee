"""Upstream's label tables: the word lists and label maps its data processor applies to targets.

The task table (tasks.py) says which rule a task gets; these are the values the rules use
(data/text.py applies them).
"""
from __future__ import annotations

# upstream quirk: upstream's word list misses three commas, so Python glues
# neighbours together ("Qwen助手VirtualAssistant", "<think>小明助手",
# "<think>MOSS小助手") and "Qwen助手", "VirtualAssistant", "<think>",
# "小明助手" and "MOSS小助手" alone are *not* filtered. This is the effective list.
OTHER_ASSISTANT_NAMES = (
    "MOSS Assistant", "MOSS助手", "QWEN", "QWEN Assistant", "QWEN助手", "小智机器人", "小智助手",
    "小智AI助手", "Qwen助手VirtualAssistant", "virtual assistant", "Helper", "helper", "ChatBot",
    "chat bot", "chatbot", "Chat Bot", "AI Agent", "AI agent", "ChatGPT", "chatgpt", "<think>小明助手",
    "小红小助手", "小刚AI", "晓明助手", "阿强Bot", "阿丽小助手", "王磊AI助手", "李娜AI", "张伟助手",
    "赵敏Bot", "刘洋AI小助手", "陈晨智能助手", "<think>MOSS小助手", "QWEN小助手", "小智Bot",
    "Assistant小智", "AI小智", "ChatBot小明", "VirtualAssistant李娜", "大型语言模型", "语言模型",
)

# upstream maps fine-grained Chinese speaking-style labels onto its 9 classes
STYLE_MAP = {
    "朗读": "新闻科普", "科普百科": "新闻科普", "悬疑恐怖": "恐怖故事", "童话故事": "童话故事",
    "客服": "客服", "诗歌": "诗歌散文", "散文": "诗歌散文", "武侠评书": "有声书", "小说": "有声书",
    "历史": "有声书", "科幻": "有声书", "对话": "日常口语", "口语": "日常口语", "幽默": "其他", "其他": "其他",
}
AGE_MAP = {"<YOUTH>": "<ADULT>", "<MIDDLE_AGE>": "<ADULT>", "<MIDDLE>": "<ADULT>"}
NONE_TARGETS = ("<None>", "<NONE>", "<none>")
NEUTRAL_TAG = "<中立>"
# reply-emotion tags the tag-CoT template keeps; any other becomes NEUTRAL_TAG
TAG_COT_EMOTIONS = frozenset(
    ["愉悦", "抱歉", "开心", "愤怒", "惊讶", "厌恶", "悲伤", "害怕", "哭腔", "安慰鼓励", "中立"]
    + [f"<{x}>" for x in ("愉悦", "抱歉", "开心", "愤怒", "惊讶", "厌恶", "悲伤", "害怕", "哭腔", "安慰鼓励", "中立")])
