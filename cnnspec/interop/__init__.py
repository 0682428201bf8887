"""Export to PyTorch and ONNX, import from ONNX: where a network goes when it outgrows one CPU.

    net = cnnspec.load("specs/resnet18.cnn")
    module = net.to_torch(weights="w.npz")             # a torch.nn.Module with the weights
    net.to_onnx("resnet18.onnx", weights="w.npz")      # an ONNX model (opset 21)
    net2, weights = cnnspec.from_onnx("model.onnx")    # an ONNX file as a network and its weights

``table`` holds one translation per layer kind, read by all three directions.
"""
