import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dashboard_only_charts_metrics_the_code_records():
    dash = json.loads((ROOT / "docs/grafana/ossfleet-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|count|sum)$", "", m) for e in exprs for m in re.findall(r"ray_(ossfleet_[a-z_]+)", e)}
    defined = set(re.findall(r'"(ossfleet_[a-z_]+)"', (ROOT / "platform/ossfleet/metrics.py").read_text()))
    assert used and used <= defined, used - defined
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
