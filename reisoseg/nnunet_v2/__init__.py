"""Glue to nnU-Net v2 (`nnunetv2==2.8.1`, the `reisoseg[nnunetv2]` extra). The only subpackage that imports
`nnunetv2`; the method, the objects and blockwise inference are shared with the v1 engine.

v2 finds trainers by walking its own package, which imports modules whose dependencies need a torchvision matching
the installed torch. Our commands therefore pass trainer classes to v2 directly and never trigger that walk.
"""
