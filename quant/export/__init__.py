"""From a trained quantized checkpoint to a model bundle, and golden-vs-float fidelity.

``asqhw export`` and ``asqhw eval --golden`` live here, on the PyTorch side: the golden package
(:mod:`golden`) is the numpy-only specification they write and read.

- :mod:`quant.export.networks`: what each exportable network needs beyond its layers (BN pairs,
  shapes, input pixels and their normalisation, its data split), a registry keyed by model name;
- :mod:`quant.export.trace`: the float model's activations, recorded layer by layer;
- :mod:`quant.export.fold`: BN folding and every float -> fixed-point constant of the manifest;
- :mod:`quant.export.fidelity`: golden vs float, free running and teacher forced;
- :mod:`quant.export.graph`: any network of the supported layers, traced by torch.fx, as a format-2
  graph (``golden.graph``);
- :mod:`quant.export.build`: the bundle (format 1, a chain, or format 2, a graph) of a model or
  checkpoint, written atomically;
- :mod:`quant.export.cli`: the ``export`` subcommand and the report of ``eval --golden``.
"""
