"""What builds models from history, apart from what serving loads (`fengkong.models`).

Training, daily merchant features, the grade policy and the nightly rescoring,
the fitting of the fused risk and the quality report. These read rule packs
(`fengkong.engine`) and the offline twin; the service never imports this package,
which import-linter contracts in pyproject.toml hold.
"""
