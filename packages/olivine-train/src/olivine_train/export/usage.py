"""How to load an exported file on the other side, printed after every export."""

from __future__ import annotations

from pathlib import Path

__all__ = ["usage_text"]

_INTENSITY = (
    "intensity: the reference nuScenes VoxelNet pretraining feeds raw intensity 0-255, "
    "the KITTI pipelines of OpenPCDet and mmdetection3d intensity in [0, 1]: rescale one of "
    "them (the convolution "
    "weights do not depend on the grid, the input scale does)"
)
_GRID = (
    "grid: KITTI configs use range [0, -40, -3, 70.4, 40, 1], voxel 0.05 x 0.05 x 0.1 m and "
    "sparse shape [41, 1600, 1408] instead of the nuScenes pretraining grid; the weights load "
    "unchanged"
)


def usage_text(to: str, family: str, out: Path, config_text: str, in_channels: int) -> str:
    """The commands that load ``out`` in OpenPCDet or mmdetection3d, with the caveats."""
    out = out.resolve()  # the commands run from the other toolbox's folder
    if to == "openpcdet":
        return "\n".join(
            [
                "load it in OpenPCDet (from tools/; SECOND or PV-RCNN, backbone_3d is all 72 "
                "tensors):",
                f"  python train.py --cfg_file cfgs/kitti_models/second.yaml --pretrained_model "
                f"{out}",
                f"  python train.py --cfg_file cfgs/kitti_models/pv_rcnn.yaml --pretrained_model "
                f"{out}",
                f"  the log says 'Not updated weight' for every head tensor; {in_channels} input "
                "features (MeanVFE: x, y, z, intensity on KITTI)",
                f"  {_INTENSITY}",
                f"  {_GRID}",
            ]
        )
    if family == "voxelnet":
        return "\n".join(
            [
                "load it in mmdetection3d (SECOND / PV-RCNN middle_encoder=SparseEncoder):",
                "  python tools/train.py configs/second/second_hv_secfpn_8xb6-80e_kitti-3d-3class"
                f".py --cfg-options load_from={out}",
                "  python tools/train.py configs/pv_rcnn/pv_rcnn_8xb2-80e_kitti-3d-3class.py "
                f"--cfg-options load_from={out}",
                f"  SparseEncoder in_channels must be {in_channels}; "
                "keys are middle_encoder.* (loaded with strict=False: heads stay initialised)",
                f"  {_INTENSITY}",
                f"  {_GRID}",
            ]
        )
    return "\n".join(
        [
            "load it in mmdetection3d (MinkUNet segmentor, spconv backend):",
            "  python tools/train.py configs/minkunet/minkunet34_w32_spconv_8xb2-laser-polar-mix"
            f"-3x_semantickitti.py --cfg-options load_from={out} "
            f"model.backbone.in_channels={in_channels}",
            f"  backbone={config_text}",
            "  or export with --prefix '' and set the backbone's init_cfg=dict(type='Pretrained', "
            "checkpoint=FILE) -- without init_cfg's prefix=, which drops the state-dict "
            "metadata so that mmdetection3d permutes (and then fails to load) every sparse weight",
            f"  the pretrained stem takes {in_channels} feature(s) per voxel (mmdetection3d's "
            "config uses 4: x, y, z, intensity): feed the same features, or the stem weight "
            "is skipped as mis-shaped",
            "  grid: the weights are (out, k0, k1, k2, in) over the pretraining grid's axes "
            "(cylindrical rho, phi, z by default, data.voxel_mode); mmdetection3d's MinkUNet "
            "voxelises Cartesian (batch, x, y, z): the weights load, the geometry differs",
        ]
    )
