"""The ReIsoSeg method in pure PyTorch: no nnU-Net import here, so other frameworks can host it."""
from reisoseg.network.anisotropy import ani_scale_from_spacing, required_divisor
from reisoseg.network.pi_module import PIChoice, PIModule
from reisoseg.network.reisoseg_net import ReIsoSegRMV6

__all__ = ["PIChoice", "PIModule", "ReIsoSegRMV6", "ani_scale_from_spacing", "required_divisor"]
