import json
import logging
import os
import pickle
import numpy as np
import pandas as pd
import joblib

import azureml.automl.core
from azureml.automl.core.shared import logging_utilities, log_server
from inference_schema.schema_decorators import input_schema, output_schema
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType

input_sample = pd.DataFrame({"age": pd.Series([0], dtype="int64"), "income": pd.Series([0.0], dtype="float64"), "score": pd.Series([0.0], dtype="float64"), "color": pd.Series(["example_value"], dtype="str"), "plan": pd.Series(["example_value"], dtype="str")})
output_sample = np.array(["example_value"])


def init():
    global model
    model_path = os.path.join(os.getenv('AZUREML_MODEL_DIR'), 'model.pkl')
    model = joblib.load(model_path)


def run(data):
    result = model.predict(data)
    return json.dumps({"result": result.tolist()})
