"""Export trained models to other inference engines, and run them with attnkit's tokenization.

* :mod:`attnkit.export.ct2`: translation runs to CTranslate2 (``attnkit export --format
  ctranslate2``, ``attnkit translate --engine ctranslate2``);
* :mod:`attnkit.export.onnx`: the pretrained sentence encoder and ViT classifiers to ONNX, run
  with onnxruntime (``attnkit export --format onnx``, ``--engine onnxruntime``).

The engines are optional dependencies (``pip install 'attnkit[export]'``), imported only when used.
"""
