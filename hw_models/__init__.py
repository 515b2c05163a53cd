"""Hardware models for halo's cost model (import as ``halo.hw_models``).

- ``specs``: device and model specs (packaged TOML data), HF config.json loading, LoRA adapters.
- ``hardware``: parse "2 x H100-SXM + cpu:16" style descriptions into device instances.
- ``roofline``: calibrated prefill / decode / load / KV-transfer / operator-group estimates.
- ``npu_pim`` (NeuPIMs), ``logic_pim`` (Duplex), ``lut_gemv`` (SAIL), ``w4a16`` (MARLIN):
  alternative devices and formats; the PIM and LUT devices are simulated-device estimates.
- ``backends.group_time``: an operator group on any device, dispatched by its spec.
"""
