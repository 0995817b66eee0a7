"""A synthetic image-text world whose retrieval needs word-region alignment.

The world has a concept inventory of objects (nouns), attributes (adjectives: colours, sizes,
materials) and backgrounds (scene stuff: sky, wall, ...), all real lower-case English words, each with
a random unit direction in feature space. An image holds a few objects, each with one attribute; each
object is seen by one or more detector regions whose feature is ``object + attribute + image offset +
noise``, with a box whose size, aspect and height depend on the object class. Background regions
(``background + noise``, mid confidence) and low-confidence junk regions (a faint concept + noise)
fill the rest. Objects are shared across images, so what identifies an image is its set of objects and
the binding of each object to its attribute. Captions mention 2-3 of an image's attribute-object pairs
("a red dog next to a wooden table ."), attribute right before its noun, in varied templates with
filler words; every image has ``captions_per_image`` different captions.

Regions are sorted by detector confidence, highest first. The first ``n_regions`` rows are what the
precomp layout stores (36 at full size); all ``max_regions`` rows are available to the UNITER img_db
and VinVL TSV writers, which keep ``nbb = clip(#(conf > 0.2), min_bb, max_bb)`` rows as the originals do.
Every object and background region has confidence > 0.2 and is inside the first ``n_regions`` rows.

Everything is a pure function of the :class:`WorldConfig` (numpy only); each split draws from its own
generator seeded by ``(seed, split)`` so the test split does not change when ``n_train`` does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from itr_common.errors import did_you_mean, fail

SPLITS = ("train", "dev", "test")
UNITER_LABEL_CLASSES = 1601  # Visual Genome 1600 classes + background, UNITER's soft_labels width

# Real English words, lower case; BERT vocabularies (cased and uncased) hold each as one token.
OBJECT_WORDS = (
    "dog", "cat", "car", "table", "chair", "horse", "bird", "bicycle", "boat", "ball",
    "cup", "book", "bag", "hat", "bench", "kite", "train", "bus", "truck", "umbrella",
    "clock", "lamp", "bottle", "plate", "phone", "shirt", "flower", "fence", "door", "sign",
    "sheep", "cow", "elephant", "pizza", "cake", "laptop", "couch", "bed", "guitar", "bowl",
    "vase", "banana", "apple", "sandwich", "giraffe", "zebra", "bear", "motorcycle", "airplane", "tie",
    "skateboard", "surfboard", "frisbee", "backpack", "suitcase", "spoon", "knife", "oven", "sink", "toilet",
)
ATTRIBUTE_WORDS = (
    "red", "blue", "green", "yellow", "black", "white", "brown", "orange", "pink", "purple",
    "gray", "large", "tiny", "wooden", "metal", "plastic", "old", "striped", "shiny", "dark",
    "bright", "wet", "dirty", "empty",
)
BACKGROUND_WORDS = (
    "sky", "wall", "grass", "floor", "road", "water", "building", "ground", "tree", "sand",
    "snow", "ceiling",
)

# Caption templates. ``{x}`` is "a red dog" (article + attribute + noun), ``{x_}`` is "red dog".
TEMPLATES_2 = (
    "{a} next to {b} .",
    "there is {a} and {b}",
    "{a} near {b} .",
    "a photo of {a} with {b} .",
    "{a} beside {b}",
    "in this picture {a} is close to {b} .",
    "{a} , {b} .",
    "we can see {a} and {b} here .",
    "the {a_} is next to the {b_} .",
    "an image showing {a} and {b}",
)
TEMPLATES_3 = (
    "{a} , {b} and {c} .",
    "there is {a} , {b} and {c}",
    "a photo of {a} with {b} and {c} .",
    "{a} next to {b} near {c} .",
    "the {a_} , the {b_} and the {c_} .",
    "in this picture we can see {a} , {b} and {c} .",
)
TEMPLATES_1 = (
    "{a} .",
    "a photo of {a} .",
    "there is {a} here",
)
TEMPLATES = {1: TEMPLATES_1, 2: TEMPLATES_2, 3: TEMPLATES_3}
PUNCTUATION = (".", ",")

# Detector confidences by region kind (uniform ranges). Objects and backgrounds pass UNITER's 0.2.
CONF_OBJECT = (0.55, 0.99)
CONF_OBJECT_PART = (0.3, 0.8)
CONF_BACKGROUND = (0.21, 0.6)
CONF_JUNK = (0.01, 0.19)

KIND_OBJECT, KIND_BACKGROUND, KIND_JUNK = 0, 1, 2


@dataclass(frozen=True)
class WorldConfig:
    """Everything that defines a world; the presets are :data:`PRESETS` (``tiny``, ``small``, ``demo``, ``base``).

    Ranges are inclusive ``(low, high)`` pairs.
    """

    seed: int = 0
    n_train: int = 48
    n_dev: int = 16
    n_test: int = 20
    captions_per_image: int = 5
    n_regions: int = 12
    max_regions: int = 16
    feat_dim: int = 32
    n_objects: int = 12
    n_attributes: int = 8
    n_backgrounds: int = 4
    objects_per_image: tuple[int, int] = (3, 4)
    regions_per_object: tuple[int, int] = (1, 2)
    backgrounds_per_image: tuple[int, int] = (2, 4)
    mentions_per_caption: tuple[int, int] = (2, 3)
    noise: float = 0.35
    image_offset: float = 0.2
    junk_concept_weight: float = 0.4
    image_width: tuple[int, int] = (400, 640)
    image_height: tuple[int, int] = (300, 640)
    n_label_classes: int = UNITER_LABEL_CLASSES
    img_db_soft_labels: bool = True  # write (nbb, n_label_classes) soft labels into the UNITER img_db

    def __post_init__(self) -> None:
        validate_config(self)

    @property
    def n_images(self) -> int:
        return self.n_train + self.n_dev + self.n_test

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "dev": self.n_dev, "test": self.n_test}

    def replace(self, **changes: object) -> WorldConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _check_range(name: str, value: tuple[int, int], low: int) -> None:
    if len(value) != 2 or value[0] > value[1] or value[0] < low:
        fail(f"WorldConfig.{name}: expected an inclusive range (lo, hi) with {low} <= lo <= hi, found {value}")


def validate_config(cfg: WorldConfig) -> None:
    """Fail with one line on the first inconsistent field of ``cfg``."""
    for name in ("n_train", "n_dev", "n_test"):
        if getattr(cfg, name) < 1:
            fail(f"WorldConfig.{name}: expected at least 1 image, found {getattr(cfg, name)}")
    if cfg.captions_per_image < 1:
        fail(f"WorldConfig.captions_per_image: expected >= 1, found {cfg.captions_per_image}")
    if cfg.feat_dim < 2:
        fail(f"WorldConfig.feat_dim: expected >= 2, found {cfg.feat_dim}")
    for name, pool in (("n_objects", OBJECT_WORDS), ("n_attributes", ATTRIBUTE_WORDS),
                       ("n_backgrounds", BACKGROUND_WORDS)):
        value = getattr(cfg, name)
        if not 1 <= value <= len(pool):
            fail(f"WorldConfig.{name}: expected 1..{len(pool)} (words available), found {value}")
    _check_range("objects_per_image", cfg.objects_per_image, 1)
    _check_range("regions_per_object", cfg.regions_per_object, 1)
    _check_range("backgrounds_per_image", cfg.backgrounds_per_image, 0)
    _check_range("mentions_per_caption", cfg.mentions_per_caption, 1)
    _check_range("image_width", cfg.image_width, 16)
    _check_range("image_height", cfg.image_height, 16)
    if cfg.mentions_per_caption[1] > max(TEMPLATES):
        fail(f"WorldConfig.mentions_per_caption: expected at most {max(TEMPLATES)}, found {cfg.mentions_per_caption}")
    if cfg.objects_per_image[1] > cfg.n_objects:
        fail(f"WorldConfig.objects_per_image: expected at most n_objects={cfg.n_objects} distinct objects, "
             f"found {cfg.objects_per_image}")
    needed = cfg.objects_per_image[1] * cfg.regions_per_object[1] + cfg.backgrounds_per_image[1]
    if needed > cfg.n_regions:
        fail(f"WorldConfig.n_regions: expected room for {needed} object and background regions, found {cfg.n_regions}")
    if cfg.max_regions < cfg.n_regions:
        fail(f"WorldConfig.max_regions: expected >= n_regions={cfg.n_regions}, found {cfg.max_regions}")
    if cfg.n_label_classes < 1 + cfg.n_objects + cfg.n_backgrounds:
        fail(f"WorldConfig.n_label_classes: expected >= {1 + cfg.n_objects + cfg.n_backgrounds}, "
             f"found {cfg.n_label_classes}")
    if cfg.noise < 0 or cfg.image_offset < 0 or cfg.junk_concept_weight < 0:
        fail("WorldConfig.noise/image_offset/junk_concept_weight: expected non-negative values")


PRESETS: dict[str, WorldConfig] = {
    # tests: < 1 s to generate; COCO testall = 5 folds of 4 images
    "tiny": WorldConfig(),
    # quick local runs
    "small": WorldConfig(
        n_train=400, n_dev=100, n_test=100, n_regions=20, max_regions=24, feat_dim=64, n_objects=24,
        n_attributes=12, n_backgrounds=6, objects_per_image=(3, 5), regions_per_object=(1, 2),
        backgrounds_per_image=(2, 6),
    ),
    # `make demo`: a few thousand images, 36 regions; COCO testall = 5 folds of 100 images
    "demo": WorldConfig(
        n_train=2000, n_dev=200, n_test=500, n_regions=36, max_regions=40, feat_dim=256, n_objects=40,
        n_attributes=16, n_backgrounds=10, objects_per_image=(3, 6), regions_per_object=(1, 3),
        backgrounds_per_image=(4, 12), img_db_soft_labels=False,
    ),
    # full-size shapes: 2048-d regions, 36 precomp boxes, up to 50 img_db/TSV rows (<= max_bb=100); ~0.5 GB
    "base": WorldConfig(
        n_train=500, n_dev=100, n_test=500, n_regions=36, max_regions=50, feat_dim=2048, n_objects=60,
        n_attributes=24, n_backgrounds=12, objects_per_image=(3, 6), regions_per_object=(1, 3),
        backgrounds_per_image=(4, 16), img_db_soft_labels=False,
    ),
}


def preset(name: str, **overrides: object) -> WorldConfig:
    """The named preset with ``overrides`` applied (e.g. ``preset("tiny", seed=3)``)."""
    if name not in PRESETS:
        fail(f"--size: expected one of {', '.join(PRESETS)}, found '{name}'{did_you_mean(name, PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


# ----------------------------------------------------------------------------------------------
# the world


@dataclass
class WorldSplit:
    """One split of the world. N images, R = ``n_regions``, M = ``max_regions``, D = ``feat_dim``, k captions each.

    Attributes:
        name: ``train``, ``dev`` or ``test``.
        features: float32 (N, M, D), regions sorted by confidence, highest first.
        boxes: float32 (N, M, 4) x1, y1, x2, y2 in pixels.  conf: float32 (N, M) detector confidences.
        region_class: int64 (N, M) index into :attr:`World.class_names` (1.. objects, then backgrounds).
        region_kind: int8 (N, M) 0 object, 1 background, 2 junk.
        img_sizes: float32 (N, 2) W, H.
        image_ids: int64 (N,) COCO-like ids, unique across splits.
        sent_ids: int64 (k*N,) caption ids (Karpathy ``sentid`` style), unique across splits.
        captions: k*N str, k per image in image order.
        scenes: per image, the ``(attribute, object)`` index pairs it shows.
        mentions: per caption, the ``(attribute, object)`` index pairs it mentions.
        n_regions: R, the rows of the precomp view :attr:`images`.
    """

    name: str
    features: np.ndarray
    boxes: np.ndarray
    conf: np.ndarray
    region_class: np.ndarray
    region_kind: np.ndarray
    img_sizes: np.ndarray
    image_ids: np.ndarray
    sent_ids: np.ndarray
    captions: list[str]
    scenes: list[tuple[tuple[int, int], ...]]
    mentions: list[tuple[tuple[int, int], ...]]
    n_regions: int
    captions_per_image: int

    @property
    def n_images(self) -> int:
        return int(self.features.shape[0])

    @property
    def images(self) -> np.ndarray:
        """float32 (N, R, D): the first R regions, the precomp ``{split}_ims.npy`` array."""
        return self.features[:, : self.n_regions]

    @property
    def precomp_boxes(self) -> np.ndarray:
        """float32 (N, R, 4): boxes of :attr:`images`."""
        return self.boxes[:, : self.n_regions]

    def caption_image(self, caption_index: int) -> int:
        """The image of caption ``caption_index``: ``caption_index // k``."""
        return caption_index // self.captions_per_image

    def num_bb(self, conf_th: float = 0.2, min_bb: int = 10, max_bb: int = 100) -> np.ndarray:
        """int64 (N,): UNITER's ``min(max_bb, max(min_bb, (conf > conf_th).sum()))`` per image, at most M."""
        above = (self.conf > conf_th).sum(axis=1)
        return np.minimum(np.minimum(max_bb, np.maximum(min_bb, above)), self.conf.shape[1]).astype(np.int64)

    def norm_bb(self) -> np.ndarray:
        """float32 (N, M, 6): ``[x1/W, y1/H, x2/W, y2/H, w/W, h/H]`` (UNITER ``norm_bb``, VinVL box columns)."""
        w = self.img_sizes[:, None, 0:1]
        h = self.img_sizes[:, None, 1:2]
        x1, y1, x2, y2 = (self.boxes[..., i : i + 1] for i in range(4))
        out = np.concatenate([x1 / w, y1 / h, x2 / w, y2 / h, (x2 - x1) / w, (y2 - y1) / h], axis=-1)
        return out.astype(np.float32)

    def soft_labels(self, n_classes: int = UNITER_LABEL_CLASSES, rows: slice | None = None) -> np.ndarray:
        """float32 (N, M, n_classes) detector class distributions: ``conf`` on the region's class, the rest on
        background (column 0). ``rows`` selects images (to stay cheap with 1601 classes)."""
        rows = rows if rows is not None else slice(None)
        cls = self.region_class[rows]
        conf = self.conf[rows]
        if cls.size and int(cls.max()) >= n_classes:
            fail(f"soft_labels: expected n_classes > {int(cls.max())}, found {n_classes}")
        out = np.zeros(cls.shape + (n_classes,), dtype=np.float32)
        np.put_along_axis(out, cls[..., None], conf[..., None], axis=-1)
        out[..., 0] += 1.0 - conf
        return out


@dataclass
class World:
    """The concept inventory and the three splits. Vectors are float32 unit rows of length D."""

    config: WorldConfig
    objects: tuple[str, ...]
    attributes: tuple[str, ...]
    backgrounds: tuple[str, ...]
    object_vectors: np.ndarray
    attribute_vectors: np.ndarray
    background_vectors: np.ndarray
    splits: dict[str, WorldSplit] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        """Detector classes: ``__background__``, the objects, then the backgrounds (soft-label columns)."""
        return ["__background__", *self.objects, *self.backgrounds]

    def split(self, name: str) -> WorldSplit:
        if name not in self.splits:
            fail(f"split: expected one of {', '.join(self.splits)}, found '{name}'")
        return self.splits[name]

    @property
    def words(self) -> list[str]:
        """Every word that can appear in a caption or an object tag, sorted (punctuation included)."""
        words: set[str] = set(self.objects) | set(self.attributes) | set(self.backgrounds) | set(PUNCTUATION)
        words |= {"a", "an", "the"}
        for template in (t for group in TEMPLATES.values() for t in group):
            words |= {w for w in template.split() if not w.startswith("{")}
        for split in self.splits.values():  # the templates are the only source; this keeps it honest
            for caption in split.captions:
                words.update(caption.split())
        return sorted(words)


def _unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _phrase(attr: str, obj: str, with_article: bool) -> str:
    return f"{_article(attr)} {attr} {obj}" if with_article else f"{attr} {obj}"


def render_caption(template: str, pairs: Sequence[tuple[str, str]]) -> str:
    """Fill ``template`` with ``(attribute, object)`` word pairs: ``{a}`` "a red dog", ``{a_}`` "red dog"."""
    values: dict[str, str] = {}
    for slot, (attr, obj) in zip("abc", pairs):
        values[slot] = _phrase(attr, obj, True)
        values[slot + "_"] = _phrase(attr, obj, False)
    return template.format(**values)


@dataclass(frozen=True)
class _Geometry:
    """Per object class: typical box size (fraction of the image width), aspect (w/h), centre height (fraction)."""

    size: np.ndarray
    aspect: np.ndarray
    centre_y: np.ndarray


def _geometry(rng: np.random.Generator, n: int, size_range: tuple[float, float]) -> _Geometry:
    return _Geometry(
        size=rng.uniform(*size_range, n),
        aspect=np.exp(rng.uniform(np.log(0.5), np.log(2.0), n)),
        centre_y=rng.uniform(0.25, 0.75, n),
    )


def _box(rng: np.random.Generator, w: float, h: float, size: float, aspect: float, centre_y: float) -> list[float]:
    bw = float(np.clip(size * w * rng.uniform(0.8, 1.25), 8.0, w))
    bh = float(np.clip(bw / aspect, 8.0, h))
    cx = rng.uniform(bw / 2, w - bw / 2)
    cy = float(np.clip(centre_y * h + rng.normal(0.0, 0.1 * h), bh / 2, h - bh / 2))
    return [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]


def _split_seed(seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng([seed, 1 + SPLITS.index(split)])


def _captions_for(
    rng: np.random.Generator, cfg: WorldConfig, world: World, scene: tuple[tuple[int, int], ...]
) -> tuple[list[str], list[tuple[tuple[int, int], ...]]]:
    """k different captions of one scene and the pairs each mentions."""
    captions: list[str] = []
    mentions: list[tuple[tuple[int, int], ...]] = []
    lo, hi = cfg.mentions_per_caption
    for attempt in range(64 * cfg.captions_per_image):
        if len(captions) == cfg.captions_per_image:
            break
        n = int(rng.integers(min(lo, len(scene)), min(hi, len(scene)) + 1))
        chosen = tuple(scene[i] for i in rng.permutation(len(scene))[:n])
        templates = TEMPLATES[n]
        template = templates[int(rng.integers(len(templates)))]
        text = render_caption(template, [(world.attributes[a], world.objects[o]) for a, o in chosen])
        unique_needed = attempt < 48 * cfg.captions_per_image
        if text in captions and unique_needed:
            continue
        captions.append(text)
        mentions.append(chosen)
    return captions, mentions


def _generate_split(world: World, split: str, n_images: int, id_pool: np.ndarray, sent_start: int) -> WorldSplit:
    cfg = world.config
    rng = _split_seed(cfg.seed, split)
    geo_rng = np.random.default_rng([cfg.seed, 0, 1])  # class geometry is shared by all splits
    obj_geo = _geometry(geo_rng, cfg.n_objects, (0.12, 0.5))
    bg_geo = _geometry(geo_rng, cfg.n_backgrounds, (0.5, 1.0))

    m, d = cfg.max_regions, cfg.feat_dim
    n_obj, n_attr = cfg.n_objects, cfg.n_attributes
    # concept table rows: objects, attributes, backgrounds, then one zero row for "no concept"
    table = np.concatenate(
        [world.object_vectors, world.attribute_vectors, world.background_vectors, np.zeros((1, d), np.float32)]
    )
    none_row = table.shape[0] - 1
    concept_a = np.full((n_images, m), none_row, dtype=np.int64)
    concept_b = np.full((n_images, m), none_row, dtype=np.int64)
    weight_a = np.zeros((n_images, m), dtype=np.float32)
    boxes = np.zeros((n_images, m, 4), dtype=np.float32)
    conf = np.zeros((n_images, m), dtype=np.float32)
    region_class = np.zeros((n_images, m), dtype=np.int64)
    region_kind = np.zeros((n_images, m), dtype=np.int8)
    img_sizes = np.zeros((n_images, 2), dtype=np.float32)
    captions: list[str] = []
    scenes: list[tuple[tuple[int, int], ...]] = []
    mentions: list[tuple[tuple[int, int], ...]] = []

    for i in range(n_images):
        w = float(rng.integers(cfg.image_width[0], cfg.image_width[1] + 1))
        h = float(rng.integers(cfg.image_height[0], cfg.image_height[1] + 1))
        img_sizes[i] = (w, h)
        n_objects = int(rng.integers(cfg.objects_per_image[0], cfg.objects_per_image[1] + 1))
        objs = rng.choice(n_obj, size=n_objects, replace=False)
        attrs = rng.integers(0, n_attr, size=n_objects)
        scene = tuple((int(a), int(o)) for a, o in zip(attrs, objs))
        scenes.append(scene)

        rows: list[tuple[float, int, int, float, int, int, list[float]]] = []  # conf, a, b, w_a, class, kind, box
        for a, o in scene:
            n_parts = int(rng.integers(cfg.regions_per_object[0], cfg.regions_per_object[1] + 1))
            for part in range(n_parts):
                c = rng.uniform(*(CONF_OBJECT if part == 0 else CONF_OBJECT_PART))
                box = _box(rng, w, h, obj_geo.size[o] * (1.0 if part == 0 else 0.6), obj_geo.aspect[o],
                           obj_geo.centre_y[o])
                rows.append((c, o, n_obj + a, 1.0, 1 + o, KIND_OBJECT, box))
        n_bg = int(rng.integers(cfg.backgrounds_per_image[0], cfg.backgrounds_per_image[1] + 1))
        for b in rng.integers(0, cfg.n_backgrounds, size=n_bg):
            c = rng.uniform(*CONF_BACKGROUND)
            box = _box(rng, w, h, bg_geo.size[b], bg_geo.aspect[b], bg_geo.centre_y[b])
            rows.append((c, n_obj + n_attr + b, none_row, 1.0, 1 + n_obj + b, KIND_BACKGROUND, box))
        while len(rows) < m:  # junk: a faint random object or background, low confidence, small box
            c = rng.uniform(*CONF_JUNK)
            if rng.random() < 0.5:
                o = int(rng.integers(n_obj))
                concept, cls = o, 1 + o
            else:
                b = int(rng.integers(cfg.n_backgrounds))
                concept, cls = n_obj + n_attr + b, 1 + n_obj + b
            box = _box(rng, w, h, rng.uniform(0.05, 0.3), 1.0, rng.uniform(0.2, 0.8))
            rows.append((c, concept, none_row, cfg.junk_concept_weight, cls, KIND_JUNK, box))

        rows.sort(key=lambda r: -r[0])
        for j, (c, a, b, wa, cls, kind, box) in enumerate(rows):
            conf[i, j], concept_a[i, j], concept_b[i, j], weight_a[i, j] = c, a, b, wa
            region_class[i, j], region_kind[i, j], boxes[i, j] = cls, kind, box

        caps, ments = _captions_for(rng, cfg, world, scene)
        captions.extend(caps)
        mentions.extend(ments)

    features = rng.standard_normal((n_images, m, d), dtype=np.float32)
    features *= np.float32(cfg.noise / np.sqrt(d))
    offsets = rng.standard_normal((n_images, 1, d), dtype=np.float32) * np.float32(cfg.image_offset / np.sqrt(d))
    features += offsets
    for lo in range(0, n_images, 256):  # in chunks: no full-size temporaries at 2048-d
        hi = lo + 256
        features[lo:hi] += weight_a[lo:hi, :, None] * table[concept_a[lo:hi]]
        features[lo:hi] += table[concept_b[lo:hi]]
    k = cfg.captions_per_image
    return WorldSplit(
        name=split,
        features=features,
        boxes=boxes,
        conf=conf,
        region_class=region_class,
        region_kind=region_kind,
        img_sizes=img_sizes,
        image_ids=id_pool.astype(np.int64),
        sent_ids=np.arange(sent_start, sent_start + k * n_images, dtype=np.int64),
        captions=captions,
        scenes=scenes,
        mentions=mentions,
        n_regions=cfg.n_regions,
        captions_per_image=k,
    )


def generate_world(cfg: WorldConfig) -> World:
    """The world of ``cfg``: deterministic from ``cfg.seed`` (same config -> same arrays and captions)."""
    concept_rng = np.random.default_rng([cfg.seed, 0, 0])
    world = World(
        config=cfg,
        objects=OBJECT_WORDS[: cfg.n_objects],
        attributes=ATTRIBUTE_WORDS[: cfg.n_attributes],
        backgrounds=BACKGROUND_WORDS[: cfg.n_backgrounds],
        object_vectors=_unit_rows(concept_rng, cfg.n_objects, cfg.feat_dim),
        attribute_vectors=_unit_rows(concept_rng, cfg.n_attributes, cfg.feat_dim),
        background_vectors=_unit_rows(concept_rng, cfg.n_backgrounds, cfg.feat_dim),
    )
    # COCO-like image ids (1..581929), unique across splits; kept in ascending order within a split
    id_rng = np.random.default_rng([cfg.seed, 0, 2])
    ids = id_rng.choice(np.arange(1, 581930), size=cfg.n_images, replace=False)
    sizes = cfg.split_sizes()
    start = 0
    sent_start = 0
    for split in SPLITS:
        n = sizes[split]
        world.splits[split] = _generate_split(world, split, n, np.sort(ids[start : start + n]), sent_start)
        start += n
        sent_start += n * cfg.captions_per_image
    return world


def shuffled_pairs(split: WorldSplit, seed: int = 0) -> WorldSplit:
    """The honesty control: the same images and captions, captions of image ``perm[i]`` given to image ``i``.

    ``perm`` is a random derangement (no image keeps its own captions), so a model trained on the
    result sees no true pairs and must stay near chance on the real pairing.
    """
    n, k = split.n_images, split.captions_per_image
    if n < 2:
        fail(f"shuffled_pairs: expected at least 2 images, found {n}")
    rng = np.random.default_rng([seed, 7919])
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            break
    order = (perm[:, None] * k + np.arange(k)[None, :]).reshape(-1)
    return dataclasses.replace(
        split,
        captions=[split.captions[j] for j in order],
        mentions=[split.mentions[j] for j in order],
        sent_ids=split.sent_ids[order],
    )


def with_shuffled_training_pairs(world: World, splits: tuple[str, ...] = ("train", "dev"), seed: int = 0) -> World:
    """A copy of ``world`` whose ``splits`` have :func:`shuffled_pairs`; the other splits (test) stay true.

    Train a model on the copy and test it on the true test pairs: a faithful model stays near chance.
    """
    shuffled = {name: shuffled_pairs(split, seed) if name in splits else split for name, split in world.splits.items()}
    return dataclasses.replace(world, splits=shuffled)


__all__ = [
    "ATTRIBUTE_WORDS",
    "BACKGROUND_WORDS",
    "OBJECT_WORDS",
    "PRESETS",
    "SPLITS",
    "UNITER_LABEL_CLASSES",
    "World",
    "WorldConfig",
    "WorldSplit",
    "generate_world",
    "preset",
    "render_caption",
    "shuffled_pairs",
    "validate_config",
]
