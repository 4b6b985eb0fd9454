"""Tools around the paper's code: the command line (``python -m dlib``), the notebook runner, the report, the
README's generated blocks, the committed-results check, the gpu set-up doctor, downloads and figure style."""
