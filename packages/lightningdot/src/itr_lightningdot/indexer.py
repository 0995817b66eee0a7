"""faiss indexes of ``dvl/indexer/faiss_indexers.py`` (from DPR): exact inner product and HNSW.

- :class:`DenseFlatIndexer`: ``faiss.IndexFlatIP``, exact maximum inner product (the default);
- :class:`DenseIVFFlatIndexer` (ours): inverted lists, inner product, for galleries of a million and more;
- :class:`DenseHNSWFlatIndexer`: ``faiss.IndexHNSWFlat(d + 1, store_n)`` on vectors augmented with
  ``sqrt(phi - |x|^2)`` (phi = the largest squared norm), which turns maximum inner product into
  nearest L2 neighbour; original parameters ``store_n`` (HNSW M) 512, ``efSearch`` 128,
  ``efConstruction`` 200.

Fixes: the original set ``self.phi = 0`` after computing phi, so its guard against a second
``index_data`` call (which would break the transform) never fired; here phi is kept, a second call
raises, and a loaded index carries its phi. HNSW search returned L2 distances; here both indexes
return inner products (``q.x = (|q|^2 + phi - d) / 2``), so scores are comparable.

On disk (:meth:`DenseIndexer.serialize`): ``{prefix}.index.dpr`` (faiss, as the original) and
``{prefix}.index_meta.json`` (ids and facts, JSON instead of the original's pickle).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from itr_common.errors import UserError, fail, require_file
from itr_common.fileio import read_json, write_json_atomic

LOGGER = logging.getLogger(__name__)

HNSW_STORE_N = 512
HNSW_EF_SEARCH = 128
HNSW_EF_CONSTRUCTION = 200
META_FORMAT = "itr_lightningdot.index/1"


def _faiss() -> Any:
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probes are not news
    import faiss

    return faiss


def _as_matrix(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        fail(f"{what}: expected vectors of dimension {dim}, found shape {tuple(arr.shape)}")
    if not np.isfinite(arr).all():
        fail(f"{what}: expected finite vectors, found NaN/inf")
    return arr


class DenseIndexer:
    """Vectors with external ids; ``search`` returns (scores (Q, k), row indices (Q, k))."""

    kind = "base"

    def __init__(self, vector_sz: int, buffer_size: int = 50000) -> None:
        self.vector_sz = int(vector_sz)
        self.buffer_size = buffer_size
        self.index_id_to_db_id: list[Any] = []
        self.index: Any = None

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def index_data(self, data: Sequence[tuple[Any, np.ndarray]]) -> None:
        """The original API: a list of (id, vector)."""
        if not data:
            fail("index_data: expected at least one (id, vector), found none")
        ids = [d[0] for d in data]
        vectors = np.stack([np.reshape(d[1], -1) for d in data])
        self.index_vectors(vectors, ids)

    def index_vectors(self, vectors: np.ndarray, ids: Sequence[Any] | None = None) -> None:
        raise NotImplementedError

    def _add(self, arr: np.ndarray, ids: Sequence[Any] | None) -> None:
        """Add checked vectors in ``buffer_size`` blocks; ids default to the next row numbers."""
        ids = list(range(self.ntotal, self.ntotal + len(arr))) if ids is None else list(ids)
        if len(ids) != len(arr):
            fail(f"index ids: expected one per vector ({len(arr)}), found {len(ids)}")
        for i in range(0, len(arr), self.buffer_size):
            self.index.add(arr[i:i + self.buffer_size])
        self.index_id_to_db_id.extend(ids)

    def _query(self, query_vectors: np.ndarray) -> np.ndarray:
        return _as_matrix(query_vectors, self.vector_sz, "query")

    def search(self, query_vectors: np.ndarray, top_docs: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def search_knn(self, query_vectors: np.ndarray, top_docs: int) -> list[tuple[list[Any], np.ndarray]]:
        """The original API: per query (ids best first, scores)."""
        scores, rows = self.search(query_vectors, top_docs)
        return [([self.index_id_to_db_id[i] for i in r if i >= 0], s) for r, s in zip(rows, scores)]

    def meta(self) -> dict[str, Any]:
        return {"format": META_FORMAT, "kind": self.kind, "dim": self.vector_sz, "ntotal": self.ntotal}

    def serialize(self, file: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
        """Write ``{file}.index.dpr`` and ``{file}.index_meta.json`` (atomically, each)."""
        faiss = _faiss()
        base = Path(file)
        base.parent.mkdir(parents=True, exist_ok=True)
        index_file = Path(f"{base}.index.dpr")
        tmp = index_file.with_name(index_file.name + ".tmp")
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, index_file)
        write_json_atomic(Path(f"{base}.index_meta.json"),
                          {**self.meta(), "ids": list(self.index_id_to_db_id), **(extra or {})})
        return index_file

    @staticmethod
    def read_meta(file: str | os.PathLike) -> dict[str, Any]:
        meta_file = Path(f"{file}.index_meta.json")
        meta = read_json(meta_file, "index meta", expect=dict)
        if meta.get("format") != META_FORMAT:
            fail(f"{meta_file}: expected format '{META_FORMAT}', found {meta.get('format')!r}")
        return meta

    @classmethod
    def deserialize(cls, file: str | os.PathLike) -> DenseIndexer:
        """Load an index written by :meth:`serialize` (flat or HNSW, as its meta says)."""
        faiss = _faiss()
        meta = cls.read_meta(file)
        index_file = require_file(f"{file}.index.dpr", "faiss index")
        kind = meta.get("kind")
        if kind not in INDEXERS:
            fail(f"{file}.index_meta.json: expected kind one of {sorted(INDEXERS)}, found {kind!r}")
        indexer = INDEXERS[kind].__new__(INDEXERS[kind])
        DenseIndexer.__init__(indexer, int(meta["dim"]))
        try:
            indexer.index = faiss.read_index(str(index_file))
        except RuntimeError as err:
            raise UserError(f"{index_file}: expected a faiss index, could not read it ({str(err).splitlines()[0]})") \
                from None
        indexer.index_id_to_db_id = list(meta.get("ids", []))
        indexer._after_load(meta)
        if len(indexer.index_id_to_db_id) != indexer.ntotal:
            fail(f"{file}: the meta file lists {len(indexer.index_id_to_db_id)} ids, the index holds "
                 f"{indexer.ntotal} vectors")
        return indexer

    def _after_load(self, meta: dict[str, Any]) -> None:
        pass


class DenseFlatIndexer(DenseIndexer):
    """Exact inner-product search (``faiss.IndexFlatIP``)."""

    kind = "flat"

    def __init__(self, vector_sz: int, buffer_size: int = 50000) -> None:
        super().__init__(vector_sz, buffer_size)
        self.index = _faiss().IndexFlatIP(self.vector_sz)

    def index_vectors(self, vectors: np.ndarray, ids: Sequence[Any] | None = None) -> None:
        arr = _as_matrix(vectors, self.vector_sz, "index vectors")
        self._add(arr, ids)

    def search(self, query_vectors: np.ndarray, top_docs: int) -> tuple[np.ndarray, np.ndarray]:
        scores, rows = self.index.search(self._query(query_vectors), int(top_docs))
        return scores, rows


class DenseHNSWFlatIndexer(DenseIndexer):
    """HNSW over the inner-product -> L2 transform (all vectors must be indexed in one call)."""

    kind = "hnsw"

    def __init__(self, vector_sz: int, buffer_size: int = 50000, store_n: int = HNSW_STORE_N,
                 ef_search: int = HNSW_EF_SEARCH, ef_construction: int = HNSW_EF_CONSTRUCTION) -> None:
        super().__init__(vector_sz, buffer_size)
        index = _faiss().IndexHNSWFlat(self.vector_sz + 1, int(store_n))
        index.hnsw.efSearch = int(ef_search)
        index.hnsw.efConstruction = int(ef_construction)
        self.index = index
        self.phi = 0.0
        self.params = {"store_n": int(store_n), "ef_search": int(ef_search), "ef_construction": int(ef_construction)}

    def index_vectors(self, vectors: np.ndarray, ids: Sequence[Any] | None = None) -> None:
        if self.phi > 0:
            raise UserError("HNSW index: all vectors must be indexed at once (the inner-product -> L2 transform "
                            "depends on the largest norm); build a new index instead of adding to this one")
        arr = _as_matrix(vectors, self.vector_sz, "index vectors")
        ids = list(range(len(arr))) if ids is None else list(ids)
        if len(ids) != len(arr):
            fail(f"index ids: expected one per vector ({len(arr)}), found {len(ids)}")
        norms = (arr.astype(np.float64) ** 2).sum(1)
        phi = float(norms.max()) if len(arr) else 0.0
        LOGGER.info("HNSW dot product -> L2 space phi=%s", phi)
        for i in range(0, len(arr), self.buffer_size):
            block = arr[i:i + self.buffer_size]
            aux = np.sqrt(np.maximum(phi - norms[i:i + self.buffer_size], 0.0)).astype(np.float32)
            self.index.add(np.hstack([block, aux[:, None]]))
        self.phi = phi if phi > 0 else np.finfo(np.float32).tiny
        self.index_id_to_db_id.extend(ids)

    def search(self, query_vectors: np.ndarray, top_docs: int) -> tuple[np.ndarray, np.ndarray]:
        q = self._query(query_vectors)
        aux = np.zeros((len(q), 1), dtype=np.float32)
        dist, rows = self.index.search(np.hstack([q, aux]), int(top_docs))
        q_norm = (q.astype(np.float64) ** 2).sum(1, keepdims=True)
        scores = ((q_norm + self.phi - dist) / 2).astype(np.float32)
        return scores, rows

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "phi": self.phi, **self.params}

    def _after_load(self, meta: dict[str, Any]) -> None:
        self.phi = float(meta.get("phi", 1.0))
        self.params = {k: meta.get(k) for k in ("store_n", "ef_search", "ef_construction")}
        if meta.get("ef_search"):
            self.index.hnsw.efSearch = int(meta["ef_search"])


class DenseIVFFlatIndexer(DenseIndexer):
    """Ours, not in the original: ``faiss.IndexIVFFlat`` with inner product, ``nlist`` k-means lists (default
    ``4 sqrt(N)``) trained on up to ``39 nlist`` vectors, ``nprobe`` lists scanned per query. Exact within the
    scanned lists; on a 1M gallery it answers in a few ms on two cores (see the README's benchmark)."""

    kind = "ivf"

    def __init__(self, vector_sz: int, buffer_size: int = 50000, nlist: int | None = None, nprobe: int = 32) -> None:
        super().__init__(vector_sz, buffer_size)
        self.nlist, self.nprobe = nlist, int(nprobe)
        self.index = None

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) if self.index is not None else 0

    def index_vectors(self, vectors: np.ndarray, ids: Sequence[Any] | None = None) -> None:
        faiss = _faiss()
        arr = _as_matrix(vectors, self.vector_sz, "index vectors")
        if self.index is None:
            nlist = self.nlist or max(1, min(int(4 * np.sqrt(len(arr))), len(arr) // 39))
            quantizer = faiss.IndexFlatIP(self.vector_sz)
            index = faiss.IndexIVFFlat(quantizer, self.vector_sz, nlist, faiss.METRIC_INNER_PRODUCT)
            index.own_fields = True
            quantizer.this.disown()
            rng = np.random.default_rng(0)
            sample = arr[rng.choice(len(arr), min(len(arr), 39 * nlist), replace=False)]
            index.train(sample)
            index.nprobe = self.nprobe
            self.index, self.nlist = index, nlist
        self._add(arr, ids)

    def search(self, query_vectors: np.ndarray, top_docs: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(self._query(query_vectors), int(top_docs))

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "nlist": self.nlist, "nprobe": self.nprobe}

    def _after_load(self, meta: dict[str, Any]) -> None:
        self.nlist, self.nprobe = meta.get("nlist"), int(meta.get("nprobe", 32))
        self.index.nprobe = self.nprobe


INDEXERS: dict[str, type[DenseIndexer]] = {"flat": DenseFlatIndexer, "hnsw": DenseHNSWFlatIndexer,
                                           "ivf": DenseIVFFlatIndexer}


def make_indexer(vector_sz: int, hnsw: bool = False, ivf: bool = False, **params: Any) -> DenseIndexer:
    """``DenseHNSWFlatIndexer`` when ``hnsw`` (``--hnsw_index``), ``DenseIVFFlatIndexer`` when ``ivf`` (ours),
    else ``DenseFlatIndexer``."""
    if hnsw and ivf:
        fail("--hnsw_index/--ivf_index: expected one index kind, found both")
    if hnsw:
        return DenseHNSWFlatIndexer(vector_sz, **params)
    if ivf:
        return DenseIVFFlatIndexer(vector_sz, **params)
    return DenseFlatIndexer(vector_sz)
