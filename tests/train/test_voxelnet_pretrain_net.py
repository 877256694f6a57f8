"""The pretraining network with a VoxelNet student: per-point features for every filtered point of
the real nuScenes sweep, including the points whose voxel the caps dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from olivine_data import Collator, SegSample, VoxelGrid, get_vocabulary
from olivine_models import BEVGrid, create_point_encoder, height_compression, sample_bev
from olivine_train.recipes.pretrain_model import PretrainNet
from olivine_train.recipes.pretrain_outputs import Head


def test_every_filtered_point_gets_a_feature(shared_data: Path) -> None:
    torch.manual_seed(0)
    files = sorted((shared_data / "nuscenes/mmdet3d-demo/samples/LIDAR_TOP").glob("*.pcd.bin"))
    raw = np.fromfile(files[0], dtype=np.float32).reshape(-1, 5)[:, :4]
    grid = VoxelGrid(max_voxels=4000)  # the real sweep has ~15k voxels: the cap bites
    batch = Collator("cartesian_mean", feature="xyzi", grid=grid).seg([SegSample(raw, token="s")])
    assert batch.voxel_drops["over_voxel_cap"] > 1000 and batch.voxel_drops["filtered"] > 0
    net = PretrainNet(
        create_point_encoder("voxelnet", backend="torch"),
        image_channels=8,
        image_stride=4,
        head_dim=64,
        pp=True,
        sem_3d=True,
        sem_2d=False,
        bev_grid=BEVGrid(),
    ).eval()
    assert batch.points is not None
    with torch.no_grad():
        out = net(
            batch.voxel_coords,
            batch.voxel_features,
            batch.spatial_shape,
            1,
            torch.zeros(1, 8, 4, 4),
            (16, 16),
            {},
            points=batch.points,
            point_offsets=batch.point_offsets,
        )
        # the composition the reference trainer runs, by hand
        sp = net.backbone(batch.voxel_coords, batch.voxel_features, batch.spatial_shape, 1)
        rows = torch.zeros(batch.points.shape[0], dtype=torch.int64)
        assert net.point_pp is not None
        want = sample_bev(height_compression(net.point_pp(sp)), batch.points[:, :2], rows)
    n = batch.points.shape[0]
    k_pp, k_sem = out.point(Head.PP), out.point(Head.SEM_3D)
    assert k_pp.shape == k_sem.shape == (n, 64) and out.backbone.shape == (n, 128)
    torch.testing.assert_close(k_pp, want)
    assert out.q_pp is None and out.q_sem is None  # no pixels asked for
    # points in no voxel (dropped by the voxel cap) still read the BEV map around them; only the
    # cells the cap emptied everywhere around a point leave it at 0
    orphan = batch.point_to_voxel == -1
    assert int(orphan.sum()) == batch.voxel_drops["over_voxel_cap"]
    norms = k_pp.norm(dim=1)
    assert float((norms[~orphan] > 0).float().mean()) > 0.99
    assert int((norms[orphan] > 0).sum()) > 100


def test_the_voxelnet_configs_hold_the_reference_settings() -> None:
    """github.com/Eaphan/OLIVINE config/olivine_voxelnet.yaml + lightning_trainer_spconv.py."""
    from olivine_train.config import load_config

    cfg = load_config("olivine_voxelnet_nuscenes", check_paths=False)
    d, m, lo, o = cfg.data, cfg.model, cfg.loss, cfg.optim
    assert (m.point_encoder, m.in_channels, m.head_dim) == ("voxelnet", 4, 64)
    assert (d.voxel_mode, d.feature, d.vocabulary) == ("cartesian_mean", "xyzi", "gsam14")
    assert len(get_vocabulary(d.vocabulary).class_names) == 14  # the trainer's sup_class_num
    assert d.voxel_size == [0.1, 0.1, 0.2] and d.point_range == [-51.2, -51.2, -5, 51.2, 51.2, 3]
    assert (d.filter_radius, d.max_points_per_voxel, d.max_voxels) == (51.2, 10, 60000)
    assert (d.batch_size, d.image_size, m.image_encoder) == (16, [224, 416], "resnet50_dilated")
    assert (o.lr, o.momentum, o.dampening, o.weight_decay) == (0.01, 0.9, 0.1, 1e-4)
    assert (o.scheduler, o.epochs, o.auto_scale_lr) == ("cosine", 50, False)
    assert (lo.num_pairs, lo.temperature, lo.sup_sampling) == (4096, 0.07, "dcas")
    assert (lo.ppnce_weight, lo.sup_weight, lo.vmf_weight) == (0.5, 0.5, 1.0)
    assert (lo.vmf_decay, lo.vmf_warmup_steps) == (0.9999, 10001)
    ppkt = load_config("ppkt_voxelnet_nuscenes", check_paths=False)
    assert (ppkt.loss.sup_weight, ppkt.loss.vmf_weight, ppkt.model.image_encoder) == (
        0.0,
        0.0,
        "resnet50",
    )
    assert ppkt.model.point_encoder == "voxelnet" and ppkt.optim.lr == 0.01
