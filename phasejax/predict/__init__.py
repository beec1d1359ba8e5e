"""Classify real studies: folders of DICOM / NIfTI -> the contrast phase of every series.

    run = phasejax.train.restore.load_run("runs/paper_B")
    report = phasejax.predict.driver.predict_paths(["/archive/study1"], run.cfg, run.model)
    report.rows        # one dict per series (and per skipped file), columns `report_columns`

What happens to each input, in order:

1. Discovery exactly as `phasejax inspect` (phasejax.data.discover): every file's
   header is read once; DICOM images are grouped by SeriesInstanceUID and split into
   acquisitions when one UID holds several phases; files that are not usable CT
   images (scouts, SEG/SR/RT objects, truncated or non-DICOM files...) become
   "skipped" rows with the loader's reason.
2. Each series is decoded to HU and brought to the input the model was trained on,
   with the training code itself: `resample_to_cache` onto the run's cache grid,
   the liver-to-kidney slab of `phasejax prepare` (`liver_kidney_slab`) and the one
   `preprocess` function of the input pipeline (slice selection, resize, window),
   all read from the run's config. This runs in worker processes (no JAX there).
3. Series are batched through the jit-compiled eval step by `phasejax.infer.Classifier`
   (BatchNorm in inference mode). The last batch is padded to the full batch size so
   every batch has one shape: one compilation per process.
4. One row per series: the call and its probability of every phase of the label set,
   the image network's posterior (for a two-step model p(EAP) = p1(AP) * p2(EAP | AP), as
   trained) times the likelihood of the aorta's and kidneys' HU read in step 2 without
   learned features (`phasejax.data.aorta`, `phasejax.data.kidney`,
   `phasejax.cohort.anatomy_reference`); the network's own phase and probabilities, a
   confidence flag, the header's own phase hint with its evidence, whether it agrees, and
   the loader's problems. A series that cannot be decoded or prepared is a "failed" row
   with the reason; it never stops the others.

The modules, one step each (`phasejax.qc` checks a finished report):

    inputs      the model's input grid (`model_grid`) and one series made ready for the
                model (`PreparedSeries`, `prepare_series`; the worker-side step)
    confidence  how the confidence flag is decided: `input_checks`, `confidence_reasons`
    schema      the report's columns (documented there), statuses and row builders
    driver      `predict_paths`: discovery -> workers -> classifier -> rows (`PredictReport`)
    report_io   reports on disk: `ReportWriter` (streamed), `write_report`, `read_report`
    text        the end-of-run summary and the readable table

No patient names or birth dates are read or written: identifiers are PatientID and UIDs.

No module of this package imports JAX at module level, so worker processes that only
decode and preprocess stay light; the model-side functions import it when called.
"""
