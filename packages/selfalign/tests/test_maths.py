"""Every loss, score and block on a small hand-computed case, and on cases whose values were computed by the
original modules (Zjamie813/SelfAlign ``loss_SelfAlign.py``, run at tiny size outside the repository)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from itr_selfalign.alignment import ConceptAlignment, Context, context_alignment_loss, context_loss, sinkhorn
from itr_selfalign.camera import CameraImage, CameraText, camera_caption_embedding, camera_image_embedding
from itr_selfalign.layers import RsGCN, Summarization, absolute_encode, l2norm, multi_view_scores
from itr_selfalign.losses import diversity_regularization
from itr_selfalign.vsrn import VsrnImage, VsrnText, caption_loss, vsrn_caption_embedding, vsrn_image_embedding


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_l2norm_normalises_dim_1_like_the_original():
    x = torch.tensor([[[3.0, 1.0], [4.0, 0.0]]])  # (B=1, N=2, D=2): dim 1 is the region axis
    assert torch.allclose(l2norm(x), torch.tensor([[[0.6, 1.0], [0.8, 0.0]]]))


def test_absolute_box_encoding():
    boxes = torch.tensor([[[10.0, 20.0, 50.0, 100.0]]])  # x1 y1 x2 y2 -> w 40, h 80
    sizes = torch.tensor([[100.0, 200.0]])  # W, H
    got = absolute_encode(boxes, sizes)[0, 0]
    assert torch.allclose(got, torch.tensor([0.1, 0.1, 0.4, 0.4, 0.5, 3200 / 20000]))


def test_multi_view_scores_take_the_best_view():
    imgs = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [-1.0, 0.0]]])  # 2 images x 2 views
    caps = torch.tensor([[2.0, 1.0], [0.0, 3.0], [-1.0, -1.0]])
    assert torch.equal(multi_view_scores(imgs, caps), torch.tensor([[2.0, 3.0, -1.0], [3.0, 3.0, 1.0]]))


def test_rs_gcn_is_the_identity_at_init_and_reasons_after():
    torch.manual_seed(0)
    gcn = RsGCN(6, 6).eval()
    v = torch.randn(2, 6, 5)
    assert torch.equal(gcn(v), v)  # the BatchNorm of W starts at zero
    with torch.no_grad():
        gcn.W[1].weight.fill_(1.0)
    theta, phi, g = gcn.theta(v), gcn.phi(v), gcn.g(v)
    r = theta.transpose(1, 2) @ phi / 5  # (B, N, N)
    y = (r @ g.transpose(1, 2)).transpose(1, 2)
    bn = gcn.W[1]
    w_y = (gcn.W[0](y) - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps)
    assert torch.allclose(gcn(v), w_y + v, atol=1e-5)


def test_summarization_keeps_every_region():
    smry = Summarization(8, 3)(torch.randn(2, 36, 8))
    assert smry.shape == (2, 36, 3)  # the 7 dilated branches all keep 36 positions


def test_diversity_regularisation_hand_cases():
    assert diversity_regularization(torch.eye(2).unsqueeze(0)).item() == pytest.approx(0.0)
    # identical views: normalised columns (1/sqrt2, 1/sqrt2), Gram all ones, off-diagonal 1 twice
    assert diversity_regularization(torch.ones(1, 2, 2)).item() == pytest.approx(2.0)
    assert diversity_regularization(torch.ones(3, 2, 2)).item() == pytest.approx(6.0)  # summed over the batch


def test_sinkhorn_symmetric_hand_case():
    codes = sinkhorn(torch.eye(2), epsilon=1.0, iterations=1)
    a = sigmoid(1.0)
    assert torch.allclose(codes, torch.tensor([[a, 1 - a], [1 - a, a]]))
    assert torch.allclose(codes.sum(dim=1), torch.ones(2))


def test_concept_alignment_hand_case():
    loss_fn = ConceptAlignment(2, nmb_prototypes=2)
    with torch.no_grad():
        loss_fn.v_prototypes.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))  # renormalised to I by forward
    regions = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    words = torch.tensor([[[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]]])  # the third word is padding (length 2)
    loss = loss_fn(regions, words, torch.tensor([2]))
    assert torch.allclose(loss_fn.v_prototypes.weight, torch.eye(2))
    q0 = [sigmoid(20.0), sigmoid(-20.0)]  # Sinkhorn codes of region 0 (eps 0.05) = word 0's target
    q1 = [sigmoid(-20.0), sigmoid(20.0)]  # region 1 = word 1's target
    log0 = F.log_softmax(torch.tensor([8.0, 6.0]), 0).tolist()  # word-prototype scores / 0.1
    log1 = F.log_softmax(torch.tensor([0.0, 10.0]), 0).tolist()
    ce = [-(q0[0] * log0[0] + q0[1] * log0[1]), -(q1[0] * log1[0] + q1[1] * log1[1])]
    assert loss.item() == pytest.approx(sum(ce) / 2, rel=1e-5)


def test_concept_alignment_matches_the_original_module():
    # LCA_loss(in_dim=6, nmb_prototypes=7, student_temp=0.1, epsilon=0.05, sinkhorn_iterations=2) on these inputs
    # gives 3.2990362644195557 (and the same prototype gradient as ours).
    torch.manual_seed(0)
    v = F.normalize(torch.randn(3, 4, 6), dim=-1)
    t = F.normalize(torch.randn(3, 5, 6), dim=-1)
    loss = ConceptAlignment(6, nmb_prototypes=7)(v, t, torch.tensor([5, 3, 2]))
    assert loss.item() == pytest.approx(3.2990362644195557, rel=1e-6)


def test_context_alignment_hand_case():
    locals_ = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # 2 samples x 1 local
    query = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    loss = context_alignment_loss(locals_, query, temperature=1.0, neg_num=None)
    # sample 0: positive 1, negatives [self -> -10, 0]; sample 1: positive 0.8, negatives [0.6, self -> -10]
    l0 = -math.log(math.e / (math.e + math.exp(-10) + 1))
    l1 = -math.log(math.exp(0.8) / (math.exp(0.8) + math.exp(0.6) + math.exp(-10)))
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    halved = context_alignment_loss(locals_, query, temperature=0.5, neg_num=None)
    l0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(-10) + 1))
    l1 = -math.log(math.exp(1.6) / (math.exp(1.6) + math.exp(1.2) + math.exp(-10)))
    assert halved.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_context_alignment_hardest_negatives():
    torch.manual_seed(1)
    locals_ = F.normalize(torch.randn(3, 4, 5), dim=-1)
    query = F.normalize(torch.randn(3, 5), dim=-1)
    everything = context_alignment_loss(locals_, query, 0.7, neg_num=None)
    # 512 > the 12 negatives a batch of 3 x 4 locals has: the original's topk fails, ours keeps all of them
    assert context_alignment_loss(locals_, query, 0.7, neg_num=512).item() == pytest.approx(everything.item())
    hardest = context_alignment_loss(locals_, query, 0.7, neg_num=5)
    assert hardest.item() < everything.item()  # fewer negatives in the denominator


def test_context_loss_pairs_each_context_with_the_other_modality():
    torch.manual_seed(2)
    img_a, cap_a = F.normalize(torch.randn(3, 4), dim=-1), F.normalize(torch.randn(3, 4), dim=-1)
    img_l, cap_l = F.normalize(torch.randn(3, 5, 4), dim=-1), F.normalize(torch.randn(3, 6, 4), dim=-1)
    want = 0.5 * context_alignment_loss(img_l, cap_a, 0.7) + 0.5 * context_alignment_loss(cap_l, img_a, 0.3)
    assert context_loss(img_a, img_l, cap_a, cap_l, v5_tao=0.7, v6_tao=0.3).item() == pytest.approx(want.item())


def test_caption_loss_hand_case():
    probs = torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]])  # (B=1, steps=2, V=3)
    labels = torch.tensor([[1, 0, 1, 2]])  # <start>, then targets 0 and 1 (and one beyond the steps)
    masks = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert caption_loss(probs.log(), labels, masks).item() == pytest.approx(-(math.log(0.5) + math.log(0.8)))
    masks = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert caption_loss(probs.log(), labels, masks).item() == pytest.approx(-math.log(0.5))
    two = caption_loss(probs.log().repeat(2, 1, 1), labels.repeat(2, 1), masks.repeat(2, 1))
    assert two.item() == pytest.approx(-math.log(0.5))  # summed, then divided by the batch size


def _context(b: int, n: int, d: int, seed: int) -> Context:
    g = torch.Generator().manual_seed(seed)
    return Context(torch.randn(b, d, generator=g), torch.randn(b, n, d, generator=g), torch.randn(b, d, generator=g))


def test_camera_retrieval_embedding_is_the_original_concatenation():
    views, emb = torch.randn(2, 3, 4), torch.randn(5, 4)
    ictx, cctx = _context(2, 6, 4, 0), _context(5, 7, 4, 1)
    img = camera_image_embedding(CameraImage(views, None, None, ictx))
    cap = camera_caption_embedding(CameraText(emb, None, cctx))
    assert img.shape == (2, 3, 12) and cap.shape == (5, 12)
    # score = max over views of base + 0.5 * (mean(img locals) . cap fused + img fused . mean(cap locals))
    ctx = 0.5 * (ictx.locals.mean(1) @ cctx.fused.t() + ictx.fused @ cctx.locals.mean(1).t())
    want = (views @ emb.t()).amax(dim=1) + ctx
    assert torch.allclose(multi_view_scores(img, cap), want, atol=1e-5)
    assert torch.equal(camera_image_embedding(CameraImage(views, None, None, None)), views)


def test_vsrn_retrieval_embedding_is_the_original_concatenation():
    iemb, cemb = torch.randn(2, 4), torch.randn(5, 4)
    ictx, cctx = _context(2, 6, 4, 0), _context(5, 7, 4, 1)
    img = vsrn_image_embedding(VsrnImage(iemb, None, None, ictx))
    cap = vsrn_caption_embedding(VsrnText(cemb, None, cctx))
    assert torch.allclose(img[:, 0, 4:8], 0.5 * ictx.fused) and torch.allclose(cap[:, 8:], cctx.fused)
    want = iemb @ cemb.t() + 0.5 * (ictx.fused @ cctx.locals.mean(1).t() + ictx.locals.mean(1) @ cctx.fused.t())
    assert torch.allclose(img.squeeze(1) @ cap.t(), want, atol=1e-5)


@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_blocked_ranks_equal_the_full_matrix_metrics(chunk):
    from itr_common.metrics import evaluate_sims
    from itr_selfalign.evaluation import EncodedSplit, evaluate_encoded, score_matrix

    torch.manual_seed(3)
    img, cap = torch.randn(10, 3, 4), torch.randn(50, 4)
    cap[7] = img[1, 0]  # a near tie-free but strong match, to move ranks around
    enc = EncodedSplit(img, cap, 5)
    sims = score_matrix(img, cap)
    for protocol in ("1k", "coco-1k-fold5"):
        got = evaluate_encoded(enc, protocol, chunk=chunk)
        want = evaluate_sims(sims, protocol, 5)
        assert got.i2t == pytest.approx(want.i2t) and got.t2i == pytest.approx(want.t2i), protocol
