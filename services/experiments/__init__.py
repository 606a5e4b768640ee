"""The tiny world's evidence: every method, several seeds, two task orders, one results page
(`python -m services.experiments`, cli.py).

- `sweep.py`: the page's methods, the cells (order, seed, method), their configs, and the runs against one generator
- `records.py`: every finished run's metrics beside the page, checked against the settings of the sweep adding to it
- `page.py`: the results page and its charts from the recorded runs
"""
