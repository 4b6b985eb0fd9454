"""The training sample stream (dlib.data.sampling): epoch permutations and the split of the global batch."""

from dlib.data import sampling


def test_sample_stream_is_a_permutation_per_epoch_and_splits_the_global_batch():
    stream = sampling.SampleStream(10, seed=1)
    epoch0 = [stream.index(p) for p in range(10)]
    epoch1 = [stream.index(p) for p in range(10, 20)]
    assert sorted(epoch0) == list(range(10)) == sorted(epoch1) and epoch0 != epoch1
    one = list(sampling.MicroBatches(stream, batch_size=4, iter_size=1, world=1, rank=0, start=1, stop=3))
    parts = [list(sampling.MicroBatches(stream, batch_size=4, iter_size=2, world=2, rank=r, start=1, stop=3))
             for r in range(2)]
    # iteration 1 = positions 4..7: step 0 -> rank 0 gets 4,5 and rank 1 gets 6,7; step 1 -> 8,9 / 10,11 ...
    assert [p for _, p in one[0]] == [4, 5, 6, 7]
    assert [p for _, p in parts[0][0]] == [4] and [p for _, p in parts[1][0]] == [5]
    merged = sorted(p for r in range(2) for b in parts[r] for _, p in b)
    assert merged == sorted(p for b in one for _, p in b)
