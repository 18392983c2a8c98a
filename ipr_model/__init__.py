"""IPR quality estimators and the tolerance router.

Serving (`ipr_model.serving.encoder`, `ipr_model.serving.scorer`, `ipr_model.serving.rule`,
`ipr_model.artifacts.manifest`) needs
only numpy, onnxruntime and tokenizers. Training and export (`ipr_model.training.train`,
`ipr_model.training.export`,
`ipr_model.serving.adapters`) need torch and transformers (the `train` extra).
"""

__version__ = "0.1.0"
