"""Evaluation: whole images at output stride 8 (MSC, flip, cached softmax), metrics (confusion, mIoU, trimap),
failure analysis (DeepLab v2, Sec. 4.5): ``thinness`` (skeleton and ribbon width), ``failure`` (per-object recall,
worst images, notebook 07's tables), ``stride_bound`` (what a perfect stride-8 score map keeps),
``failure_text`` and ``failure_figures`` (notebook 07's sentences and figures)."""
