"""Writes torchvision-0.29.1.json: the parameters, MACs (fvcore's convention: conv, transposed conv
and dense, biases excluded) and every conv/dense output shape of five torchvision models (Inception-v3 without its auxiliary head), and the
figures torchvision publishes for them (weights meta: ``num_params`` and ``_ops``, its GFLOPS).

Run by hand, once, in a scratch environment with torch 2.14.1 and torchvision 0.29.1 (which are
not test dependencies): ``python torchvision_profile.py``. tests/test_specs_modern.py reads the
result; its own PyTorch modules count the same way (``profile`` there).
"""
import json
import math

import torch
import torchvision

nn = torch.nn
WEIGHTS = {"mobilenet_v2": "MobileNet_V2_Weights", "mobilenet_v3_small": "MobileNet_V3_Small_Weights",
           "efficientnet_b0": "EfficientNet_B0_Weights", "shufflenet_v2_x1_0": "ShuffleNet_V2_X1_0_Weights"}


def profile(module, x):
    layers, macs = [], [0]

    def hook(mod, args, out):
        if isinstance(mod, nn.Linear):
            macs[0] += mod.in_features * mod.out_features
            kind = "dense"
        elif isinstance(mod, nn.ConvTranspose2d):
            macs[0] += mod.weight.numel() * math.prod(args[0].shape[2:])
            kind = "conv_transpose"
        else:
            macs[0] += mod.weight[0].numel() * out[0].numel()
            kind = "conv"
        layers.append((kind, list(out.shape[1:])))

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    module.eval()
    with torch.no_grad():
        out = module(x)
    for h in handles:
        h.remove()
    return {"params": sum(p.numel() for p in module.parameters()), "macs": macs[0], "layers": layers,
            "out": list(out.shape[1:])}


def main():
    result = {}
    for name, weights in WEIGHTS.items():
        result[name] = profile(getattr(torchvision.models, name)(), torch.zeros(1, 3, 224, 224))
        meta = getattr(torchvision.models, weights).IMAGENET1K_V1.meta
        result[name]["meta"] = {"num_params": meta["num_params"], "_ops": meta["_ops"]}
    # Inception-v3 without its auxiliary head (aux_logits=False, as specs/inception_v3.cnn), at its
    # 3x299x299; the weights' meta counts the auxiliary head too (27,161,264 parameters).
    module = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    result["inception_v3"] = profile(module, torch.zeros(1, 3, 299, 299))
    meta = torchvision.models.Inception_V3_Weights.IMAGENET1K_V1.meta
    result["inception_v3"]["meta"] = {"num_params": meta["num_params"], "_ops": meta["_ops"]}
    with open("torchvision-0.29.1.json", "w") as f:
        json.dump(result, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
