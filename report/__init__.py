"""Self-contained HTML reports of fedkeys runs (issue 8).

    report.runs   read a run directory (demo, train, devices, evaluate) into plain Python data
    report.plots  draw that data as PNG bytes with matplotlib's Agg backend
    report.html   assemble one HTML file with the plots inlined as base64: `write_report(run_dir)`

The report reads only what the stages already wrote (config.json, summary.json, metrics.csv),
so it can be made for any finished or interrupted run, offline, without TensorFlow.
"""
