"""DeepLab v1/v2 replication library.

The folders draw the architecture, bottom to top (the README's layer drawing, checked by tests/test_layers.py):

* ``core``: constants, configuration (profiles -> one frozen Config), files and their formats;
* ``nets``: the paper's network ideas (atrous convolution, ASPP, MSC), the backbones, every network by name,
  and their weights (ImageNet, Caffe, the cpu profile's stand-ins);
* ``data``: the data sets (the built-in proxy, VOC 2012 + SBD) and the training transforms;
* ``evaluation``: whole-image evaluation, metrics, failure analysis;
* ``training``: the SGD loop, learning-rate schedules, the loss;
* ``crf``: the fully connected CRF, its two backends and its cross-validation;
* ``experiments``: the ablation tables, their runs, statistics and the paper's claims;
* ``tools``: the command line (``python -m dlib``), the notebook runner, reports and README blocks, downloads.
"""
