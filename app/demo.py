"""Demo content the pages start from: example texts and prompts, and the Playground's presets.

One place for everything a teacher sees before typing: change an example here.
"""

from __future__ import annotations

from model.probes import incontext
from model.model_card import Copying

LARGE = 100_000_000  # parameters: GPT-2 124M and up learned from web text, and copy from their prompt
COPIES = 3.0  # nats per token: an invented name that costs less than this when it returns was read from the prompt
# What a model the labels know by name wrote at temperature 0 for each preset it gets wrong (its stop text
# applied; "" where its first token was the stop text); measured on the model's own file, and checked there by
# tests/test_gguf.py (SmolLM2) and tests/test_default_model.py (deepdive-tiny). Presets not listed it gets right.
MEASURED = {
    "SmolLM2-135M-Instruct.Q4_1": {"name": " a big fox, named Foxy, came to the little fox's home.",
                                   "french": " cat"},
    "deepdive-tiny": {"refrain": ", \"Hello, little fish! Do",
                      "list": "bye, the little lady came to the kitchen and saw the",
                      "french": " loutre de meroutre de merout",
                      "opposites": "",
                      "chat": " I am a helpful Zah-maid."},
}

DEFAULT_TOKENIZER_TEXT = ("Hello world! GPT-2 reads text as tokens, not letters. "
                          "Unbelievable, isn't it? Tokenization also handles emoji 🙂 and ünïcödé.")
DEFAULT_LOSS_TEXT = ("Once upon a time, there was a little girl named Lily. She loved to play outside "
                     "with her dog. One day, they found a big red ball in the park.")
LOSS_EXAMPLES = (
    ("a story opening", DEFAULT_LOSS_TEXT),
    ("a science sentence", "The mitochondria is the powerhouse of the cell, producing adenosine triphosphate."),
    ("shuffled words", "park the ball dog red Lily found big a in they time upon once."),
    ("a repeated line", "The cat sat on the mat. The cat sat on the mat. The cat sat on the mat."),
    ("random words, twice", "\n".join([incontext.random_words(12, seed=7)] * 2)),
)

SAMPLE_FILES = (
    ("tinystories_train.txt", "TinyStories: training stories"),
    ("tinystories_valid.txt", "TinyStories: held-out stories (never trained on)"),
    ("wizard_of_oz_excerpt.txt", "The Wonderful Wizard of Oz (opening)"),
)
DEFAULT_INTERNALS_PROMPT = "Tom and his dog went to the park. Tom threw the ball and the dog"
DEFAULT_INFERENCE_PROMPT = "Once upon a time, there was a little"
DEFAULT_PLAYGROUND_PROMPT = "Once upon a time"

# A preset may need what a small model lacks: "copying" (reading a name or a line from the prompt, which the
# model card measures) or "large" (knowledge from web text). `lacking` says which, for the loaded model; every
# preset it does not flag works greedily on the default model (tests/test_default_model.py runs each one).
PLAYGROUND_PRESETS = (
    {"key": "story", "label": "Once upon a time", "prompt": "Once upon a time", "temperature": 0.8, "max_new_tokens": 80,
     "stop": "none"},
    {"key": "dog", "label": "Tom and his dog", "prompt": "Tom and his dog", "temperature": 0.8, "max_new_tokens": 80,
     "stop": "none"},
    {"key": "name", "label": "An invented name",
     "prompt": "Once upon a time, there was a little fox named Brimlo. Brimlo lived in a big forest. One day,",
     "temperature": 0.0, "max_new_tokens": 30, "stop": "none", "answer": "Brimlo",
     "needs": "copying",
     "note": "No story it read had a fox called Brimlo: to use the name again, a model must read it from the prompt."},
    {"key": "refrain", "label": "A repeated refrain",
     "prompt": "The wind says hush, hush, hush.\nThe rain says hush, hush, hush.\nThe sea says",
     "temperature": 0.0, "max_new_tokens": 8, "stop": "line",
     "needs": "copying",
     "note": "The refrain is in the prompt twice; a model that reads its prompt copies it a third time."},
    {"key": "list", "label": "A list",
     "prompt": "In my bag:\n- a red apple\n- a blue pen\n- a little book\n-",
     "temperature": 0.0, "max_new_tokens": 12, "stop": "line",
     "needs": "copying",
     "note": "The prompt sets a format (a dash, then “a”, a describing word, a thing); a model that reads its "
             "prompt keeps it."},
    {"key": "french", "label": "English → French", "needs": "large",
     "prompt": "sea otter => loutre de mer\ncheese => fromage\nplush giraffe => girafe en peluche\ncat =>",
     "temperature": 0.0, "max_new_tokens": 10, "stop": "line", "answer": "chat",
     "note": "A model trained on web text has read French and English side by side and answers “chat”; one that "
             "has read no French can at best copy the format."},
    {"key": "opposites", "label": "Opposites", "needs": "large",
     "prompt": "hot => cold\nbig => small\nhappy => sad\nup =>",
     "temperature": 0.0, "max_new_tokens": 6, "stop": "line", "answer": "down",
     "note": "A larger model has seen enough word pairs to guess “down”; a small one may not even keep the "
             "format."},
    {"key": "chat", "label": "Human / Assistant chat", "needs": "large", "chat": True,
     "prompt": "Human: Hi! Who are you?\nAssistant: I am a helpful assistant. How can I help?\n"
               "Human: What colour is the sky?\nAssistant:",
     "temperature": 0.7, "max_new_tokens": 40, "stop": "line",
     "note": "A model trained on web text has read dialogues and plays the Assistant's part (“The sky is blue.”). "
             "One that has read only stories barely knows the pattern of a chat transcript."},
)
# Under the chat preset where an instruct model is loaded: what post-training did to it (model/tokenizers/chat.py).
INSTRUCT_NOTE = ("{name} is an instruct model: after learning from text, it was fine-tuned on conversations "
                 "written in its chat template, so it answers as the Assistant, where a base model only continues the "
                 "transcript. It reads the transcript written out in that template, whose special tokens show as "
                 "dark chips.")


def copies(copying: Copying | None, parameters: int) -> bool:
    """Whether the loaded model reads from its prompt: measured on its card, or assumed of a large model."""
    return copying.name_later_uses < COPIES if copying else parameters >= LARGE


def lacking(preset: dict, copying: Copying | None, parameters: int, model: str = "") -> str | None:
    """What the loaded model lacks for this preset, as its label says it; None when it has it. A model
    measured by name (MEASURED) is labelled by what it did."""
    measured = MEASURED.get(model)
    if measured is not None and preset["key"] not in measured:
        return None
    if preset.get("needs") == "large" and parameters < LARGE:
        return "needs a larger model"
    if preset.get("needs") == "copying" and not copies(copying, parameters):
        return "needs a model that reads its prompt"
    return "a larger model gets this right" if measured is not None else None


def preset_note(preset: dict, model: str, parameters: int, instruct: str | None = None) -> str:
    """What the page says under a preset for the model it is labelled for: what that model got wrong, or the
    preset's own note; under a chat preset, what post-training did to the instruct model, where one is loaded."""
    if preset.get("chat") and instruct:
        own = "" if instruct == model else preset["note"] + " "
        return own + INSTRUCT_NOTE.format(name=instruct)
    return measured_note(preset, model, parameters) or preset.get("note", "")


def measured_note(preset: dict, model: str, parameters: int) -> str | None:
    """For a preset the named model gets wrong: what it wrote at temperature 0, and why (the preset's own
    note for a small model)."""
    wrote = MEASURED.get(model, {}).get(preset["key"])
    if wrote is None:
        return None
    said = " ".join(wrote.split())
    did = (f"At temperature 0 this model writes “{said}”" if said
           else "At temperature 0 this model ends the line at once: its first token is the stop text")
    if "answer" in preset:
        did += f", where a larger model writes “{preset['answer']}”"
    if parameters < LARGE:
        return f"{did}. {preset['note']}"
    return (f"{did}: {parameters / 1e6:.0f} M parameters are a lossy compression of all the text it read, and "
            "what it kept is not enough here.")


# Activation patching (the Internals page): two prompts of the same length in tokens and two one-token answers,
# [right, wrong] for the clean prompt. "needs": "large" marks knowledge from web text (`lacking` says so).
PATCH_PRESETS = (
    {"key": "name", "label": "Which dog? (a name read from the story)",
     "clean": "There was a dog named Max. Max liked to play. One day, Max saw a cat. The cat said hello to",
     "corrupted": "There was a dog named Sam. Sam liked to play. One day, Sam saw a cat. The cat said hello to",
     "right": " Max", "wrong": " Sam",
     "note": "The only difference is the dog's name; the grid shows which positions carry it to the answer."},
    {"key": "moves", "label": "A name moving to the end",
     "clean": "Once upon a time, there was a girl named Mia. Every day, Mia",
     "corrupted": "Once upon a time, there was a girl named Sue. Every day, Sue",
     "right": " Mia", "wrong": " Sue",
     "note": "Early blocks keep the name where it was written; in a later block it has reached the last position."},
    {"key": "eiffel", "label": "Where is the Eiffel Tower?", "needs": "large",
     "clean": "The Eiffel Tower is in the city of", "corrupted": "The Colosseum is in the city of",
     "right": " Paris", "wrong": " Rome",
     "note": "A fact from web text: load SmolLM2 or another larger model. A tokenizer may split the two landmarks "
             "into different numbers of tokens; then change one until they match."},
    {"key": "capital", "label": "A capital city", "needs": "large",
     "clean": "The capital of France is the city of", "corrupted": "The capital of Italy is the city of",
     "right": " Paris", "wrong": " Rome",
     "note": "A fact from web text: load SmolLM2 or another larger model to see where it is recalled."},
)
