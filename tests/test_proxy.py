"""dlib.data.proxy: the built-in proxy data set as designed (determinism, cache, scales, thin classes, context
pairs)."""

import numpy as np
import pytest
from scipy import ndimage

from dlib.core import constants
from dlib.data import proxy, proxy_drawing

ONE_OBJECT = proxy.ProxyRecipe(min_objects=1, max_objects=1, noise=0.0)


def test_proxy_is_deterministic_for_a_seed_and_differs_across_seeds_and_splits(tmp_path):
    a_img, a_lab = proxy.proxy_arrays("train", size=48, count=6, seed=3, cache_dir=tmp_path / "a")
    b_img, b_lab = proxy.proxy_arrays("train", size=48, count=6, seed=3, cache_dir=tmp_path / "b")
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    c_img, _ = proxy.proxy_arrays("train", size=48, count=6, seed=4, cache_dir=tmp_path / "a")
    v_img, _ = proxy.proxy_arrays("val", size=48, count=6, seed=3, cache_dir=tmp_path / "a")
    l_img, _ = proxy.proxy_arrays("train", size=48, count=6, seed=3, large=True, cache_dir=tmp_path / "a")
    for other in (c_img, v_img, l_img):
        assert not np.array_equal(a_img, other)
    # Image i does not depend on how many images are drawn.
    d_img, _ = proxy.proxy_arrays("train", size=48, count=3, seed=3, cache_dir=tmp_path / "c")
    assert np.array_equal(d_img, a_img[:3])


def test_proxy_cache_is_reused_and_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DLIB_CACHE_DIR", str(tmp_path))
    ds = proxy.ProxySegmentation("val", size=32, count=4, seed=0)
    files = list((tmp_path / "proxy").glob("*.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    again = proxy.ProxySegmentation("val", size=32, count=4, seed=0)
    assert files[0].stat().st_mtime_ns == mtime
    assert np.array_equal(ds.images, again.images)


def test_proxy_dataset_interface(tmp_path):
    ds = proxy.ProxySegmentation("train", size=40, count=5, seed=0, cache_dir=tmp_path)
    image, label = ds[2]
    assert len(ds) == 5 == len(ds.ids) and len(set(ds.ids)) == 5
    assert image.shape == (40, 40, 3) and image.dtype == np.uint8
    assert label.shape == (40, 40) and label.dtype == np.uint8
    assert len(ds.classes) == constants.NUM_CLASSES
    seen = []
    ds2 = proxy.ProxySegmentation("train", size=40, count=5, seed=0, cache_dir=tmp_path,
                                 transform=lambda im, lab: seen.append(im.shape) or "done")
    assert ds2[0] == "done" and seen == [(40, 40, 3)]


def test_every_class_is_present(tmp_path):
    _, labels = proxy.proxy_arrays("train", size=64, count=60, seed=0, cache_dir=tmp_path)
    assert set(np.unique(labels).tolist()) == set(range(21))


def _single(cls, seed, size=128):
    rng = np.random.default_rng(seed)
    return proxy.make_proxy_sample(rng, size, recipe=ONE_OBJECT, classes=[cls], return_objects=True)


def test_object_sizes_span_the_designed_scale_range():
    # A disc class: its label area gives the radius independently of the recorded size.
    measured, recorded, all_sizes = [], [], []
    for seed in range(60):
        _, label, objects = _single(14, seed)
        (obj,) = objects
        cy, cx = obj["centre"]
        r = obj["size"]
        all_sizes.append(r)
        if min(cy, cx) - r < 0 or max(cy, cx) + r > 127:
            continue  # clipped by the border
        measured.append(np.sqrt((label == 14).sum() / np.pi))
        recorded.append(r)
    measured, recorded = np.array(measured), np.array(recorded)
    assert len(measured) >= 20
    assert np.allclose(measured, recorded, rtol=0.12, atol=0.8)
    assert measured.max() / measured.min() > 2.5
    # designed: log-uniform over 0.05..0.40 of the image side (a factor of 8)
    assert 0.05 * 128 <= min(all_sizes) < 0.07 * 128 and 0.33 * 128 < max(all_sizes) <= 0.40 * 128


def test_large_objects_are_rare_in_train_and_common_in_val():
    def large_fraction(split):
        sizes = [o["size"] for seed in range(150)
                 for o in proxy.make_proxy_sample(np.random.default_rng(seed), 128, split=split,
                                                  return_objects=True)[2]]
        return np.mean(np.array(sizes) / 128 > 0.2)

    # val: log-uniform over [0.06, 0.30] of the side, P(size > 0.2) = ln(1.5)/ln(5) = 25% (fewer placed: large
    # objects are rejected more often); train: log-normal (std 0.35) at 35% of the log range, P = 4%.
    assert large_fraction("val") > 0.18
    assert large_fraction("train") < 0.08


def test_thin_structure_classes_are_thin_and_others_are_not():
    def surviving_fraction(cls):
        kept = total = 0
        for seed in range(12):
            _, label, _ = _single(cls, seed)
            mask = label == cls
            total += mask.sum()
            kept += ndimage.binary_erosion(mask, structure=np.ones((3, 3))).sum()  # removes parts <= 2 px wide
        return kept / total

    assert surviving_fraction(2) < 0.05  # bicycle: a wire frame of 1-2 px lines
    assert surviving_fraction(9) < 0.3  # chair: thin seat and back bars on 1-2 px legs
    for solid in set(range(1, 21)) - set(proxy.THIN_CLASSES):
        assert surviving_fraction(solid) > 0.7, proxy.PROXY_CLASSES[solid - 1].name


@pytest.mark.parametrize("pair", proxy.CONTEXT_PAIRS)
def test_context_pairs_differ_only_outside_the_object(pair):
    a, b = pair
    for seed in range(3):
        img_a, lab_a, _ = _single(a, seed)
        img_b, lab_b, _ = _single(b, seed)
        inside = lab_a == a
        assert inside.sum() > 0 and np.array_equal(inside, lab_b == b)
        assert np.array_equal(img_a[inside], img_b[inside])  # the object itself is identical
        ring = np.any(img_a != img_b, axis=-1)
        assert ring.sum() > 0 and not (ring & inside).any()
        assert (lab_a[ring] == 0).all()  # the context ring is background
        # and the ring is away from the object: at least a few pixels from it
        dist = ndimage.distance_transform_edt(~inside)
        assert dist[ring].min() >= 2


def test_proxy_edges_are_colour_edges():
    # Boundary pixels of the label sit on strong colour edges (what the CRF can use).
    img, lab, _ = _single(20, 5)
    obj = lab == 20
    edge = obj & ~ndimage.binary_erosion(obj)
    outside = ndimage.binary_dilation(obj) & ~obj
    assert np.abs(img[edge].mean(0) - img[outside].mean(0)).max() > 40


def test_bad_proxy_arguments():
    with pytest.raises(ValueError, match="split"):
        proxy.proxy_arrays("dev", size=32, count=2)
    with pytest.raises(ValueError, match="at least 16"):
        proxy.make_proxy_sample(np.random.default_rng(0), 8)


def test_the_test_split_is_drawn_with_the_versions_test_draw(tmp_path, monkeypatch):
    img, _ = proxy.proxy_arrays("test", size=40, count=2, seed=0, cache_dir=tmp_path / "a")
    expected = proxy.make_proxy_sample(np.random.default_rng([0, proxy.SPLIT_CODES["test"], 0, 1,
                                                              proxy.PROXY_TEST_DRAW]), 40, split="test")[0]
    assert np.array_equal(img[1], expected)
    monkeypatch.setattr(proxy, "PROXY_TEST_DRAW", proxy.PROXY_TEST_DRAW + 1)
    other, _ = proxy.proxy_arrays("test", size=40, count=2, seed=0, cache_dir=tmp_path / "a")
    assert not np.array_equal(img, other)  # a new draw is a new test split (and a new cache file)
    val, _ = proxy.proxy_arrays("val", size=40, count=2, seed=0, cache_dir=tmp_path / "b")
    assert np.array_equal(val[1], proxy.make_proxy_sample(np.random.default_rng([0, 2, 0, 1]), 40, split="val")[0])


def test_the_coco_stand_ins_set_differs_in_background_clutter_count_and_scale():
    train, large = proxy.proxy_recipe("train"), proxy.proxy_recipe("train", large=True)
    assert large.background == "busy" != train.background and large.clutter > train.clutter
    assert large.min_objects > train.min_objects and large.size_centre < train.size_centre
    size, rng = 96, np.random.default_rng(0)
    smooth = [np.abs(np.diff(proxy_drawing.background(rng, size).mean(-1), axis=1)).mean() for _ in range(8)]
    busy = [np.abs(np.diff(proxy_drawing.background(rng, size, "busy").mean(-1), axis=1)).mean() for _ in range(8)]
    assert min(busy) > 2 * max(smooth)  # neighbouring pixels differ far more on the busy backgrounds
    # Objects are smaller: the median object size over 60 images, large set below train.
    sizes = {}
    for large_set in (False, True):
        objs = [o["size"] for i in range(60) for o in proxy.make_proxy_sample(
            np.random.default_rng([5, i]), size, split="train", large=large_set, return_objects=True)[2]]
        sizes[large_set] = np.median(objs)
    assert sizes[True] < sizes[False]


def test_a_cached_proxy_file_with_a_label_out_of_range_is_rebuilt(tmp_path):
    import io as _io

    images, labels = proxy.proxy_arrays("train", size=32, count=3, seed=0, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    bad = labels.copy()
    bad[1, 5, 5] = 77  # no proxy class has this index
    buf = _io.BytesIO()
    np.savez(buf, images=images, labels=bad)
    path.write_bytes(buf.getvalue())
    with pytest.warns(UserWarning, match=rf"{path.name}.*label 77"):
        again_images, again_labels = proxy.proxy_arrays("train", size=32, count=3, seed=0, cache_dir=tmp_path)
    assert np.array_equal(again_labels, labels) and np.array_equal(again_images, images)  # nothing lost
    with np.load(path) as z:  # the cache file itself was rebuilt
        assert np.array_equal(z["labels"], labels)
