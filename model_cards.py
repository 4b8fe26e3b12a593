"""What each model was trained on and what it can animate: a short card per checkpoint.

A checkpoint's card is, in this order:

- ``NAME.card.json`` beside ``NAME.pth`` (``tools/bundle_model.py`` writes one; a user may write their own), with
  the keys of ``ModelCard``;
- the card of a published model, when the checkpoint or its config is named as the authors named theirs
  (``vox256``, ``taichi256``, ``ted384``, ``mgif256``);
- otherwise none: ``card_for`` returns None, and ``describe`` says how to add one.

The demo prints a checkpoint's card in one note, and the web page shows it beside the model's name, so nobody
feeds a photo of a face to a model that has only ever seen puppets without being told.
"""
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

AUTHORS_REPOSITORY = "https://github.com/snap-research/articulated-animation"
WHERE_PUBLISHED = (f"the authors' checkpoints (vox256.pth, taichi256.pth, ted384.pth, mgif256.pth) are linked from "
                   f"their repository's README: {AUTHORS_REPOSITORY}")


@dataclass(frozen=True)
class ModelCard:
    trained_on: str      # the data, in a phrase
    size: str            # frame size of the training data, "HxW"
    animates: str        # what it is good for
    not_for: str = ""    # what it should not be given
    source: str = ""     # who made it, where it is published

    def line(self):
        """The card as one sentence, for a note or a page."""
        text = f"trained on {self.trained_on} at {self.size}; animates {self.animates}"
        if self.not_for:
            text += f"; not for {self.not_for}"
        return text + (f" ({self.source})" if self.source else "")


_AUTHORS = f"published by the authors, {AUTHORS_REPOSITORY}"
PUBLISHED = {
    "vox256": ModelCard("VoxCeleb talking-head videos (faces, cropped to the face and shoulders)", "256x256",
                        "human faces framed as a portrait", "whole bodies or non-human objects", _AUTHORS),
    "taichi256": ModelCard("TaiChiHD tai-chi videos (whole standing figures)", "256x256",
                           "whole human bodies, head to feet", "close-up faces", _AUTHORS),
    "ted384": ModelCard("TED-talks videos (speakers' upper bodies)", "384x384",
                        "people from the knees or waist up, as a speaker on stage", "close-up faces", _AUTHORS),
    "mgif256": ModelCard("MGif cartoon animations (animals drawn on a white background)", "256x256",
                         "cartoon animals and drawings on plain backgrounds", "photographs", _AUTHORS),
}


def where_to_get(checkpoint):
    """For a missing checkpoint named as a published one, where it is published (to end a message); else ''."""
    if Path(checkpoint).name.split(".")[0] in PUBLISHED:
        return f"; {WHERE_PUBLISHED}"
    return ""


def card_path(checkpoint):
    """``NAME.card.json`` beside ``NAME.pth``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name.split(".")[0] + ".card.json")


def read_card(path):
    """A ModelCard from a card file, or None when it is missing or not a card (a card never stops a run)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        known = {f.name for f in fields(ModelCard)}
        return ModelCard(**{k: str(v) for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError, AttributeError, RecursionError):
        return None


def write_card(path, card):
    """Write a card atomically (JSON, one key a line)."""
    from media import atomic_file
    with atomic_file(Path(path)) as temporary:
        Path(temporary).write_text(json.dumps(asdict(card), indent=1) + "\n", encoding="utf-8")


def card_for(checkpoint, config=None):
    """The card of a checkpoint (see the module's docstring), or None when it has none."""
    card = read_card(card_path(checkpoint))
    if card is not None:
        return card
    for name in (Path(checkpoint).name.split(".")[0], Path(config).stem if config else None):
        if name in PUBLISHED:
            return PUBLISHED[name]
    return None


def describe(checkpoint, config=None):
    """One sentence for a page: the card's, or how to write one."""
    card = card_for(checkpoint, config)
    if card is not None:
        return card.line()
    return (f"no card says what this model was trained on or what it animates: write {card_path(checkpoint).name} "
            f"beside the checkpoint (keys {', '.join(f.name for f in fields(ModelCard))})")
