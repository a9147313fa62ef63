"""The napari plugin of fluoden-batch (npe2 manifest ``napari.yaml``).

A reader that opens a fluoden output (pyramid, channel names and colours, labels, per-block
metrics) and a widget that denoises the selected image layer through
:func:`fluoden_batch.denoise`. Needs the ``napari`` extra (``pip install
fluoden-batch[napari]``); nothing else in the package imports this subpackage.
"""
