"""Beer-Lambert rendering of hematoxylin and eosin (H&E) stain concentrations.

A bright-field slide transmits ``I = I0 * 10 ** (-OD)`` per RGB channel, where the
optical density ``OD`` is the sum over stains of ``concentration * stain_vector``
(Ruifrok & Johnston, "Quantification of histochemical staining by color
deconvolution", Anal. Quant. Cytol. Histol. 2001). A hospital's "stain" is therefore
a real parameter set here: the two stain vectors, a concentration scale per stain
(staining time, dye batch) and the background intensity ``I0`` (lamp, scanner).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


def _unit(vector: np.ndarray) -> tuple[float, float, float]:
    vector = np.clip(vector, 1e-3, None)  # an OD vector is non-negative
    vector = vector / np.linalg.norm(vector)
    return (float(vector[0]), float(vector[1]), float(vector[2]))


# Ruifrok & Johnston's optical-density vectors for H and E (RGB order), unit length.
HEMATOXYLIN_OD = _unit(np.array([0.650, 0.704, 0.286]))
EOSIN_OD = _unit(np.array([0.072, 0.990, 0.105]))


@dataclass(frozen=True)
class Stain:
    """The optical parameters of one H&E staining + scanning protocol.

    Parameters
    ----------
    hematoxylin, eosin : tuple of 3 floats
        Optical density per unit concentration in R, G, B (unit vectors).
    h_scale, e_scale : float
        Multipliers on the concentrations (stronger or weaker staining).
    background : tuple of 3 floats
        Incident light ``I0`` per channel in 0..255 (the colour of empty glass).
    """

    hematoxylin: tuple[float, float, float] = HEMATOXYLIN_OD
    eosin: tuple[float, float, float] = EOSIN_OD
    h_scale: float = 1.0
    e_scale: float = 1.0
    background: tuple[float, float, float] = (244.0, 242.0, 246.0)

    def matrix(self) -> np.ndarray:
        """Return the 2 x 3 stain matrix (rows H, E) scaled by the concentrations."""
        return np.array(
            [
                np.asarray(self.hematoxylin) * self.h_scale,
                np.asarray(self.eosin) * self.e_scale,
            ],
            dtype=np.float32,
        )

    def render(self, concentrations: np.ndarray) -> np.ndarray:
        """Turn stain concentrations into an RGB image.

        Parameters
        ----------
        concentrations : np.ndarray
            ``... x 2`` float array, hematoxylin and eosin concentration per pixel.

        Returns
        -------
        np.ndarray
            ``... x 3`` float32 intensities in 0..255 (not yet quantised).
        """
        optical_density = concentrations @ self.matrix()
        return np.asarray(self.background, dtype=np.float32) * np.power(
            np.float32(10.0), -optical_density
        )


def perturb(stain: Stain, rng: np.random.Generator, strength: float) -> Stain:
    """Return a randomly shifted copy of ``stain``.

    Parameters
    ----------
    stain : Stain
        The protocol to shift.
    rng : np.random.Generator
        Source of randomness (the caller owns the seed).
    strength : float
        0 leaves the stain unchanged; 0.1 is a mild site-to-site difference (as
        between two labs following the same protocol); 1 is a different scanner and
        staining protocol (hue rotated, staining much stronger or weaker).
    """
    if strength < 0:
        raise ValueError(f"stain shift strength must be >= 0, got {strength}")
    if strength == 0:
        return stain
    vector_sd = 0.25 * strength
    return replace(
        stain,
        hematoxylin=_unit(np.asarray(stain.hematoxylin) + rng.normal(0, vector_sd, 3)),
        eosin=_unit(np.asarray(stain.eosin) + rng.normal(0, vector_sd, 3)),
        h_scale=float(stain.h_scale * np.exp(rng.normal(0, 0.35 * strength))),
        e_scale=float(stain.e_scale * np.exp(rng.normal(0, 0.35 * strength))),
        background=tuple(  # type: ignore[arg-type]
            float(np.clip(b - abs(rng.normal(0, 25 * strength)), 120, 255))
            for b in stain.background
        ),
    )
