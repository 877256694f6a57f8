"""A procedural driving world that exports real nuScenes / SemanticKITTI folders, and the
SemanticKITTI-family layouts (ScribbleKITTI, RELLIS-3D, SemanticPOSS, SemanticSTF, SynLiDAR,
DAPS-3D) through ``export_lidarseg``.

The same reader code that loads real data loads the export. Quick start::

    from olivine_data.synthetic import SyntheticWorldConfig, export_nuscenes
    export_nuscenes(SyntheticWorldConfig(scenes=2, samples_per_scene=4, seed=0), "data/synth")

or ``olivine-data synth --out data/synth --scenes 2 --samples-per-scene 4``.
"""

from olivine_data.synthetic.config import SyntheticWorldConfig
from olivine_data.synthetic.export_lidarseg import LIDARSEG_EXPORTS, export_lidarseg
from olivine_data.synthetic.export_nuscenes import export_nuscenes
from olivine_data.synthetic.export_semantickitti import export_semantickitti
from olivine_data.synthetic.materials import MATERIALS, Material
from olivine_data.synthetic.vfm import corrupt_labels, label_noise_rate
from olivine_data.synthetic.world import (
    CameraFrame,
    Keyframe,
    LidarFrame,
    World,
    generate_world,
)

__all__ = [
    "CameraFrame",
    "Keyframe",
    "LidarFrame",
    "MATERIALS",
    "Material",
    "SyntheticWorldConfig",
    "World",
    "corrupt_labels",
    "LIDARSEG_EXPORTS",
    "export_lidarseg",
    "export_nuscenes",
    "export_semantickitti",
    "generate_world",
    "label_noise_rate",
]
