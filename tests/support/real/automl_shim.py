"""What AutoML's runtime needs on Python 3.11, set at run time before anything else of it is
imported (no installed file is edited): importing the runtime, or unpickling any AutoML
model, otherwise raises ``NameError: name 'Scope' is not defined``."""

from azureml.automl.core.onnx_convert.onnx_convert_constants import OnnxConvertConstants

OnnxConvertConstants.OnnxIncompatiblePythonVersion = (3, 12)
