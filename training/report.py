"""The result files every training step writes: NAME.json (the results) and NAME.md (their table),
the table also printed. Standard library only (serve_speedup.py needs no torch)."""
import json
import os


def write_report(out_dir, name, results, table):
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
        f.write(table)
