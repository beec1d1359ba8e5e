"""The simulated hospitals: one internal site and five external ones.

Each site differs the way real archives differ (and the way the paper's five
external hospitals presumably differed): scanner vendor and its DICOM habits,
tube voltage mix, noise and kernel, slice thickness, field of view, the timing
of the arterial acquisition (fixed delay vs bolus tracking, early vs late), and
the patients it sees. The external sites are the domain-shift test, so their
shifts are deliberately larger than the internal site's own spread.

Protocol timings follow common practice (assumptions unless a source is named):
bolus tracking in the abdominal aorta with a +100 HU threshold and a diagnostic
delay of ~6-10 s after the trigger gives an early arterial series, ~15-20 s a
late arterial one (DESIGN.md section 1); fixed-delay protocols scan at ~25 s
(early) or ~35-40 s (late arterial), portal venous at ~65-80 s and delayed at
2-5 min. Because the label comes from each patient's physiology, a "late
arterial" protocol still yields early arterial series in patients with slow
circulation, and vice versa.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from phasejax.cohort.dicom_writer import PixelEncoding

PROTOCOL_PHASES = ("nc", "arterial", "portal", "delayed")


@dataclass(frozen=True, kw_only=True)
class ArterialTiming:
    """One arterial acquisition rule; a site may run several (e.g. liver vs pancreas)."""

    mode: str  # "fixed": delay after injection start | "tracking": delay after the trigger
    delay_s: float
    weight: float = 1.0  # relative share of exams using this rule


@dataclass(frozen=True, kw_only=True)
class Protocol:
    arterial: tuple[ArterialTiming, ...]
    trigger_threshold_hu: float = 100.0  # bolus tracking: rise above baseline in the aorta ROI
    # Scanners sample the tracking ROI every ~1-2 s, so the trigger lands on the first
    # sample above threshold, not exactly when it is crossed (assumption: 1.5 s).
    monitor_interval_s: float = 1.5
    arterial_jitter_s: float = 1.5  # sd: breath-hold instruction and operator timing
    portal_delay_s: float = 70.0  # after injection start
    portal_jitter_s: float = 4.0
    delayed_range_s: tuple[float, float] = (150.0, 240.0)  # uniform, after injection start
    nc_probability: float = 0.3  # share of exams with a non-contrast series first


@dataclass(frozen=True, kw_only=True)
class Vendor:
    """Equipment and DICOM habits of a site (header-level domain shift)."""

    manufacturer: str
    model_name: str
    software_versions: str = ""
    station_name: str = ""
    encoding: PixelEncoding = PixelEncoding()
    kernels: dict[str, str] = field(default_factory=dict)  # phantom kernel -> vendor name
    # SeriesDescription / ProtocolName per protocol phase; {thk} = slice thickness in mm,
    # {kernel} = the vendor kernel name.
    descriptions: dict[str, str] = field(default_factory=dict)
    protocol_name: str = "ABDOMEN MULTIPHASE"
    contrast_agent: str = "Iohexol 350"  # "" = left empty even in contrast series
    contrast_agent_on_nc: bool = False  # wrong field: the study's agent copied onto NC series
    contrast_start_on_nc: bool = False  # wrong field: injection time on a pre-injection series
    write_acquisition_time: bool = True  # False: AcquisitionTime missing
    write_contrast_start: bool = True
    # Phases exported under ONE SeriesInstanceUID (told apart only by AcquisitionNumber).
    shared_uid_phases: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Site:
    name: str  # short code used in ids and tables
    title: str
    internal: bool
    vendor: Vendor
    protocol: Protocol
    kvp_mix: tuple[tuple[float, float], ...] = ((120.0, 1.0),)  # (kVp, weight)
    noise_sd_range: tuple[float, float] = (10.0, 14.0)  # HU at the site's slice thickness
    kernel_mix: tuple[tuple[str, float], ...] = (("standard", 1.0),)
    slice_thickness_mix: tuple[tuple[float, float], ...] = ((5.0, 1.0),)  # (mm, weight)
    pixel_spacing_range: tuple[float, float] = (0.68, 0.82)  # mm at a 512 matrix
    # Share of exams reconstructed on a small FOV that cuts the body outline.
    small_fov_probability: float = 0.0
    # Population shifts: keyword overrides of phasejax.cohort.patient.Population.
    population_shift: dict[str, Any] = field(default_factory=dict)

    def population(self) -> Any:
        from phasejax.cohort.patient import Population

        return dataclasses.replace(Population(), **self.population_shift)


_SIEMENS_KERNELS = {"soft": "Br36", "standard": "Br40", "sharp": "Br64"}

SITES: dict[str, Site] = {}


def _add(site: Site) -> None:
    SITES[site.name] = site


# Internal: a modern dual-source scanner with bolus tracking, two arterial
# protocols in daily use (early for CTA-like and pancreas work, late for liver),
# auto-kV (mostly 100/120 kVp). The paper's internal set has all four phases.
_add(
    Site(
        name="INT",
        title="Internal hospital",
        internal=True,
        vendor=Vendor(
            manufacturer="SIEMENS",
            model_name="SOMATOM Force",
            software_versions="syngo CT VA50A",
            station_name="CTAWP00001",
            encoding=PixelEncoding(rescale_intercept=-1024.0, signed=False, bits_stored=12),
            kernels=_SIEMENS_KERNELS,
            descriptions={
                "nc": "Abdomen nativ {thk:.1f} {kernel}",
                "arterial": "Abdomen arteriell {thk:.1f} {kernel}",
                "portal": "Abdomen pv {thk:.1f} {kernel}",
                "delayed": "Abdomen spät {thk:.1f} {kernel}",
            },
        ),
        protocol=Protocol(
            arterial=(
                ArterialTiming(mode="tracking", delay_s=7.0, weight=0.35),
                ArterialTiming(mode="tracking", delay_s=17.0, weight=0.65),
            ),
            portal_delay_s=70.0,
            delayed_range_s=(150.0, 240.0),
            nc_probability=0.35,
        ),
        kvp_mix=((100.0, 0.4), (120.0, 0.6)),
        noise_sd_range=(9.0, 13.0),
        kernel_mix=(("standard", 0.8), ("soft", 0.2)),
        slice_thickness_mix=((2.0, 0.3), (3.0, 0.3), (5.0, 0.4)),
        pixel_spacing_range=(0.65, 0.82),
        small_fov_probability=0.03,
    )
)

# Site A: GE, fixed 35 s "arterial" (late arterial in most patients, early in slow
# circulations). Misleading descriptions: "(AP)" means abdomen/pelvis coverage here.
_add(
    Site(
        name="EXT-A",
        title="External site A",
        internal=False,
        vendor=Vendor(
            manufacturer="GE MEDICAL SYSTEMS",
            model_name="Revolution CT",
            software_versions="revo_ct_22.1",
            station_name="CTREV1",
            encoding=PixelEncoding(rescale_intercept=-1024.0, signed=True, bits_stored=16),
            kernels={"soft": "SOFT", "standard": "STANDARD", "sharp": "LUNG"},
            descriptions={
                "nc": "WO ABD {thk:.2f}mm",
                "arterial": "LIVER ART {thk:.2f}mm {kernel}",
                "portal": "ABD/PEL (AP) {thk:.2f}mm",
                "delayed": "3 MIN DELAY",
            },
            protocol_name="5.4 LIVER 3 PHASE",
            contrast_agent="OMNIPAQUE 350",
            contrast_agent_on_nc=True,
        ),
        protocol=Protocol(
            arterial=(ArterialTiming(mode="fixed", delay_s=35.0),),
            arterial_jitter_s=2.0,
            portal_delay_s=70.0,
            delayed_range_s=(170.0, 200.0),
            nc_probability=0.5,
        ),
        kvp_mix=((120.0, 0.85), (100.0, 0.15)),
        noise_sd_range=(11.0, 16.0),
        kernel_mix=(("standard", 1.0),),
        slice_thickness_mix=((2.5, 0.5), (5.0, 0.5)),
        pixel_spacing_range=(0.70, 0.90),
        # Fixed-volume injection (100 mL for everyone): heavy patients enhance less.
        population_shift={"fixed_volume_ml": 100.0, "contrast_mgi_ml": (350.0,)},
    )
)

# Site B: Philips, bolus tracking +8 s (mostly early arterial), thin slices,
# an older population with more fatty livers.
_add(
    Site(
        name="EXT-B",
        title="External site B",
        internal=False,
        vendor=Vendor(
            manufacturer="Philips",
            model_name="iCT 256",
            software_versions="4.1.6",
            station_name="HOST-PH01",
            encoding=PixelEncoding(rescale_intercept=-1024.0, signed=False, bits_stored=12),
            kernels={"soft": "A", "standard": "B", "sharp": "C"},
            descriptions={
                "nc": "Plain {thk:.0f}mm",
                "arterial": "Arterial Phase {thk:.0f}mm",
                "portal": "Venous Phase {thk:.0f}mm",
                "delayed": "Late Phase {thk:.0f}mm",  # "late" = delayed here, not late arterial
            },
            protocol_name="Abdomen triphasic",
            contrast_agent="",  # left empty on every series
        ),
        protocol=Protocol(
            arterial=(ArterialTiming(mode="tracking", delay_s=8.0),),
            trigger_threshold_hu=150.0,
            portal_delay_s=65.0,
            delayed_range_s=(150.0, 210.0),
            nc_probability=0.2,
        ),
        kvp_mix=((120.0, 1.0),),
        noise_sd_range=(12.0, 18.0),
        kernel_mix=(("standard", 0.7), ("soft", 0.3)),
        slice_thickness_mix=((1.0, 0.5), (2.0, 0.5)),
        pixel_spacing_range=(0.60, 0.78),
        population_shift={
            "weight_mean_kg": 81.0,
            "fatty_liver_prevalence": 0.35,
            "cardiac_output_sd": 0.3,
            "cyst_prevalence": 0.25,
        },
    )
)

# Site C: Canon, signed pixels with RescaleIntercept 0, fixed 40 s (late arterial),
# low-kVp protocol (80/100 kVp raises iodine contrast), larger patients.
_add(
    Site(
        name="EXT-C",
        title="External site C",
        internal=False,
        vendor=Vendor(
            manufacturer="CANON_MEC",
            model_name="Aquilion ONE",
            software_versions="V10.6",
            station_name="AQONE",
            encoding=PixelEncoding(rescale_intercept=0.0, signed=True, bits_stored=16),
            kernels={"soft": "FC07", "standard": "FC08", "sharp": "FC18"},
            descriptions={
                "nc": "ABD PLAIN",
                "arterial": "ABD 1st",
                "portal": "ABD 2nd",
                "delayed": "ABD 3rd",
            },
            protocol_name="ABD DYNAMIC",
            contrast_agent="IOPAMIRON 370",
            write_acquisition_time=False,
        ),
        protocol=Protocol(
            arterial=(ArterialTiming(mode="fixed", delay_s=40.0),),
            arterial_jitter_s=2.5,
            portal_delay_s=75.0,
            delayed_range_s=(180.0, 300.0),
            nc_probability=0.6,
        ),
        kvp_mix=((100.0, 0.6), (80.0, 0.2), (120.0, 0.2)),
        noise_sd_range=(13.0, 20.0),
        kernel_mix=(("soft", 1.0),),
        slice_thickness_mix=((5.0, 1.0),),
        pixel_spacing_range=(0.75, 0.90),
        small_fov_probability=0.10,
        # A liver referral centre: heavier patients, more hypervascular lesions.
        population_shift={
            "weight_mean_kg": 88.0,
            "weight_sd_kg": 18.0,
            "lesion_prevalence": 0.25,
            "oral_contrast_prevalence": 0.05,
        },
    )
)

# Site D: Siemens (older), bolus tracking +15 s (late arterial with some early),
# sharp kernel, positive oral contrast routine.
_add(
    Site(
        name="EXT-D",
        title="External site D",
        internal=False,
        vendor=Vendor(
            manufacturer="SIEMENS",
            model_name="SOMATOM Definition AS+",
            software_versions="syngo CT VA48A",
            station_name="CT-DAS",
            encoding=PixelEncoding(rescale_intercept=-1024.0, signed=False, bits_stored=12),
            kernels={"soft": "B30f", "standard": "B31f", "sharp": "B45f"},
            descriptions={
                "nc": "NATIV  {thk:.1f}  {kernel}",
                "arterial": "ART  {thk:.1f}  {kernel}",
                "portal": "PV  {thk:.1f}  {kernel}",
                "delayed": "SPAET  {thk:.1f}  {kernel}",
            },
            protocol_name="Leber 3-phasig",
            contrast_agent="Ultravist 370",
            contrast_start_on_nc=True,
        ),
        protocol=Protocol(
            arterial=(ArterialTiming(mode="tracking", delay_s=15.0),),
            portal_delay_s=70.0,
            delayed_range_s=(200.0, 300.0),
            nc_probability=0.3,
        ),
        kvp_mix=((120.0, 0.7), (140.0, 0.3)),
        noise_sd_range=(10.0, 15.0),
        kernel_mix=(("sharp", 0.6), ("standard", 0.4)),
        slice_thickness_mix=((3.0, 1.0),),
        pixel_spacing_range=(0.65, 0.85),
        # Positive oral contrast is routine here: bright bowel in every phase.
        population_shift={"oral_contrast_prevalence": 0.6},
    )
)

# Site E: United Imaging, fixed 25 s (early arterial: a CTA-style first pass),
# arterial and portal phases exported as ONE series told apart by AcquisitionNumber,
# AcquisitionTime missing, younger and thinner patients.
_add(
    Site(
        name="EXT-E",
        title="External site E",
        internal=False,
        vendor=Vendor(
            manufacturer="UIH",
            model_name="uCT 760",
            software_versions="R002",
            station_name="UCT760",
            encoding=PixelEncoding(rescale_intercept=-1024.0, signed=False, bits_stored=16),
            kernels={"soft": "B_SOFT_B", "standard": "B_SOFT_C", "sharp": "B_SHARP_A"},
            descriptions={
                "nc": "Abdomen_NC",
                "arterial": "Abdomen_Enhanced",
                "portal": "Abdomen_Enhanced",
                "delayed": "Abdomen_Delay",
            },
            protocol_name="Abdomen_Enhanced_3P",
            contrast_agent="",
            write_acquisition_time=False,
            shared_uid_phases=("arterial", "portal"),
        ),
        protocol=Protocol(
            arterial=(ArterialTiming(mode="fixed", delay_s=25.0),),
            arterial_jitter_s=2.0,
            portal_delay_s=65.0,
            delayed_range_s=(150.0, 210.0),
            nc_probability=0.4,
        ),
        kvp_mix=((120.0, 0.9), (100.0, 0.1)),
        noise_sd_range=(10.0, 14.0),
        kernel_mix=(("standard", 1.0),),
        slice_thickness_mix=((5.0, 0.6), (1.5, 0.4)),
        pixel_spacing_range=(0.70, 0.86),
        population_shift={
            "weight_mean_kg": 63.0,
            "weight_sd_kg": 11.0,
            "height_mean_cm": 163.0,
            "anaemia_prevalence": 0.2,
            "injection_rate_ml_s": (2.5, 3.5),
        },
    )
)

INTERNAL_SITE = "INT"
EXTERNAL_SITES: tuple[str, ...] = tuple(n for n, s in SITES.items() if not s.internal)
