"""The OpenAPI 3 document of the scoring server's routes."""

from __future__ import annotations

from typing import Any

from serving.fastpath import Scorer

_NAME = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
_V2_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string", "enum": ["FP64", "FP32", "INT64", "INT32", "BOOL", "BYTES"]},
        "data": {"type": "array"},
    },
}
_V2_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {"id": {"type": "string"}, "inputs": {"type": "array", "items": _V2_TENSOR}},
}


def openapi_spec(scorer: Scorer) -> dict[str, Any]:
    """An OpenAPI 3 description of the routes (inputs named from the model's signature)."""
    columns = list(scorer.columns) or []
    row = {"type": "array", "items": {}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"Scoring server for {scorer.info.name or scorer.info.uri}",
            "version": str(scorer.info.version or "local"),
        },
        "paths": {
            "/invocations": {
                "post": {
                    "summary": "Predict (MLflow scoring protocol, or Azure ML's input_data).",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {
                                            "type": "object",
                                            "required": ["dataframe_split"],
                                            "properties": {
                                                "dataframe_split": {
                                                    "type": "object",
                                                    "properties": {
                                                        "columns": {
                                                            "type": "array",
                                                            "example": columns,
                                                        },
                                                        "data": {"type": "array", "items": row},
                                                    },
                                                },
                                                "params": {"type": "object"},
                                            },
                                        },
                                        {"type": "object", "required": ["dataframe_records"]},
                                        {"type": "object", "required": ["instances"]},
                                        {"type": "object", "required": ["inputs"]},
                                        {"type": "object", "required": ["input_data"]},
                                    ]
                                }
                            },
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "200": {
                            "description": '{"predictions": [...]} (Azure input_data: bare JSON)'
                        },
                        "400": {"description": "Bad input (MLflow error JSON)"},
                        "401": {"description": "Missing or wrong API key"},
                        "408": {"description": "Request slower to arrive than --header-timeout"},
                        "413": {"description": "Body larger than --max-body-bytes"},
                        "415": {"description": "Unsupported content type"},
                        "503": {"description": "More connections than --max-connections"},
                        "504": {"description": "Slower than --timeout"},
                    },
                }
            },
            "/ping": {"get": {"responses": {"200": {"description": "Model loaded"}}}},
            "/health": {"get": {"responses": {"200": {"description": "Model loaded"}}}},
            "/version": {"get": {"responses": {"200": {"description": "Model version info"}}}},
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text"}}}},
            "/v2/health/live": {"get": {"responses": {"200": {"description": "V2: live"}}}},
            "/v2/health/ready": {"get": {"responses": {"200": {"description": "V2: ready"}}}},
            "/v2/models/{model_name}": {
                "get": {
                    "parameters": [_NAME],
                    "responses": {"200": {"description": "V2 model metadata"}},
                }
            },
            "/v2/models/{model_name}/infer": {
                "post": {
                    "summary": "Open Inference Protocol (V2) inference.",
                    "parameters": [_NAME],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _V2_REQUEST}},
                    },
                    "responses": {
                        "200": {"description": "V2 outputs"},
                        "400": {"description": "Bad input ({'error': ...})"},
                        "404": {"description": "Model not served here"},
                    },
                }
            },
        },
    }
