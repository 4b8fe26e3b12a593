"""Small generated inputs for the reconstruction, animation, demo and notebook tests.

The model is the parity one (``tests/fixtures/parity/mraa``, a copy of ``../shared/parity/mraa``: 5 regions, 64x64,
random weights, with AVD); its ``source`` and ``driving`` arrays seed the images and videos, so every input is made
here in seconds.
"""
import subprocess

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import yaml

from media import VideoWriter

SIZE = 64


def parity_paths(parity_dir):
    """(config.yaml, checkpoint.pth) of the parity model."""
    folder = parity_dir / "mraa"
    return folder / "config.yaml", folder / "checkpoint.pth"


def parity_arrays(parity_dir):
    """The parity fixtures: {'source': (1, 3, H, W), 'driving': (T, 3, H, W), 'animate.<mode>.prediction': ...}."""
    return dict(np.load(parity_dir / "mraa" / "expected.npz"))


def source_image(parity_dir):
    """The parity source as uint8 (64, 64, 3)."""
    return to_uint8(parity_arrays(parity_dir)["source"][0].transpose(1, 2, 0))


def driving_frames(parity_dir, num_frames, seed=0):
    """uint8 frames (T, 64, 64, 3): the parity driving frames in turn, each shifted a little differently."""
    driving = parity_arrays(parity_dir)["driving"].transpose(0, 2, 3, 1)  # (4, H, W, 3)
    shifts = np.random.default_rng(seed).integers(-6, 7, size=(num_frames, 2))
    frames = [np.roll(driving[t % len(driving)], tuple(shifts[t]), axis=(0, 1)) for t in range(num_frames)]
    return to_uint8(np.stack(frames))


def to_uint8(images):
    return np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)


def write_video(path, frames, fps=12):
    """An H.264 video (or GIF) of uint8 frames (T, H, W, 3) at ``fps``."""
    with VideoWriter(path, fps) as writer:
        writer.write(frames)
    return path


def add_sound(video, out, seconds=3):
    """``out``: ``video`` with a sine tone as its sound track (made with imageio-ffmpeg's ffmpeg)."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-i", str(video), "-f", "lavfi", "-i",
               f"sine=frequency=440:duration={seconds}", "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
               "-c:a", "aac", str(out)]
    subprocess.run(command, check=True)
    return out


def write_sound_only(out, seconds=1):
    """A media file with a sound track and no video stream: a 'video' with no frames."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "lavfi", "-i",
               f"sine=frequency=440:duration={seconds}", "-c:a", "aac", str(out)]
    subprocess.run(command, check=True)
    return out


def write_dataset(root, parity_dir, num_videos=3, num_frames=6):
    """A dataset root with train/ and test/ holding ``num_videos`` frame folders each (vid0, vid1, ...)."""
    for split in ("train", "test"):
        for v in range(num_videos):
            folder = root / split / f"vid{v}"
            folder.mkdir(parents=True)
            for t, frame in enumerate(driving_frames(parity_dir, num_frames, seed=v)):
                iio.imwrite(folder / f"{t}.png", frame)
    return root


def write_eval_config(path, parity_dir, root, num_videos=2, num_pairs=2, mode="relative", fmt=".mp4"):
    """The parity model's config with the dataset, reconstruction and animation sections the modes need."""
    config_path, _ = parity_paths(parity_dir)
    config = yaml.safe_load(config_path.read_text())
    config["dataset_params"] = {"root_dir": str(root), "frame_shape": [SIZE, SIZE, 3]}
    config["reconstruction_params"] = {"num_videos": num_videos, "format": fmt}
    config["animate_params"] = {"num_pairs": num_pairs, "format": fmt, "mode": mode}
    path.write_text(yaml.safe_dump(config))
    return path


def count_frames(path):
    """Frames of a video file, counted by decoding it."""
    return imageio_ffmpeg.count_frames_and_secs(str(path))[0]


def video_fps(path):
    """Frame rate a video file's header states."""
    return iio.immeta(path).get("fps")
