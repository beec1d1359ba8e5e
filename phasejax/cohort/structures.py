"""Label ids of the synthetic phantom and their TotalSegmentator class names.

The label map separates walls from contents and cortex from marrow because they
enhance differently (bowel wall enhances, its fluid does not; oral contrast makes
the fluid bright). `totalseg` names the TotalSegmentator (v2, task "total" or
"tissue_types") class that covers the structure, so validation can compare with
organ-median tools such as `totalseg_get_phase`; None where TotalSegmentator has
no such class.

Values are fixed: they are written into the organ label volumes of generated
cohorts, so a renumbering would silently break stored cohorts. Append only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Label(IntEnum):
    BACKGROUND = 0  # air outside the body (and the table)
    SKIN = 1
    FAT_SUBCUT = 2
    FAT_VISCERAL = 3  # intra-abdominal, retroperitoneal, renal sinus and mediastinal fat
    MUSCLE = 4  # abdominal wall, psoas, paraspinal, diaphragmatic crura
    VERTEBRA = 5  # cancellous bone of the vertebral bodies and posterior elements
    BONE_CORTICAL = 6  # cortical shell of the vertebrae
    RIB = 7  # ribs (thin: cortex and marrow averaged)
    DISC = 8  # intervertebral disc
    SPINAL_CANAL = 9  # thecal sac and cord
    AORTA = 10
    CELIAC_SMA = 11  # celiac trunk, SMA, common hepatic and splenic arteries
    RENAL_ARTERY = 12
    IVC = 13
    RENAL_VEIN = 14
    PORTAL_VEIN = 15  # main portal vein and its intrahepatic branches
    SPLENIC_VEIN = 16
    SMV = 17
    HEPATIC_VEIN = 18
    LIVER = 19
    SPLEEN = 20
    PANCREAS = 21
    GALLBLADDER = 22  # bile-filled lumen
    KIDNEY_CORTEX = 23
    KIDNEY_MEDULLA = 24  # pyramids
    KIDNEY_COLLECTING = 25  # calyces, pelvis, ureter (urine; bright once excretion starts)
    STOMACH = 26  # wall
    DUODENUM = 27  # wall
    SMALL_BOWEL = 28  # wall (jejunum, ileum)
    COLON = 29  # wall
    BOWEL_CONTENT = 30  # fluid in stomach and small bowel; positive oral contrast lives here
    FECES = 31  # colon content: mottled solid stool
    BOWEL_AIR = 32
    LUNG = 33
    HEART = 34  # blood pool of the heart at the top of the scan (ventricles, atria)
    LIVER_LESION = 35  # hypervascular lesion (e.g. HCC / FNH-like): arterial supply, washout
    CYST = 36  # simple hepatic or renal cyst: water, non-enhancing


@dataclass(frozen=True, kw_only=True)
class StructureInfo:
    name: str
    totalseg: str | None


STRUCTURES: dict[Label, StructureInfo] = {
    Label.BACKGROUND: StructureInfo(name="background", totalseg=None),
    Label.SKIN: StructureInfo(name="skin", totalseg=None),
    Label.FAT_SUBCUT: StructureInfo(name="subcutaneous fat", totalseg="subcutaneous_fat"),
    Label.FAT_VISCERAL: StructureInfo(name="visceral fat", totalseg="torso_fat"),
    Label.MUSCLE: StructureInfo(name="muscle", totalseg="skeletal_muscle"),
    Label.VERTEBRA: StructureInfo(name="vertebra (cancellous)", totalseg="vertebrae"),
    Label.BONE_CORTICAL: StructureInfo(name="vertebra (cortical)", totalseg="vertebrae"),
    Label.RIB: StructureInfo(name="rib", totalseg="ribs"),
    Label.DISC: StructureInfo(name="intervertebral disc", totalseg=None),
    Label.SPINAL_CANAL: StructureInfo(name="spinal canal", totalseg="spinal_cord"),
    Label.AORTA: StructureInfo(name="aorta", totalseg="aorta"),
    Label.CELIAC_SMA: StructureInfo(name="celiac trunk / SMA", totalseg=None),
    Label.RENAL_ARTERY: StructureInfo(name="renal artery", totalseg=None),
    Label.IVC: StructureInfo(name="inferior vena cava", totalseg="inferior_vena_cava"),
    Label.RENAL_VEIN: StructureInfo(name="renal vein", totalseg=None),
    Label.PORTAL_VEIN: StructureInfo(name="portal vein", totalseg="portal_vein_and_splenic_vein"),
    Label.SPLENIC_VEIN: StructureInfo(name="splenic vein", totalseg="portal_vein_and_splenic_vein"),
    Label.SMV: StructureInfo(name="superior mesenteric vein", totalseg=None),
    Label.HEPATIC_VEIN: StructureInfo(name="hepatic veins", totalseg=None),
    Label.LIVER: StructureInfo(name="liver", totalseg="liver"),
    Label.SPLEEN: StructureInfo(name="spleen", totalseg="spleen"),
    Label.PANCREAS: StructureInfo(name="pancreas", totalseg="pancreas"),
    Label.GALLBLADDER: StructureInfo(name="gallbladder", totalseg="gallbladder"),
    Label.KIDNEY_CORTEX: StructureInfo(name="renal cortex", totalseg="kidney"),
    Label.KIDNEY_MEDULLA: StructureInfo(name="renal medulla", totalseg="kidney"),
    Label.KIDNEY_COLLECTING: StructureInfo(name="renal collecting system", totalseg=None),
    Label.STOMACH: StructureInfo(name="stomach wall", totalseg="stomach"),
    Label.DUODENUM: StructureInfo(name="duodenum wall", totalseg="duodenum"),
    Label.SMALL_BOWEL: StructureInfo(name="small bowel wall", totalseg="small_bowel"),
    Label.COLON: StructureInfo(name="colon wall", totalseg="colon"),
    Label.BOWEL_CONTENT: StructureInfo(name="bowel fluid", totalseg=None),
    Label.FECES: StructureInfo(name="feces", totalseg="colon"),
    Label.BOWEL_AIR: StructureInfo(name="bowel gas", totalseg=None),
    Label.LUNG: StructureInfo(name="lung", totalseg="lung"),
    Label.HEART: StructureInfo(name="heart", totalseg="heart"),
    Label.LIVER_LESION: StructureInfo(name="hypervascular liver lesion", totalseg=None),
    Label.CYST: StructureInfo(name="simple cyst", totalseg=None),
}

NUM_LABELS = max(int(lab) for lab in Label) + 1

# Structures whose ROI medians the validation reports against DESIGN.md section 2.
REFERENCE_STRUCTURES: tuple[Label, ...] = (
    Label.AORTA,
    Label.PORTAL_VEIN,
    Label.SPLENIC_VEIN,
    Label.HEPATIC_VEIN,
    Label.IVC,
    Label.LIVER,
    Label.SPLEEN,
    Label.PANCREAS,
    Label.KIDNEY_CORTEX,
    Label.KIDNEY_MEDULLA,
    Label.KIDNEY_COLLECTING,
)
