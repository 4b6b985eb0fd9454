"""The networks: the paper's ideas (atrous convolution, ASPP, multi-scale inputs), the backbones, every network
by name (``models``), one home for building and loading them (``network``), and their weights (ImageNet,
DeepLab's Caffe models, the cpu profile's stand-ins)."""
