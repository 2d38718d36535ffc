"""The torch modules of the ``torch-cuda`` runtime: the generator, its twin read from the
committed ONNX file, and the renderer graph.

The one place under engines/ that imports torch at module level, on purpose: an
``nn.Module`` needs torch to be defined. Nothing imports this package at start-up; the
torch runner (``engines/runtimes/torch_runner.py``) loads the class a manifest's
``torch_factory`` names only when that runtime is chosen, and export/ trains and exports
these same modules (``tests/test_packaging.py`` checks that serving starts without torch).
"""
