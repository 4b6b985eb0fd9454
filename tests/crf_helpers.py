"""What the CRF tests share: one parameter set and a synthetic scene with simulated network outputs."""

from dlib.crf import scenes

PARAMS = dict(w1=5.0, theta_alpha=8.0, theta_beta=15.0, w2=2.0, theta_gamma=1.5, iterations=4)


def scene(seed=0, h=32, w=40, classes=5):
    """(image, label, probs): a synthetic scene and the softmax a network might give for it."""
    image, label = scenes.synthetic_scene(h, w, num_objects=3, num_classes=classes, seed=seed)
    return image, label, scenes.simulate_unaries(label, classes, seed=seed)
