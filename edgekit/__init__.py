"""edgekit: convert, deploy and benchmark quantized small language models on edge devices.

Importing this package is cheap on purpose: heavy libraries (torch, transformers,
llama_cpp, onnx) are imported only inside the functions that need them, so that
`edgekit --help` stays fast.
"""

__version__ = "0.1.0"
