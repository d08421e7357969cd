"""Task-quality evaluation of real models whose weights arrive as numpy arrays.

Kept free of imports so that ``import bitladder.eval`` costs nothing; the submodules
carry the weight:

* :mod:`bitladder.eval.metrics` -- pure-numpy error and agreement measures
  (SQNR, cosine, top-k agreement, KL divergence).
* :mod:`bitladder.eval.models` -- MiniLM sentence embedder and MobileNetV2 classifier
  built from a ``Mapping[str, np.ndarray]`` of weights (needs the ``eval`` extra:
  torch and transformers).
* :mod:`bitladder.eval.data` -- small real inputs shipped inside installed wheels
  (Lee corpus sentences from gensim, photos from scikit-learn and scikit-image).

Nothing here downloads weights or data: every file comes from an installed package.
"""
