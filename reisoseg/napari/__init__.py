"""The napari plugin (extra `reisoseg[napari]`): a reader, a writer and sample data with spacing as each layer's
scale, and the Segment, Measure and Compare widgets (`widgets`, which need Qt). What the widgets do lives in
Qt-free modules (`segment`, `measure`, `compare`) that work on `napari.components.ViewerModel`, and calls the same
library functions as the commands."""
