"""loradock's benchmarks: ``python -m bench.<part>``; each writes ``bench/results/<part>.json``.

Figures are ratios measured side by side in one run (10k vs 100k records, one engine vs
another), never absolute times compared across machines.
"""
