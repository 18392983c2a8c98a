"""Errors of ipr_model. Every one says what was expected and what was found.

IprError
 ├── DatasetError        a dataset file or row is malformed (names file:line)
 ├── ArtifactError       an artifact directory is missing, partial, corrupt or mismatched
 ├── ExportError         the ONNX export disagrees with the torch model beyond tolerance
 └── RoutingInputError   a routing request is invalid (empty text, tolerance, unknown model)
"""


class IprError(Exception):
    """Root of every error this package raises on purpose."""


class DatasetError(IprError):
    pass


class ArtifactError(IprError):
    pass


class ExportError(IprError):
    pass


class RoutingInputError(IprError, ValueError):
    pass
