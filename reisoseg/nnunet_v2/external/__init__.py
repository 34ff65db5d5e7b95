"""The folder that v2's `nnUNetv2_train` searches for ReIsoSeg's trainers, through its `nnUNet_extTrainer` variable:

    export nnUNet_extTrainer="$(python -c 'import reisoseg.nnunet_v2.external as e; print(e.FOLDER)')"
    nnUNetv2_train DATASET 3d_fullres FOLD -tr ReIsoSegTrainer

v2 imports each module of the folder by its file name (`reisoseg_trainers`) and takes the class of the asked name.
Before that it walks its own trainers, which needs a torchvision that matches the installed torch;
`reisoseg train --engine v2` passes the class directly and needs none.
"""
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
