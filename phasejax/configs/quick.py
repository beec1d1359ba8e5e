"""quick: a narrow ResNet-18 on the medium synthetic cohort, sized for a CPU.

    phasejax train --config quick --out runs/quick_B
    phasejax train --config quick --out runs/quick_A --set model.strategy=one_step

Expected time on a 2-core CPU: about 5-8 minutes per model (ResNet-18 of width
16 at 96 px on a 180 mm square in front of the spine, 5 slices x 3 windows as channels,
3000 steps of 16 series, ~38 epochs of the 1,260 training series of the medium cohort with
its extra threshold arterial series), so that the quick reproduce (cohort + strategy A +
strategy B + full5 + evaluation) fits in under 30 minutes.

The base of the other named configs: `debug` and `paper` are quick with other sizes and
budgets, `smoke` is debug made smaller. A change here changes them all, unless they set
that key themselves.
"""

from phasejax.config import CohortConfig, Config, DataConfig, ModelConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="quick",
        # The medium cohort (315 training patients, 3x the quick cohort's) at the same step
        # count and wall time: two-step 88.8 +- 1.1% internal against 85.6 +- 2.9% with 105
        # patients (3 seeds, ensemble McNemar p = 0.013; external 86.8 vs 85.6%, p = 1.0),
        # early-arterial sensitivity 71 vs 53% (suite quick_defaults, cohort v6,
        # ablations/README.md). Generating it costs about a minute more, once.
        # One extra training arterial series per training exam, scanned when its portal vein
        # is within 30 HU of the 80 HU EAP/LAP threshold (cohort.extra_arterial; validation,
        # test and external series unchanged), with the HU offset below narrowed to +/- 5:
        # the only variant whose every seed reached 95% on both tests, 96.7 +- 1.3% internal
        # / 95.5 +- 0.4% external against 95.4 +- 0.6 / 93.5 +- 2.9 (3 seeds, paired;
        # quick_defaults m_artx1_jit5 against m_multi_3000, session 28, ablations/README.md);
        # EAP-vs-LAP accuracy 95.9 / 92.3% (internal / external) against 92.2 / 84.2%. Not significant
        # (seed ensembles p 0.61): adopted for the narrower spread between seeds. The medium
        # cohort alone holds only 12 EAP series at portal vein 60-80 HU and 12 LAP at 80-100
        # HU for training (docs/cohort/portal_vein_by_split.json), so where network 2 put
        # the boundary was the seed's choice. The cohort costs about 11 GB instead of 9.
        cohort=CohortConfig(preset="medium", seed=0, extra_arterial=1),
        data=DataConfig(
            image_size=96,
            # 5 slices x 3 windows (abdomen, liver, wide) as 15 input channels: on the
            # quick cohort this beat 3 abdomen-window slices clearly (val 0.93 vs 0.71,
            # test 0.80 vs 0.66 after 1500 steps of strategy B); the window lets the
            # net see both parenchymal differences and >240 HU excreted contrast.
            num_slices=5,
            window="multi",
            cache_size=192,
            # A 180 mm square centred 40 mm in front of the spine (phasejax.data.crop), not
            # the whole field: the portal vein and renal pelvis get twice the pixels. Two-step
            # 95.4 +- 0.8% internal / 95.4 +- 1.4% external against 92.2 +- 0.7 / 93.3 +- 2.4
            # (3 seeds each, suite quick_defaults: this baseline against m_multi_3000_scan,
            # cohort v8, session 21; ablations/README.md): every crop seed above every whole-field seed internally
            # (per-seed McNemar p 0.003 / 0.36 / 0.02), though the seed ensembles, which gain
            # more from averaging without the crop, are not apart (95.9 vs 94.1%, p 0.30);
            # real validation series 21 against 17 of 36 (4-phase networks). On the 15 real
            # series the square shows the aorta, IVC, portal vein and the medial kidneys with
            # their hila (the 60-80 mm squares of cohort v5 missed the aorta on some).
            crop_mm=180.0,
            # A global training HU offset of +/- 5 HU, not 15: scanner calibration keeps
            # water within about +/- 5 HU (ACR CT accreditation: 0 +/- 7 HU), and with the
            # extra series near the 80 HU portal-vein threshold a +/- 15 HU offset shows a
            # 70 HU early-arterial portal vein as an 85 HU one under the early label (see the
            # cohort's comment above for the measurement).
            intensity_jitter_hu=5.0,
        ),
        # The standard stem (7x7/2 conv + max pool), though on this input it is half of a
        # step's FLOPs: a 7x7/4 conv (1.7x faster B step) gave 94.8 / 91.4% and a 3x3/2 conv
        # (1.4x) 94.3 / 93.5% against 95.4 / 95.4% (3 seeds; quick_defaults m_stem4 / m_stem3,
        # session 26, ablations/README.md), and the latter's two-seed ensembles 94.6% externally.
        model=ModelConfig(depth="18", width=16, strategy="two_step", stem="standard"),
        train=TrainConfig(
            batch_size=16,
            # 3000 steps, not 1500: two-step 92.3 +- 1.2% internal / 91.2 +- 0.7% external
            # against 88.8 +- 1.1 / 86.8 +- 0.3 (3 seeds each, suite quick_defaults, cohort
            # v6, ablations/README.md) for 2.4x the training time (~480 s per model).
            steps=3000,
            optimizer="adamw",
            # 2e-3, not 8e-3: at 500 steps on cohort v8 8e-3 is 3.1 points ahead externally
            # (suite optim, ensembles p 0.003), at these 3000 steps it ties to the decimal
            # (95.4 / 95.1% against 95.4 / 95.4%, 3 seeds; quick_defaults m_lr8e-3, session 24).
            learning_rate=2e-3,
            warmup_steps=50,
            schedule="cosine",
            weight_decay=1e-4,
            eval_every=250,
            checkpoint_every=250,
            log_every=10,
            eval_batch_size=32,
            # Label smoothing 0.1 (Szegedy et al. 2016): on real scans predict's call named
            # 66 of 72 validation series against 62 without it (6 seeds each, 11/12 in every
            # run, 4 gained and 0 lost), 18/18 example series against 17/18, with cohort
            # accuracy unchanged (86.1/88.2 vs 86.1/88.7%; suite sim2real, cohort v8,
            # ablations/README.md "Label smoothing"). The value was fixed before any run. The
            # two-step 4-phase network at this budget: 91.6/94.0% with it, 92.0/93.0% without
            # (3 seeds, ensemble McNemar p 0.22/0.29; quick_defaults m_multi_3000_ls0).
            label_smoothing=0.1,
        ),
    )
