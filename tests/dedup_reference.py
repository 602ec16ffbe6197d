"""Independent, literal readings of the dedup and per-image rules (docs/dedup.md), for the tests.

Plain Python and numpy with no import from `transforms`: the draw written out with hashlib
and Python ints, SemDeDup as the literal n x n upper-triangular similarity matrix, k-means
with float64 sums (np.add.at in input order), per-image curation member by member. They
follow the package's documented choices (ours) where the spec leaves one: in-cluster ties
after the order draw go to the earlier position.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

MASK = 2**64 - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def draw(seed: int, key: str) -> float:
    """BLAKE2b-64 (little-endian) XOR SplitMix64(seed), SplitMix64, top 53 bits / 2**53."""
    h = int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
    return (_splitmix64(h ^ _splitmix64(seed % 2**64)) >> 11) / 2**53


def url_key(url):
    if url is None:
        return None
    u = url.replace("\t", "").replace(" ", "")
    u = re.sub(r"https?:\/\/(www\.)?", "", u)
    u = re.sub(r"\?(utm_|ref|feed).*", "", u)
    return u.rstrip("/") or None


def text_key(text):
    return None if text is None else (" ".join(text.lower().split()) or None)


def exact_survivors(dedup_keys, sample_keys, positions, seed):
    """Per record: index of its survivor if it is a duplicate, else -1 (brute force over pairs)."""
    n = len(sample_keys)
    rank = [(draw(seed, sample_keys[i] + "\x00dedup"), positions[i]) for i in range(n)]
    out = []
    for i in range(n):
        if dedup_keys[i] is None:
            out.append(-1)
            continue
        group = [j for j in range(n) if dedup_keys[j] == dedup_keys[i]]
        best = min(group, key=lambda j: rank[j])
        out.append(-1 if best == i else best)
    return out


def semdedup_literal(x, keys, positions, centroids, seed, eps, keep="hard"):
    """SemDeDup, literal: normalise, argmax cluster, sort, triu(S).max(0) per cluster, float64.

    Returns per record (duplicate, duplicate_of index or -1, score = max earlier similarity or -inf).
    """
    x = np.asarray(x, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = np.asarray(centroids, dtype=np.float64)
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    sims = x @ c.T
    cluster = [int(np.flatnonzero(row == row.max())[0]) for row in sims]
    n = len(x)
    dup, of, score = [False] * n, [-1] * n, [-np.inf] * n
    for k in sorted(set(cluster)):
        members = [i for i in range(n) if cluster[i] == k]
        dist = {i: 1.0 - float(x[i] @ c[k]) for i in members}
        sign = -1 if keep == "hard" else 1
        members.sort(key=lambda i: (sign * dist[i], draw(seed, keys[i] + "\x00order"), positions[i]))
        xs = x[members]
        s = np.triu(xs @ xs.T, k=1)
        s[np.tril_indices(len(members))] = -np.inf
        for j in range(1, len(members)):
            col = s[:j, j]
            best = int(np.flatnonzero(col == col.max())[0])
            score[members[j]] = float(col.max())
            of[members[j]] = members[best]
            dup[members[j]] = bool(col.max() > 1 - eps)
    return dup, of, score


def kmeans_literal(x, keys, positions, k, seed, iterations):
    """Spherical k-means from the K smallest order draws; float64 sums in input order."""
    x = np.asarray(x, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    init = sorted(range(len(x)), key=lambda i: (draw(seed, keys[i] + "\x00order"), positions[i]))[:k]
    c = x[init].copy()
    previous = None
    for _ in range(iterations):
        sims = x @ c.T
        assign = np.array([int(np.flatnonzero(row == row.max())[0]) for row in sims])
        if previous is not None and (assign == previous).all():
            break
        sums = np.zeros_like(c)
        np.add.at(sums, assign, x)
        for j in range(k):
            norm = np.linalg.norm(sums[j])
            if (assign == j).any() and norm > 0:
                c[j] = sums[j] / norm
        previous = assign
    return c


def per_image_literal(url_keys, keys, matched, probs, positions, seed):
    """Per image (dict url key or own record -> (picked record or None, kept, texts order))."""
    images = {}
    for i, u in enumerate(url_keys):
        images.setdefault(("url", u) if u is not None else ("own", i), []).append(i)
    out = {}
    for image, members in images.items():
        by_text = sorted(members, key=lambda i: (draw(seed, keys[i] + "\x00text"), positions[i]))
        picked = next((i for i in by_text if matched[i]), None)
        if picked is None:
            out[image] = (None, False, by_text)
            continue
        kept = draw(seed, keys[picked]) < probs[picked]
        out[image] = (picked, kept, [picked] + [i for i in by_text if i != picked])
    return out
