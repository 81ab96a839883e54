"""What serving loads: model artifacts, the runtime, the ONNX Runtime models and the estimators.

Depends only on `fengkong.features` (definitions) and `fengkong.events`; never on the
engine, the API or the CLI. Fitting on history is `fengkong.training`.
"""
