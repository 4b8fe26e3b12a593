"""Model cards (model_cards.py): what each model was trained on and animates, and the demo's notes from them."""
import json

import numpy as np
import pytest

import demo
from conftest import REPO_ROOT
from media import VideoWriter, read_image, read_video, write_image
from model_cards import PUBLISHED, ModelCard, card_for, card_path, describe, read_card, write_card

BUNDLED = REPO_ROOT / "sup-mat" / "puppets64.pth"


def test_the_bundled_model_says_it_animates_puppets_only():
    card = card_for(BUNDLED)
    assert card.size == "64x64" and "puppets" in card.trained_on and card.animates == "those puppets only"
    assert "real photographs" in card.not_for and "vox256 for faces" in card.not_for


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_the_authors_checkpoints_have_cards_by_their_names(tmp_path, name):
    assert card_for(tmp_path / f"{name}.pth") == PUBLISHED[name]
    assert card_for(tmp_path / "mine.pth", REPO_ROOT / "config" / f"{name}.yaml") == PUBLISHED[name]
    assert "snap-research/articulated-animation" in PUBLISHED[name].line()


def test_a_card_beside_the_checkpoint_comes_first_and_a_bad_one_is_no_card(tmp_path):
    checkpoint = tmp_path / "vox256.pth"
    mine = ModelCard("my cats", "128x128", "cats")
    write_card(card_path(checkpoint), mine)
    assert card_path(checkpoint).name == "vox256.card.json" and card_for(checkpoint) == mine
    card_path(checkpoint).write_text('{"trained_on": ')
    assert read_card(card_path(checkpoint)) is None and card_for(checkpoint) == PUBLISHED["vox256"]
    other = tmp_path / "other.pth"
    card_path(other).write_text(json.dumps(["not", "a", "card"]))
    assert card_for(other) is None and "write other.card.json beside the checkpoint" in describe(other)
    card_path(other).write_text("[" * 100000)  # nested past the recursion limit
    assert card_for(other) is None


def run_demo(capsys, tmp_path, *argv):
    code = demo.main(["--result_video", str(tmp_path / "result.mp4"), "--quiet", "--cpu", *map(str, argv)])
    return code, capsys.readouterr().err.splitlines()


def test_the_demo_notes_the_card_and_a_result_smaller_than_its_inputs(tmp_path, capsys):
    """256x256 inputs to the 64x64 bundled model: the result is 64x64, and the demo says so."""
    source = np.kron(read_image(REPO_ROOT / "sup-mat" / "source.png"), np.ones((4, 4, 1)))  # (256, 256, 3)
    write_image(tmp_path / "big.png", (source * 255).round().astype(np.uint8))
    driving = read_video(REPO_ROOT / "sup-mat" / "driving.mp4")[:4]  # (4, 64, 64, 3)
    with VideoWriter(tmp_path / "big.mp4", 12) as writer:
        writer.write((np.kron(driving, np.ones((1, 4, 4, 1))) * 255).round().astype(np.uint8))
    code, lines = run_demo(capsys, tmp_path, "--source_image", tmp_path / "big.png",
                           "--driving_video", tmp_path / "big.mp4", "--mode", "relative")
    assert code == 0, lines
    assert any(line.startswith("note: model puppets64.pth: trained on") and "those puppets only" in line
               for line in lines), lines
    assert any(line.startswith("note: the result is 64x64, smaller than the inputs (source 256x256, driving "
                               "256x256)") for line in lines), lines
    assert read_video(tmp_path / "result.mp4").shape == (4, 64, 64, 3)


@pytest.mark.slow
def test_inputs_at_the_models_size_get_no_size_note(tmp_path, capsys):
    code, lines = run_demo(capsys, tmp_path, "--mode", "relative")
    assert code == 0 and not any("smaller than the inputs" in line for line in lines), lines


def test_a_missing_published_checkpoint_says_where_the_authors_publish_it(tmp_path, capsys):
    code, lines = run_demo(capsys, tmp_path, "--config", REPO_ROOT / "config" / "vox256.yaml",
                           "--checkpoint", tmp_path / "vox256.pth")
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: ")
    assert "vox256.pth: checkpoint not found; the authors' checkpoints" in lines[0]
    assert "https://github.com/snap-research/articulated-animation" in lines[0]
