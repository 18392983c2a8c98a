"""Errors of ipr_model. Every one says what was expected and what was found.

IprError                 the project's root (:mod:`schemas.errors`), re-exported here
 ├── DatasetError        a dataset file or row is malformed (names file:line)
 ├── ArtifactError       an artifact directory is missing, partial, corrupt or mismatched
 ├── ExportError         the ONNX export disagrees with the torch model beyond tolerance
 └── RoutingInputError   a routing request is invalid (empty text, tolerance, unknown model)
"""

from schemas.errors import IprError

__all__ = ["ArtifactError", "DatasetError", "ExportError", "IprError", "RoutingInputError"]


class DatasetError(IprError):
    pass


class ArtifactError(IprError):
    pass


class ExportError(IprError):
    pass


class RoutingInputError(IprError, ValueError):
    pass
