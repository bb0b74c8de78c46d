"""Reading and generating with memory: a prompt read segment by segment and tokens generated across
segment boundaries (each full segment re-compressed) give the teacher-forced logits and their argmax
path; reading in pieces equals reading at once; sampling follows its seed, top-k, top-p and EOS; the
decoder's mask is the one written out by hand."""
import pytest
import torch

from conftest import ref, rel_err, tiny_model, write_export
from uio_memory import UioMemoryModel, sample_token


def _model(tmp_path, gen, kind, memory_rope="none", factor=1.0, l=16, M=4):
    model = tiny_model(kind, int(torch.randint(1 << 30, (1,), generator=gen)))
    spec = ref.Spec(l=l, M=M)
    weights = ref.make_uio_weights(model, spec, gen)
    return UioMemoryModel.from_export(model, write_export(tmp_path, model, weights, spec, memory_rope, factor))


@pytest.mark.parametrize("kind, memory_rope", [("llama", "dynamic"), ("qwen2", "none")])
def test_greedy_generation_across_segments_is_the_teacher_forced_argmax_path(tmp_path, gen, kind, memory_rope):
    uio = _model(tmp_path, gen, kind, memory_rope, 2.0)
    prompt = torch.randint(uio.base.config.vocab_size, (2 * 16 + 9,), generator=gen)
    new = uio.generate(prompt, max_new_tokens=30)  # the segment fills at 48 and 64: two re-compressions
    assert new.numel() == 30
    logits = uio.segment_logits(torch.cat([prompt, new]))
    assert new.tolist() == logits[prompt.numel() - 1:-1].argmax(-1).tolist()


def test_logits_while_reading_token_by_token_equal_the_teacher_forced_logits(tmp_path, gen):
    uio = _model(tmp_path, gen, "llama", "yarn", 4.0, l=8, M=2)
    ids = torch.randint(uio.base.config.vocab_size, (5 * 8 + 3,), generator=gen)
    want = uio.segment_logits(ids)
    reader = uio.reader()
    got = [reader.read(ids[:11].tolist())] + [reader.read([t]) for t in ids[11:].tolist()]
    assert reader.segments == 5 and len(reader.pending) == 3
    assert rel_err(torch.stack(got), want[10:]) <= 1e-5


def test_a_prompt_read_in_pieces_gives_what_it_gives_read_at_once(tmp_path, gen):
    uio = _model(tmp_path, gen, "qwen2")
    ids = torch.randint(uio.base.config.vocab_size, (4 * 16 + 2,), generator=gen).tolist()
    whole = uio.reader().read(ids)
    pieces = uio.reader()
    for cut in ((0, 5), (5, 37), (37, 48), (48, 66)):  # ends mid-segment, on a boundary, past one
        last = pieces.read(ids[cut[0]:cut[1]])
    assert pieces.segments == 4
    assert rel_err(last, whole) <= 1e-5


def test_sampling_follows_its_seed_and_cuts(tmp_path, gen):
    uio = _model(tmp_path, gen, "llama")
    prompt = torch.randint(uio.base.config.vocab_size, (20,), generator=gen)
    greedy = uio.generate(prompt, 12)
    a = uio.generate(prompt, 12, temperature=1.5, seed=7)
    assert torch.equal(a, uio.generate(prompt, 12, temperature=1.5, seed=7))
    assert not torch.equal(a, greedy)
    assert torch.equal(uio.generate(prompt, 12, temperature=1.5, top_k=1, seed=3), greedy)
    assert torch.equal(uio.generate(prompt, 12, temperature=1.5, top_p=1e-6, seed=3), greedy)
    stop = int(greedy[4])
    first = greedy.tolist().index(stop)
    assert uio.generate(prompt, 12, eos_token_id=stop).tolist() == greedy[:first + 1].tolist()
    assert uio.generate(prompt, 12, eos_token_id=[-5, stop]).tolist() == greedy[:first + 1].tolist()


def test_sample_token_cuts_to_top_k_and_top_p():
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0, 2.0])
    g = torch.Generator().manual_seed(11)
    assert {sample_token(logits, 1.0, top_k=2, generator=g) for _ in range(200)} == {1, 2}
    # Probabilities at temperature 1: ~0.43, 0.39, 0.16, ...: top_p 0.5 keeps the first two.
    assert {sample_token(logits, 1.0, top_p=0.5, generator=g) for _ in range(200)} == {1, 2}
    assert sample_token(logits) == 1


def test_decoder_mask_sees_all_memory_and_its_own_tokens_within_the_window():
    from uio_memory.decoder import decoder_allowed
    # 2 new tokens after 3 cached ones, 4 memory entries, window 3: the token at position 3 sees the memory
    # and positions 1..3, the one at 4 sees the memory and 2..4 (written out by hand).
    want = [[1, 1, 1, 1, 0, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0, 1, 1, 1]]
    assert decoder_allowed(4, 3, 2, sliding_window=3).int().tolist() == want
    assert decoder_allowed(2, 0, 3).int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
