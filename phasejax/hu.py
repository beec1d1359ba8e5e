"""Hounsfield-unit constants, one name per meaning.

Three values of "air" were written as literals across modules, with two meanings mixed
under one name (AIR_HU was -1024 in the DICOM and NIfTI readers and -1000 in the cache
resampler and the augmenter). They are:

- `HU_MIN`, the bottom of the 12-bit CT range (-1024), is a floor: decoded CT numbers
  below it are not tissue but outside-the-scan markers (-2000, -3024), and pixels equal
  to the PixelPaddingValue become it. `HU_MAX` is the top; the int16 cache holds the
  range exactly, and every vendor can store it.
- `AIR_HU` (-1000) is air by definition of the Hounsfield scale: the fill for pixels
  that a resampler or a spatial transform brings in from outside the image.
- `AIR_THRESHOLD_HU` (-500) separates air (and lung) from the body: a CT in HU always
  holds voxels below it, so a series without any has a suspect rescale, and pixels above
  it anywhere in a series are the body.
"""

from __future__ import annotations

HU_MIN, HU_MAX = -1024, 3071
AIR_HU = -1000.0
AIR_THRESHOLD_HU = -500.0
