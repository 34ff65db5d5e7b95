"""Glue to nnU-Net v1 (`nnunet==1.7.1`). The only subpackage that imports `nnunet`.

Importing it sets the environment defaults nnU-Net reads at import time; entry points enter `compat.redirected()` once
they have checked the user's folders (importing nnU-Net creates missing result folders, so it must come after).
"""
from reisoseg.nnunet_v1 import compat

compat.configure_environment()
