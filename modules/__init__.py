"""The MRAA networks: region predictor, background motion predictor, pixel-wise flow predictor, generator, AVD.

Symbols used in shape comments throughout the project:

    B  batch size                      T  number of frames of a video
    C  image channels (3)              K  number of regions (``num_regions``)
    H, W  image height and width       h, w  size at which a sub-network works (``H * scale_factor``)

Coordinates are normalised to [-1, 1] with the last axis ordered (x, y): x runs along the width, y along the
height, and pixel centre 0 maps to -1, pixel centre W-1 to +1 (``x_i = 2 i / (W - 1) - 1``). Every
``grid_sample`` and bilinear ``interpolate`` passes ``align_corners=False`` explicitly: the published weights
were trained with that behaviour.

Attribute names (``predictor``, ``regions``, ``down``, ``jacobian``, ``hourglass``, ``mask``, ``occlusion``,
``first``, ``down_blocks``, ``up_blocks``, ``bottleneck``, ``final``, ``encoder``, ``fc``, ``id_encoder``,
``pose_encoder``, ``decoder``) are the keys that published checkpoints are stored under: renaming one breaks
strict loading of ``vox256.pth`` and its siblings. ``tests/test_parity.py`` guards them.

Models are built from a config in one place, :func:`modules.build.build_models`.
"""
from modules.avd_network import AVDNetwork
from modules.bg_motion_predictor import BGMotionPredictor
from modules.generator import Generator
from modules.pixelwise_flow_predictor import PixelwiseFlowPredictor
from modules.region_predictor import RegionPredictor

__all__ = ["AVDNetwork", "BGMotionPredictor", "Generator", "PixelwiseFlowPredictor", "RegionPredictor"]
