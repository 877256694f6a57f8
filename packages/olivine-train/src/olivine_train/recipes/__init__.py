"""Training recipes: pretraining, downstream segmentation, VFM labelling and the demo.

Each recipe module imports the sibling packages (olivine-data, olivine-models, olivine-losses);
import the one you need (``olivine_train.recipes.pretrain``...).
"""

__all__: list[str] = []
