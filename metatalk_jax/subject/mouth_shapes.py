"""Mouth shapes of one subject's face model: directions in its expression basis that open the lips,
widen or round the mouth and push the lips forward, each scaled so one unit moves its measured
quantity by one (fractions of the face's height or width), around the subject's neutral
expression.

The viseme teacher builds its mouths from them (pseudo_video/visemes.py: controls per phoneme ->
`MouthShapes.expressions`), and inference closes the drive's lips with them in the audio's
pauses (inference/silence.py): one definition of "lips together" for the corpus the A2E learns
silence from and for the rest it settles on.

Directions are solved by ridge least squares on 3D displacement targets of the 68 landmarks
(lips and jaw move as the control says, the upper face keeps still); everything is linear in the
expression, so an opening is met exactly. Works for any model (the offline 10-component model,
BFM's 64, the procedural test model).
"""

from __future__ import annotations

import numpy as np

CONTROLS = ("opening", "width", "protrusion")

# Landmark groups (iBUG-68).
INNER_GAP_PAIRS = ((61, 67), (62, 66), (63, 65))
LIPS = tuple(range(48, 68))
UPPER_LIP = (49, 50, 51, 52, 53, 61, 62, 63)
LOWER_LIP = (55, 56, 57, 58, 59, 65, 66, 67)
CORNERS = (48, 54, 60, 64)
JAW_DROP = {5: 0.3, 6: 0.45, 7: 0.6, 8: 0.7, 9: 0.6, 10: 0.45, 11: 0.3}


class MouthShapes:
    """Mouth-shape directions of one morphable model around a neutral expression.

    model: a MorphableModel (numpy or jax arrays; mean_shape [V,3], exp_basis [V,3,E],
    landmark_ids [68]) in a y-up, z-towards-the-viewer frame (BFM's). neutral: [E] expression
    the mouth moves from. ridge: Tikhonov weight of the direction solves, relative to the mean
    squared column norm. max_delta_norm: largest norm of (expression - neutral) a frame gets
    (unit-variance coefficients), which caps directions a model can hardly express.
    """

    def __init__(self, model, neutral, *, ridge: float = 1e-3, max_delta_norm: float = 4.0):
        lm = np.asarray(model.landmark_ids)
        self.mean = np.asarray(model.mean_shape, np.float64)[lm]            # [68, 3]
        self.basis = np.asarray(model.exp_basis, np.float64)[lm]            # [68, 3, E]
        e = self.basis.shape[-1]
        self.neutral = np.asarray(neutral, np.float64).reshape(-1)
        if self.neutral.shape != (e,):
            raise ValueError(f"MouthShapes: neutral has {self.neutral.size} values, the model's "
                             f"expression basis has {e}")
        self.face_height = float(self.mean[27, 1] - self.mean[8, 1])
        self.face_width = float(abs(self.mean[16, 0] - self.mean[0, 0]))
        if self.face_height <= 0 or self.face_width <= 0:
            raise ValueError("MouthShapes: the model's landmarks 27 (nose bridge) above 8 "
                             "(chin) and 0, 16 (face sides) are needed")
        self._width_sign = 1.0 if self.mean[54, 0] >= self.mean[48, 0] else -1.0
        self.max_delta_norm = float(max_delta_norm)
        neutral_shape = self.landmarks(self.neutral[None])[0]
        targets = self._displacement_targets(neutral_shape)
        a = self.basis.reshape(68 * 3, e)
        weights = np.repeat(self._landmark_weights(), 3)
        aw = a * weights[:, None]
        lam = ridge * float(np.mean(np.sum(aw * aw, 0))) + 1e-12
        lhs = aw.T @ aw + lam * np.eye(e)
        raw = [np.linalg.solve(lhs, aw.T @ (t.reshape(-1) * weights)) for t in targets]
        # Scale each so one unit moves its own measured quantity by exactly one.
        effects = np.array([self.measure(self.neutral[None] + d[None])[0]
                            - self.measure(self.neutral[None])[0] for d in raw])   # [3, 3]
        scales = [1.0 / effects[j, j] if abs(effects[j, j]) > 1e-9 else 0.0 for j in range(3)]
        self.directions = np.stack([d * s for d, s in zip(raw, scales)])          # [3, E]
        self.effects = np.stack([effects[j] * scales[j] for j in range(3)])       # [3, 3]

    def _landmark_weights(self) -> np.ndarray:
        w = np.full(68, 0.3)           # the rest of the face: keep it still
        w[list(LIPS)] = 1.0
        w[list(JAW_DROP)] = 0.6
        return w

    def _displacement_targets(self, shape: np.ndarray) -> list[np.ndarray]:
        """[68, 3] landmark displacements for a typical amount of each control."""
        h, w = self.face_height, self.face_width
        cx = shape[list(LIPS), 0].mean()
        half = 0.5 * abs(shape[54, 0] - shape[48, 0]) + 1e-9
        opening, width, protrusion = (np.zeros((68, 3)) for _ in range(3))
        gap = 0.1 * h
        opening[list(LOWER_LIP), 1] = -0.8 * gap
        opening[list(UPPER_LIP), 1] = 0.2 * gap
        opening[list(CORNERS), 1] = -0.3 * gap
        for index, share in JAW_DROP.items():
            opening[index, 1] = -share * gap
        stretch = 0.05 * w
        width[list(LIPS), 0] = 0.5 * stretch * (shape[list(LIPS), 0] - cx) / half
        protrusion[list(LIPS), 2] = 0.03 * h
        return [opening, width, protrusion]

    def landmarks(self, expressions: np.ndarray) -> np.ndarray:
        """[T, 68, 3] landmark positions of expressions [T, E] (model units)."""
        return self.mean[None] + np.einsum("lce,te->tlc", self.basis,
                                           np.asarray(expressions, np.float64))

    def measure(self, expressions: np.ndarray) -> np.ndarray:
        """[T, 3] (inner-lip gap / H, mouth width / W, mean lip z / H): absolute values of
        the quantities the controls move."""
        p = self.landmarks(expressions)
        gap = np.mean([p[:, a, 1] - p[:, b, 1] for a, b in INNER_GAP_PAIRS], 0)
        width = self._width_sign * (p[:, 54, 0] - p[:, 48, 0])
        lips_z = p[:, list(LIPS), 2].mean(1)
        return np.stack([gap / self.face_height, width / self.face_width,
                         lips_z / self.face_height], 1)

    def expressions(self, controls: np.ndarray, closed_gap: float = 0.0) -> np.ndarray:
        """controls [T, 3] (CONTROLS) -> float32 expressions [T, E] = neutral + deltas.

        The opening is met exactly (inner-lip gap = closed_gap + opening, fractions of H)
        unless the frame's delta norm exceeds max_delta_norm, when the delta is scaled down.
        """
        c = np.asarray(controls, np.float64).reshape(-1, 3)
        lateral = c[:, 1:2] * self.directions[1] + c[:, 2:3] * self.directions[2]
        gap_now = self.measure(self.neutral[None])[0, 0] + lateral @ self._gap_per_coeff()
        amount = closed_gap + c[:, 0] - gap_now
        delta = lateral + amount[:, None] * self.directions[0]
        norm = np.linalg.norm(delta, axis=1, keepdims=True)
        delta *= np.minimum(1.0, self.max_delta_norm / np.maximum(norm, 1e-12))
        return (self.neutral[None] + delta).astype(np.float32)

    def _gap_per_coeff(self) -> np.ndarray:
        """[E] change of the gap fraction per unit of each expression coefficient."""
        rows = [self.basis[a, 1] - self.basis[b, 1] for a, b in INNER_GAP_PAIRS]
        return np.mean(rows, 0) / self.face_height

    def closed(self, closed_gap: float = 0.0) -> np.ndarray:
        """float32 [E]: the neutral expression with the lips together (inner-lip gap
        closed_gap, no width or protrusion change)."""
        return self.expressions(np.zeros((1, 3)), closed_gap)[0]


def neutral_expression(expressions: np.ndarray) -> np.ndarray:
    """float32 [E]: the per-coefficient median of a subject's fitted expressions [T, E] (robust
    to the frames with the mouth wide open or the fit off)."""
    expressions = np.asarray(expressions, np.float64)
    if expressions.ndim != 2 or not len(expressions):
        raise ValueError(f"neutral_expression: need [T, E] expressions, got {expressions.shape}")
    return np.median(expressions, 0).astype(np.float32)
