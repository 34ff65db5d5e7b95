"""The plugin's tests: skipped, with the reason, where the napari extra is not installed (it needs Python 3.11)."""
import os
import shutil

import pytest

pytest.importorskip("napari", reason="the napari extra is not installed (pip install 'reisoseg[napari]')")

if not os.environ.get("DISPLAY") and shutil.which("Xvfb") is None:  # else pytest-xvfb starts an X server
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # widgets still draw; the OpenGL canvas stays empty
