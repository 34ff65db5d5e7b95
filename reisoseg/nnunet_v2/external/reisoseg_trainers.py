"""ReIsoSeg's trainers under their own names, for v2's search of the `nnUNet_extTrainer` folder."""
from reisoseg.nnunet_v2.trainers import TRAINERS

globals().update({name: trainer for name, trainer in TRAINERS.items() if name != "nnUNetTrainer"})
