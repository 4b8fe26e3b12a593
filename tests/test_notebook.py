"""demo.ipynb runs top to bottom, headlessly, on the parity model and a short generated clip."""
import base64

import imageio.v3 as iio
import pytest

from conftest import REPO_ROOT
from eval_media import (count_frames, driving_frames, parity_paths, source_image, video_fps, write_eval_config,
                        write_video)

pytestmark = pytest.mark.slow  # a Jupyter kernel runs the whole notebook

nbclient = pytest.importorskip("nbclient", reason="nbclient (requirements-test.txt) runs the notebook")
nbformat = pytest.importorskip("nbformat", reason="nbformat (requirements-test.txt) reads the notebook")

NUM_FRAMES, FPS = 8, 10


def test_notebook_runs_and_shows_the_animation(tmp_path, parity_dir, monkeypatch):
    _, checkpoint = parity_paths(parity_dir)
    config = write_eval_config(tmp_path / "config.yaml", parity_dir, tmp_path)  # frame_shape 64x64
    iio.imwrite(tmp_path / "source.png", source_image(parity_dir))
    write_video(tmp_path / "driving.mp4", driving_frames(parity_dir, NUM_FRAMES + 4), fps=FPS)
    result = tmp_path / "side_by_side.mp4"
    for key, value in {"CONFIG": config, "CHECKPOINT": checkpoint, "SOURCE": tmp_path / "source.png",
                       "DRIVING": tmp_path / "driving.mp4", "MODE": "avd", "MAX_FRAMES": NUM_FRAMES,
                       "RESULT": result}.items():
        monkeypatch.setenv(f"MRAA_DEMO_{key}", str(value))  # the kernel inherits the environment

    notebook = nbformat.read(REPO_ROOT / "demo.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO_ROOT)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails

    assert count_frames(result) == NUM_FRAMES and video_fps(result) == pytest.approx(FPS)
    assert iio.improps(result).shape[1:] == (64, 3 * 64, 3)  # source | driving | result
    html = [output["data"]["text/html"] for cell in notebook.cells for output in cell.get("outputs", [])
            if "text/html" in output.get("data", {})]
    assert len(html) == 1 and "<video" in html[0]
    assert base64.b64encode(result.read_bytes()[:48]).decode()[:40] in html[0]  # the video itself, embedded
    texts = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert f"{NUM_FRAMES} driving frames at {FPS} fps" in texts and "AVD network: True" in texts


def test_colab_set_up_is_guarded_and_no_cell_has_outputs():
    notebook = nbformat.read(REPO_ROOT / "demo.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.get("outputs") and cell.get("execution_count") is None for cell in code)
    for cell in code:
        if "pip install" in cell.source or "git\", \"clone" in cell.source:
            assert 'if "google.colab" in sys.modules:' in cell.source
