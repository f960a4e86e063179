"""Custom concepts taught from a few examples: a logistic-regression probe on stored vectors.

The CLIP paper's linear probe, sized for a person ticking a handful of photos: L2-normalised
embeddings, both classes weighted equally however many examples each has, an L2 penalty that
keeps the probe finite (ten points in hundreds of dimensions are always separable, and an
unpenalised fit would grow its weights without end), and leave-one-out accuracy as the honest
check of what was learnt. NumPy only: the fit is a few hundred gradient steps on a dozen rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.errors import NotInLibrary, PixseekError
from indexer.library import storage_errors, write_lock

if TYPE_CHECKING:
    from search.library import Library

__all__ = [
    "MAX_NAME_CHARS",
    "MIN_EXAMPLES",
    "Concept",
    "all_concepts",
    "example_paths",
    "forget_concept",
    "load_concept",
    "teach",
    "teach_concept",
]

# Fewer examples per side than this and the probe mostly learns the examples' accidents.
MIN_EXAMPLES = 5
MAX_NAME_CHARS = 200  # a name is typed, shown and sent in URLs: a short label, not a text
# Strength of the L2 penalty against the (class-balanced) summed loss, like 1/C in
# scikit-learn's LogisticRegression, so the fit trusts the data more as examples are added.
# Weak: it only has to keep the weights finite; a stronger pull towards zero blurs the probe
# into the difference of the class means and ranks worse (benchmarks/README.md, concepts).
REGULARISATION = 0.01
_STEPS = 500
_FORMAT = 1


@dataclass
class Concept:
    """A taught concept: `score` gives each vector the probability that it shows the concept."""

    name: str
    weights: np.ndarray  # (dim,) float32, over L2-normalised vectors
    bias: float
    yes_ids: list[int] = field(default_factory=list)
    no_ids: list[int] = field(default_factory=list)
    loo_accuracy: float | None = None  # leave-one-out accuracy over the examples
    model: str | None = None  # fingerprint of the model whose vectors it was taught on

    @property
    def warnings(self) -> list[str]:
        out = []
        for side, ids in (("yes", self.yes_ids), ("no", self.no_ids)):
            if len(ids) < MIN_EXAMPLES:
                out.append(
                    f"only {len(ids)} {side} example{'s' * (len(ids) != 1)}: "
                    f"give at least {MIN_EXAMPLES} for a concept you can rely on"
                )
        return out

    def as_dict(self) -> dict[str, Any]:
        """What `concept teach/list/show --json`, the API and the page show of it."""
        return {
            "name": self.name,
            "yes": self.yes_ids,
            "no": self.no_ids,
            "held_out_accuracy": self.loo_accuracy,
            "warnings": self.warnings,
        }

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        # float32, like the library's vectors: scoring a whole library must not double its size.
        return _normalised(vectors, np.float32) @ self.weights + np.float32(self.bias)

    def score(self, vectors: np.ndarray) -> np.ndarray:
        """Probability (0..1) per row of `vectors` (n, dim) that it shows the concept; the caller
        scores a large library in chunks, as the engine reads vectors."""
        return _sigmoid(self.logits(vectors))

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _FORMAT,
                "name": self.name,
                "weights": [float(w) for w in self.weights],
                "bias": self.bias,
                "yes": self.yes_ids,
                "no": self.no_ids,
                "loo_accuracy": self.loo_accuracy,
                "model": self.model,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Concept:
        data = json.loads(text)
        if data.get("format") != _FORMAT:
            raise PixseekError(
                f"concept stored in an unknown format ({data.get('format')})",
                "teach it again with `pixseek concept teach`",
            )
        return cls(
            data["name"],
            np.asarray(data["weights"], dtype=np.float32),
            float(data["bias"]),
            [int(i) for i in data["yes"]],
            [int(i) for i in data["no"]],
            data["loo_accuracy"],
            data["model"],
        )


def teach(
    vectors_yes: np.ndarray,
    vectors_no: np.ndarray,
    *,
    name: str = "",
    yes_ids: Sequence[int] = (),
    no_ids: Sequence[int] = (),
    model: str | None = None,
    regularisation: float = REGULARISATION,
) -> Concept:
    """Fit a concept to yes and no example vectors (rows), with its leave-one-out accuracy."""
    yes, no = np.atleast_2d(np.asarray(vectors_yes, np.float64)), np.atleast_2d(np.asarray(vectors_no, np.float64))
    if not yes.size or not no.size:
        raise PixseekError(
            "a concept needs examples of both kinds", "give photos that show it (--yes) and photos that don't (--no)"
        )
    if yes.shape[1] != no.shape[1]:
        raise ValueError("yes and no vectors differ in dimension")
    if set(yes_ids) & set(no_ids):
        both = sorted(set(yes_ids) & set(no_ids))
        raise PixseekError(f"photos given as both yes and no: {', '.join(map(str, both))}", "give each photo once")
    x = _normalised(np.vstack([yes, no]))
    y = np.concatenate([np.ones(len(yes)), np.zeros(len(no))])
    w, b = _fit(x, y, regularisation)
    return Concept(
        name,
        w.astype(np.float32),
        float(b),
        [int(i) for i in yes_ids],
        [int(i) for i in no_ids],
        _leave_one_out(x, y, regularisation),
        model,
    )


def _leave_one_out(x: np.ndarray, y: np.ndarray, regularisation: float) -> float | None:
    if min(y.sum(), len(y) - y.sum()) < 2:
        return None  # leaving out the only example of a side leaves nothing to learn it from
    right = 0
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        w, b = _fit(x[keep], y[keep], regularisation)
        right += int((x[i] @ w + b > 0) == bool(y[i]))
    return right / len(y)


def _fit(x: np.ndarray, y: np.ndarray, regularisation: float) -> tuple[np.ndarray, float]:
    """Minimise sum_i c_i log(1 + exp(-s_i (w.x_i + b))) + regularisation / 2 |w|^2 (s_i = +-1).

    c_i makes each class weigh n / 2 in total. Nesterov-accelerated gradient descent with the
    step set by the loss's Lipschitz bound: the problem is strongly convex, so it converges
    from zero without a line search, deterministically.
    """
    n = len(y)
    c = np.where(y == 1, n / (2 * y.sum()), n / (2 * (n - y.sum())))
    # |x_i| = 1, so the Hessian of the loss is at most (sum c_i / 4) (|x|^2 + 1) = n / 2.
    step = 1.0 / (n / 2 + regularisation)
    theta = np.zeros(x.shape[1] + 1)
    momentum = theta.copy()
    xb = np.hstack([x, np.ones((n, 1))])
    penalty = np.ones_like(theta)
    penalty[-1] = 0.0  # the bias is not penalised
    for t in range(1, _STEPS + 1):
        grad = xb.T @ (c * (_sigmoid(xb @ momentum) - y)) + regularisation * penalty * momentum
        new = momentum - step * grad
        momentum = new + (t - 1) / (t + 2) * (new - theta)
        theta = new
    return theta[:-1], float(theta[-1])


def _normalised(vectors: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    v = np.atleast_2d(np.asarray(vectors, dtype=dtype))
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free form of 1 / (1 + exp(-z))


# In a library ----------------------------------------------------------------------------------
def _photo_id(library: Library, ref: str | int | Path) -> int:
    """An indexed photo by id or by path."""
    if isinstance(ref, int) or str(ref).isdigit():
        return library.get(int(ref)).id
    found = library.find_id(ref)
    if found is None:
        raise NotInLibrary(f"{ref} is not in the library", "give indexed photos, by path or by id")
    return found


def teach_concept(
    library: Library,
    name: str,
    yes: Sequence[str | int | Path],
    no: Sequence[str | int | Path],
) -> Concept:
    """Teach `name` from photos (paths or ids) that show it and photos that don't, and store it.

    Re-teaching adds to the examples it already has (a photo given now on the other side moves
    there); examples whose photos have left the library are dropped.
    """
    name = " ".join(name.split())
    if not name:
        raise PixseekError("empty concept name", "give the concept a name, e.g. pixseek concept teach kitchen ...")
    if len(name) > MAX_NAME_CHARS:
        raise PixseekError(f"a concept name is at most {MAX_NAME_CHARS} characters", "give it a shorter name")
    library.check_not_empty()
    with storage_errors(library.paths.root), write_lock(library.paths):
        yes_ids, no_ids = [_photo_id(library, r) for r in yes], [_photo_id(library, r) for r in no]
        both = sorted(set(yes_ids) & set(no_ids))
        if both:
            raise PixseekError(f"photos given as both yes and no: {', '.join(map(str, both))}", "give each photo once")
        old = _stored(library, name)
        if old is not None:
            yes_ids = [i for i in old.yes_ids if i not in no_ids] + yes_ids
            no_ids = [i for i in old.no_ids if i not in yes_ids] + no_ids
        alive = set(library.catalog.indexed_rows(yes_ids + no_ids))
        yes_ids = [i for i in dict.fromkeys(yes_ids) if i in alive]
        no_ids = [i for i in dict.fromkeys(no_ids) if i in alive]
        if not yes_ids or not no_ids:
            raise PixseekError(
                "a concept needs examples of both kinds",
                "give photos that show it (--yes) and photos that don't (--no)",
            )
        fingerprint = library.settings.model_fingerprint
        concept = teach(
            library.vectors.get(np.array(yes_ids)),
            library.vectors.get(np.array(no_ids)),
            name=name,
            yes_ids=yes_ids,
            no_ids=no_ids,
            model=fingerprint,
        )
        stamp = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
        library.catalog.save_concept(name, fingerprint, concept.to_json(), stamp)
    return concept


def _stored(library: Library, name: str) -> Concept | None:
    found = library.catalog.concept(name)
    return Concept.from_json(found[1]) if found is not None else None


def load_concept(library: Library, name: str) -> Concept:
    """A stored concept, taught on the vectors of the library's current model."""
    concept = _stored(library, name)
    if concept is None:
        known = library.catalog.concept_names()
        raise NotInLibrary(
            f"no concept named '{name}'",
            f"concepts in this library: {', '.join(known)}"
            if known
            else "teach one with `pixseek concept teach NAME --yes PHOTO... --no PHOTO...`",
        )
    if concept.model != library.settings.model_fingerprint:
        raise PixseekError(
            f"concept '{name}' was taught on another model's vectors",
            f"teach it again: pixseek concept teach '{name}' --yes PHOTO... --no PHOTO...",
        )
    return concept


def all_concepts(library: Library) -> list[Concept]:
    """Every stored concept, by name (those of another model too: `Concept.model` says whose)."""
    return [c for c in (_stored(library, n) for n in library.catalog.concept_names()) if c is not None]


def example_paths(library: Library, concept: Concept) -> dict[int, str]:
    """The path of each of the concept's examples: "(gone)" for a photo that has left the library
    since (teaching again drops it)."""
    ids = concept.yes_ids + concept.no_ids
    paths = {r.id: r.path for r in library.catalog.rows_by_id(ids)}
    return {i: paths.get(i, "(gone)") for i in ids}


def forget_concept(library: Library, name: str) -> None:
    with storage_errors(library.paths.root), write_lock(library.paths):
        if not library.catalog.forget_concept(name):
            raise NotInLibrary(f"no concept named '{name}'", "pixseek concept list shows the concepts of this library")
