"""IPR quality estimators and the tolerance router.

Serving (`ipr_model.encoder`, `ipr_model.scorer`, `ipr_model.rule`, `ipr_model.artifacts`) needs
only numpy, onnxruntime and tokenizers. Training and export (`ipr_model.train`, `ipr_model.export`,
`ipr_model.adapters`) need torch and transformers (the `train` extra).
"""

__version__ = "0.1.0"
