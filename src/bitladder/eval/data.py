"""Small real evaluation inputs that ship inside installed wheels; nothing is downloaded.

* Text: the Lee news corpus in gensim's test data (``lee_background.cor``, 300
  documents; ``lee.cor``, 50 documents with a human similarity matrix).
* Words: WordSim353 and SimLex999 pairs with human scores, also in gensim's test data.
* Images: natural photos bundled with scikit-learn (``datasets/images``) and
  scikit-image (``data/``); scikit-image's ``lfw_subset.npy`` (100 faces, 100 non-faces).
  The files are read straight from the package folders, because ``skimage.data``'s
  loaders may go through pooch, which can fetch from the web.
"""

from __future__ import annotations

import importlib.util
import pathlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PHOTOS",
    "astronaut",
    "face_mosaic",
    "imagenet_photos",
    "lee_document_pairs",
    "lee_sentences",
    "lfw_faces",
    "word_pairs",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (package, file inside it) for every natural RGB photo the wheels bundle; skimage's other
# images are grey, synthetic, microscopy or astronomy, far from ImageNet.
PHOTOS: tuple[tuple[str, str], ...] = (
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/rocket.jpg"),
    ("skimage", "data/motorcycle_left.png"),
)

_RESIZE = 256
_CROP = 224
_MIN_SENTENCE_WORDS = 5
_LEE_DIR = ("gensim", "test/test_data")
WORD_SETS = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt"}


def _package_file(package: str, relative: str) -> pathlib.Path:
    # find_spec gives the folder without importing the (heavy) package
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (pip install the 'eval' extra)")
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not in the installed {package!r} wheel")
    return path


# --- text ------------------------------------------------------------------------------------


def _lee_documents(name: str) -> list[str]:
    raw = _package_file(_LEE_DIR[0], f"{_LEE_DIR[1]}/{name}").read_bytes()
    # lee.cor is Latin-1 (it has a raw 0xA3 pound sign); lee_background.cor is plain ASCII
    text = raw.decode("latin-1")
    return [line.strip() for line in text.splitlines() if line.strip()]


def lee_sentences(limit: int | None = None) -> list[str]:
    """Sentences of the Lee corpus: ``lee_background.cor`` then ``lee.cor``, in file order.

    Documents are split on ``". "``, stripped, sentences under five words dropped and
    repeats removed (first occurrence kept). The full list has 2,683 sentences.

    >>> sentences = lee_sentences(limit=3)
    >>> len(sentences), sentences[0][:40]
    (3, 'Hundreds of people have been forced to v')
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    seen: dict[str, None] = {}
    for name in ("lee_background.cor", "lee.cor"):
        for document in _lee_documents(name):
            for piece in document.split(". "):
                sentence = piece.strip()
                if len(sentence.split()) >= _MIN_SENTENCE_WORDS:
                    seen.setdefault(sentence, None)
    return list(seen)[:limit]


def lee_document_pairs() -> tuple[list[str], np.ndarray]:
    """The 50 Lee documents and their 50x50 human similarity matrix (Lee, Pincombe & Welsh 2005).

    gensim ships the mean human judgements as the upper triangle of
    ``similarities0-1.txt`` (values in [0, 1]); it is mirrored here into a symmetric
    matrix with ones on the diagonal. Typical use: correlate the upper triangle with
    model cosine similarities of the documents.

    >>> documents, human = lee_document_pairs()
    >>> len(documents), human.shape, bool(np.allclose(human, human.T))
    (50, (50, 50), True)
    """
    documents = _lee_documents("lee.cor")
    upper = np.loadtxt(_package_file(_LEE_DIR[0], f"{_LEE_DIR[1]}/similarities0-1.txt"), dtype=np.float64)
    if upper.shape != (len(documents), len(documents)):
        raise ValueError(f"similarity matrix {upper.shape} does not match {len(documents)} documents")
    triangle = np.triu(upper, k=1)
    return documents, triangle + triangle.T + np.eye(len(documents))


def word_pairs(name: str) -> tuple[list[tuple[str, str]], np.ndarray]:
    """Word pairs and their mean human similarity: ``wordsim353`` (353 pairs, 0-10) or ``simlex999`` (999, 0-10).

    Both ship in gensim's test data as tab-separated ``word1 word2 score`` lines after ``#`` comments.

    >>> pairs, human = word_pairs("simlex999")
    >>> len(pairs), pairs[0], float(human[0])
    (999, ('old', 'new'), 1.58)
    """
    if name not in WORD_SETS:
        raise ValueError(f"unknown word set {name!r}; known: {', '.join(WORD_SETS)}")
    text = _package_file(_LEE_DIR[0], f"{_LEE_DIR[1]}/{WORD_SETS[name]}").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [(a, b) for a, b, _ in rows], np.asarray([float(score) for _, _, score in rows])


# --- images ----------------------------------------------------------------------------------


def _resized(path: pathlib.Path) -> Image.Image:
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    scale = _RESIZE / min(rgb.size)
    size = (max(_RESIZE, round(rgb.width * scale)), max(_RESIZE, round(rgb.height * scale)))
    return rgb.resize(size, Image.Resampling.BILINEAR)


def _crops(image: Image.Image) -> list[Image.Image]:
    """Centre crop first, then the four corners, each at 224x224."""
    w, h, c = image.width, image.height, _CROP
    left, top = (w - c) // 2, (h - c) // 2
    boxes = [(left, top), (0, 0), (w - c, 0), (0, h - c), (w - c, h - c)]
    return [image.crop((x, y, x + c, y + c)) for x, y in boxes]


def _normalise(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))


def imagenet_photos(augment: bool = True) -> np.ndarray:
    """Real photos as an ImageNet-normalised float32 NCHW batch of 224x224 images.

    Each photo in :data:`PHOTOS` is resized (bilinear) to 256 on its short side. The
    first ``len(PHOTOS)`` rows are the centre crops in :data:`PHOTOS` order (so row 3
    is the cat, skimage's ``chelsea``). With ``augment`` (the default) the rest follow,
    photo by photo: the four corner crops, then horizontal flips of all five crops,
    70 images in all. Deterministic.

    >>> photos = imagenet_photos(augment=False)
    >>> photos.shape, photos.dtype
    ((7, 3, 224, 224), dtype('float32'))
    """
    crops = [_crops(_resized(_package_file(package, path))) for package, path in PHOTOS]
    images = [five[0] for five in crops]
    if augment:
        for five in crops:
            images += five[1:] + [crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for crop in five]
    return np.stack([_normalise(image) for image in images])


def lfw_faces() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's LFW subset: 200 grey 25x25 crops in [0, 1] (float32) and labels (True = face).

    The first 100 are faces from LFW, the other 100 background patches of the same photos.

    >>> images, faces = lfw_faces()
    >>> images.shape, int(faces.sum())
    ((200, 25, 25), 100)
    """
    images = np.load(_package_file("skimage", "data/lfw_subset.npy")).astype(np.float32)
    return images, np.arange(len(images)) < len(images) // 2


def face_mosaic(faces: Sequence[int], columns: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """A grey "group photo": LFW face crops ``faces`` (indices below 100 of :func:`lfw_faces`) in a
    checkerboard with the background crops of the same photos (index + 100), each upscaled (bilinear) to
    ``side`` x ``side``; RGB uint8 (grey in all three channels), and the face tiles as (x1, y1, x2, y2) boxes.

    Face and background cells alternate along rows and columns (a face's neighbours are real backgrounds);
    cells are filled row by row and the last row may end early. Deterministic.

    >>> image, boxes = face_mosaic([0, 1, 2], columns=3, side=50)
    >>> image.shape, boxes.tolist()
    ((100, 150, 3), [[0.0, 0.0, 50.0, 50.0], [100.0, 0.0, 150.0, 50.0], [50.0, 50.0, 100.0, 100.0]])
    """
    crops, labels = lfw_faces()
    count = int(labels.sum())
    if not faces or min(faces) < 0 or max(faces) >= count:
        raise ValueError(f"faces must be indices of LFW faces (0..{count - 1}), got {list(faces)}")
    if columns < 1 or side < 1:
        raise ValueError(f"columns and side must be >= 1, got {columns} and {side}")
    tiles = iter([_upscaled(crops[i], side) for i in faces])
    backgrounds = iter([_upscaled(crops[i + count], side) for i in faces])
    rows = -(-2 * len(faces) // columns)
    canvas = np.zeros((rows * side, columns * side), np.uint8)
    boxes = []
    # the first 2n cells of a row-major checkerboard hold n face cells and n background cells
    for cell in range(2 * len(faces)):
        r, c = divmod(cell, columns)
        is_face = (r + c) % 2 == 0
        canvas[r * side:(r + 1) * side, c * side:(c + 1) * side] = next(tiles if is_face else backgrounds)
        if is_face:
            boxes.append((c * side, r * side, (c + 1) * side, (r + 1) * side))
    return np.repeat(canvas[:, :, None], 3, axis=2), np.asarray(boxes, dtype=np.float64)


def _upscaled(crop: np.ndarray, side: int) -> np.ndarray:
    grey = Image.fromarray(np.round(crop * 255).astype(np.uint8))
    return np.asarray(grey.resize((side, side), Image.Resampling.BILINEAR))


def astronaut() -> np.ndarray:
    """scikit-image's ``astronaut`` (Eileen Collins, one frontal face) as a 512x512 RGB uint8 array.

    >>> astronaut().shape
    (512, 512, 3)
    """
    with Image.open(_package_file("skimage", "data/astronaut.png")) as image:
        return np.asarray(image.convert("RGB"))
