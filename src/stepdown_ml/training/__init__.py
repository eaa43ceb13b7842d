"""Build-time modelling: fit the scikit-learn pipeline, evaluate it, export it to ONNX."""
