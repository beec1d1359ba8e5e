"""Host-side data: DICOM/NIfTI ingestion, cache, input pipeline. Never imports jax."""
