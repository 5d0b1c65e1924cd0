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
    hematoxylin : tuple of 3 floats
        Haematoxylin's optical density per unit concentration in R, G, B (a unit
        vector; default Ruifrok & Johnston's).
    eosin : tuple of 3 floats
        Eosin's optical density per unit concentration in R, G, B (a unit vector;
        default Ruifrok & Johnston's).
    h_scale : float
        Multiplier on the haematoxylin concentration (stronger or weaker staining);
        default 1.
    e_scale : float
        Multiplier on the eosin concentration; default 1.
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


def visible_change(a: Stain, b: Stain, concentrations: np.ndarray) -> float:
    """Mean absolute RGB difference (0..255) of ``concentrations`` rendered by ``a`` and ``b``.

    The size of a protocol change where a network sees it: in the pixels of the tissue
    (``... x 2`` hematoxylin and eosin concentrations) it renders.
    """
    return float(np.abs(a.render(concentrations) - b.render(concentrations)).mean())


def shifted(stain: Stain, strength: float, z: np.ndarray) -> Stain:
    """Return ``stain`` moved by ``strength`` along ``z``, 11 numbers of typical size 1.

    ``z``: hematoxylin vector (3), eosin vector (3), h_scale, e_scale, background (3).
    """
    vector_sd = 0.25 * strength
    return replace(
        stain,
        hematoxylin=_unit(np.asarray(stain.hematoxylin) + vector_sd * z[0:3]),
        eosin=_unit(np.asarray(stain.eosin) + vector_sd * z[3:6]),
        h_scale=float(stain.h_scale * np.exp(0.35 * strength * z[6])),
        e_scale=float(stain.e_scale * np.exp(0.35 * strength * z[7])),
        background=tuple(  # type: ignore[arg-type]
            float(np.clip(b - abs(25 * strength * zb), 120, 255))
            for b, zb in zip(stain.background, z[8:11], strict=True)
        ),
    )


def perturb(stain: Stain, rng: np.random.Generator, strength: float) -> Stain:
    """Return a randomly shifted copy of ``stain``.

    Parameters
    ----------
    stain : Stain
        The protocol to shift.
    rng : np.random.Generator
        Source of randomness (the caller owns the seed): 11 standard-normal draws.
    strength : float
        0 leaves the stain unchanged; 0.1 is a mild site-to-site difference (as
        between two labs following the same protocol); 1 is a different scanner and
        staining protocol (hue rotated, staining much stronger or weaker). The size
        varies with the draws; :func:`fedcl.data.shifts.typical_shift` gives every
        draw the same visible size.
    """
    if strength < 0:
        raise ValueError(f"stain shift strength must be >= 0, got {strength}")
    if strength == 0:
        return stain
    return shifted(stain, strength, rng.standard_normal(11))
