"""The SKU benchmark's pieces (config, data, training, evaluation, analysis, report).

Run it with ``python benchmarks/sku.py``; it uses only embedcam's public API and the paper's
reference model in ``examples/paper_sku``.
"""
