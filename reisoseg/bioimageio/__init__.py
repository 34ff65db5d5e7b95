"""BioImage.IO model packages (the `reisoseg[bioimageio]` extra): the only subpackage that imports bioimageio."""
